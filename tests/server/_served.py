"""The app that the real-server tests serve with uvicorn, plus a `/_test` control API.

Run as `uvicorn --app-dir tests/server _served:api` (imported standalone, so it only uses absolute
imports). Its model, `ControlledModel`, plays turns the test scripts over HTTP:

- `POST /_test/script {"turns": [["Hel", "lo", "@gate:g1", " world"]]}` queues turns; a step
  `"@gate:NAME"` blocks the stream until `POST /_test/gates/NAME/release`;
- `GET /_test/gates/NAME/reached` answers once a stream has reached the gate (a sync point for the
  test, no sleeping);
- a step `"@tool:NAME:{json args}"` streams a tool call; the agent then runs the tool `lookup`,
  which blocks on the gate `tool` until released;
- `GET /_test/calls` lists the messages each model call received;
- without a scripted turn the model echoes: "You said: <last user text>. Before that I said:
  <last assistant text> (<its status>)." word by word, so a test can check what it saw.

`TETHER_TEST_API_KEYS` (comma-separated) turns auth on; `TETHER_TEST_DB` picks a SQLite file.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from fastapi import APIRouter

from tether import Agent, App, InMemoryCheckpointer
from tether.messages import Message
from tether.models import (
    Finish,
    Model,
    ModelDelta,
    ModelSettings,
    TextDelta,
    ToolCallChunk,
    ToolSpec,
)
from tether.server import create_app
from tether.testing import Gate
from tether.tools import tool


class ControlledModel(Model):
    """Streams scripted turns (or an echo), with named gates the test opens over HTTP."""

    name = "controlled"

    def __init__(self) -> None:
        self.turns: list[list[str]] = []
        self.gates: dict[str, Gate] = {}
        self.calls: list[list[Message]] = []

    def gate(self, name: str) -> Gate:
        return self.gates.setdefault(name, Gate(name))

    def _echo(self, messages: Sequence[Message]) -> list[str]:
        user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        prior = next((m for m in reversed(messages) if m.role == "assistant"), None)
        text = f"You said: {user}."
        if prior is not None:
            text += f" Before that I said: {prior.content} ({prior.status})."
        words = text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    @asynccontextmanager
    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[AsyncIterator[ModelDelta]]:
        self.calls.append(list(messages))
        turn = self.turns.pop(0) if self.turns else self._echo(messages)
        yield self._play(turn)

    async def _play(self, turn: list[str]) -> AsyncIterator[ModelDelta]:
        calls = 0
        for step in turn:
            await anyio.lowlevel.checkpoint()
            if step.startswith("@gate:"):
                await self.gate(step.removeprefix("@gate:")).wait()
            elif step.startswith("@tool:"):
                name, _, args = step.removeprefix("@tool:").partition(":")
                yield ToolCallChunk(
                    index=calls, id=f"call_{len(self.calls)}_{calls}", name=name, arguments=""
                )
                yield ToolCallChunk(index=calls, id=None, name=None, arguments=args or "{}")
                calls += 1
            else:
                yield TextDelta(step)
        yield Finish("tool_calls" if calls else "stop")


def chat_agent(model: Model, checkpointer: Any) -> App:
    """An agent with two tools: `lookup`, that blocks on the model's gate `tool`, and `send`,
    that requires approval."""

    @tool
    async def lookup(query: str) -> str:
        """Look something up."""
        await model.gate("tool").wait()  # type: ignore[attr-defined]
        return f"found: {query}"

    @tool(requires_approval=True)
    def send(to: str) -> str:
        """Send a message (the run pauses until a person approves)."""
        return f"sent to {to}"

    return Agent(model, tools=[lookup, send], name="chat", checkpointer=checkpointer)


def _checkpointer() -> Any:
    path = os.environ.get("TETHER_TEST_DB")
    if path:
        from tether.storage.sqlite import SqliteCheckpointer

        return SqliteCheckpointer(path)
    return InMemoryCheckpointer()


model = ControlledModel()
keys = os.environ.get("TETHER_TEST_API_KEYS")
api = create_app(chat_agent(model, _checkpointer()), api_keys=keys.split(",") if keys else None)
control = APIRouter(prefix="/_test", include_in_schema=False)


@control.post("/script")
async def script(body: dict[str, Any]) -> dict[str, int]:
    model.turns.extend(body["turns"])
    return {"queued": len(model.turns)}


@control.get("/gates/{name}/reached")
async def reached(name: str) -> dict[str, bool]:
    with anyio.fail_after(30):
        await model.gate(name).reached()
    return {"reached": True}


@control.post("/gates/{name}/release")
async def release(name: str) -> dict[str, bool]:
    model.gate(name).release()
    return {"released": True}


@control.get("/boom")
async def boom() -> None:
    raise RuntimeError("a deliberate bug, for the 500 tests")


@control.get("/calls")
async def calls() -> list[list[dict[str, Any]]]:
    return [
        [{"role": m.role, "content": m.content, "status": m.status} for m in call]
        for call in model.calls
    ]


api.include_router(control)
