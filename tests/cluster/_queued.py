"""The app of the run-queue tests: `tether worker tests/cluster/_queued.py:agent` executes it, and
`uvicorn --app-dir tests/cluster _queued:api` serves it with background runs queued.

Built WITHOUT a checkpointer or registry, so Postgres, Redis and the run queue come from
`TETHER_DATABASE_URL` / `TETHER_REDIS_URL` (`TETHER_REDIS_PREFIX`, `TETHER_LEASE`), as
`tether worker --database-url --redis-url` sets them. The model answers by the user's text, so a
test drives a run in another process without a control API: "block" streams "Hel", "lo" and then
waits until the run is stopped; anything else is answered at once with "ok: <text>".
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tether import Agent
from tether.messages import Message
from tether.models import Finish, Model, ModelDelta, ModelSettings, TextDelta, ToolSpec
from tether.server import create_app


class ByInputModel(Model):
    """Answers by the last user message: "block" blocks after "Hello", the rest is echoed."""

    name = "by-input"

    @asynccontextmanager
    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[AsyncIterator[ModelDelta]]:
        text = next((m.content for m in reversed(messages) if m.role == "user"), "")
        yield self._play(text)

    async def _play(self, text: str) -> AsyncIterator[ModelDelta]:
        if text == "block":
            yield TextDelta("Hel")
            yield TextDelta("lo")
            await anyio.sleep_forever()
        yield TextDelta(f"ok: {text}")
        yield Finish("stop")


agent = Agent(ByInputModel(), name="chat")
api = create_app(agent, queue_background_runs=True)
