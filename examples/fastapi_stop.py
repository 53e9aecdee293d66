"""Seed 001, ported: a Stop button for an agent behind your own FastAPI app.

The forum thread offered two ways to stop a deep agent from a UI, each with a catch:
- "stop after the current step": drive the graph step by step with breakpoints and stop flags —
  but a long LLM call or tool runs to its end after Stop;
- "hard stop": `task.cancel()` — but the in-flight work is lost and the thread may not continue.

With tether, one endpoint does both, and the conversation always continues afterwards:

    POST /stop/{thread_id}?mode=after_step   finish the current step (model turn or tool batch),
                                             then stop; tool calls not yet run never run
    POST /stop/{thread_id}?mode=now          stop at once, inside the model stream or a tool; the
                                             partial answer is kept (status "stopped") and unfinished
                                             tool calls get "cancelled" results

Either way the next `POST /run/{thread_id}` continues the same thread and the model sees what
happened. Run it:

    pip install 'tether[server,local]'
    python examples/fastapi_stop.py            # SmolLM2 in-process; TETHER_MODEL=openai:gpt-4o-mini
                                               # (with OPENAI_API_KEY) to see the tools used
    curl -X POST localhost:8000/run/t1 -H 'content-type: application/json' \\
         -d '{"message": "Research stop buttons and write a report"}'
    curl -X POST 'localhost:8000/stop/t1?mode=now'
    curl localhost:8000/messages/t1

It also mounts tether's own server (REST, SSE, WebSocket, OpenAI-compatible, chat UI) at
`/tether/`, for when you want all of it.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import anyio
from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from tether import Agent, Message, ThreadBusyError, tool
from tether.events import event_to_json
from tether.server import create_app as create_tether_app


@tool
async def search_docs(query: str) -> str:
    """Search the documentation for `query`."""
    await anyio.sleep(3)  # a slow tool: Stop with mode=now cancels it mid-way
    return f"3 pages mention {query!r}."


@tool
async def write_report(topic: str) -> str:
    """Write a short report about `topic`."""
    await anyio.sleep(3)
    return f"Report on {topic}: stopping should keep what was done, and let the chat go on."


class RunRequest(BaseModel):
    message: str


def create_app(agent: Agent) -> FastAPI:
    """Your FastAPI app, with tether doing the running and stopping."""
    app = FastAPI(title="Seed 001: a Stop button for an agent")

    @app.post("/run/{thread_id}")
    async def start_run(thread_id: str, req: RunRequest) -> dict[str, Any]:
        """Start the agent in the background (it outlives this request)."""
        try:
            handle = await agent.astart(
                {"messages": [Message.user(req.message)]}, thread_id=thread_id
            )
        except ThreadBusyError as exc:  # one run per thread at a time
            raise HTTPException(409, str(exc)) from None
        return {"status": "started", "run_id": handle.run_id}

    @app.post("/stop/{thread_id}")
    async def stop(
        thread_id: str, mode: Literal["after_step", "now"] = "now", wait: bool = True
    ) -> dict[str, Any]:
        """The Stop button. `wait=true` answers once the run ended and its state is saved."""
        stopped = await agent.astop(thread_id=thread_id, mode=mode, reason="Stop button", wait=wait)
        return {"status": "stopped" if stopped else "no-active-run", "mode": mode}

    @app.get("/messages/{thread_id}")
    async def messages(thread_id: str) -> list[dict[str, Any]]:
        """The conversation: stopped answers and cancelled tool results included."""
        return [
            {"role": m.role, "content": m.content, "status": m.status}
            for m in await agent.aget_messages(thread_id)
        ]

    @app.get("/runs/{run_id}")
    async def run(run_id: str) -> dict[str, Any]:
        """How a run ended: status, and who stopped it, when, and how."""
        record = await agent.aget_run(run_id)
        if record is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return record.model_dump(mode="json")

    @app.websocket("/ws/{thread_id}")
    async def chat_ws(ws: WebSocket, thread_id: str) -> None:
        """The seed's WebSocket chat: send {"message": ...}, receive every event of the run.

        A new message while an answer streams interrupts it (its partial answer is kept).
        Closing the socket stops the run (`requested_by="disconnect"`).
        """
        await ws.accept()
        try:
            while True:
                data = await ws.receive_json()
                stream = agent.astream(
                    {"messages": [Message.user(str(data["message"]))]},
                    thread_id=thread_id,
                    multitask_strategy="interrupt",
                )
                async with stream:
                    async for event in stream:
                        await ws.send_json(event_to_json(event))
        except WebSocketDisconnect:
            pass

    # Everything else tether offers, under /tether/ (the chat UI is at /tether/).
    app.mount("/tether", create_tether_app(agent))
    return app


agent = Agent(
    os.environ.get("TETHER_MODEL", "local"),
    tools=[search_docs, write_report],
    instructions="You are a helpful research assistant. Use the tools when they help.",
    name="assistant",
)
app = create_app(agent)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000, timeout_graceful_shutdown=3)
