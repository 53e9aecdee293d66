"""The tether side of the Vercel AI SDK example: any agent, served for `useChat` at /ai-sdk/chat.

    uvicorn examples.ai_sdk_chat.server:api --port 8000
    cd examples/ai_sdk_chat/web && npm install && npm run dev     # then open http://localhost:5173

The page (web/src/App.jsx) is a plain `useChat` front end: its Stop button calls `stop()`, which
aborts the fetch; tether stops the run, keeps the partial answer as `stopped`, and the next message
continues the same thread (the chat id is the thread id). See docs/protocols.md.

`TETHER_MODEL` picks the model: `local` (SmolLM2 in-process, the default) or `openai:<model>`.
"""

from __future__ import annotations

import os

from tether import Agent, tool
from tether.server import create_app


@tool
async def current_time(city: str) -> str:
    """The local time in a city.

    Args:
        city: The city, e.g. "Paris".
    """
    import datetime

    return f"It is {datetime.datetime.now():%H:%M} in {city}."


agent = Agent(
    os.environ.get("TETHER_MODEL", "local"),
    tools=[current_time],
    name="assistant",
    instructions="You are a helpful assistant. Answer briefly.",
)
api = create_app(agent, cors_origins=["http://localhost:5173", "http://127.0.0.1:5173"])
