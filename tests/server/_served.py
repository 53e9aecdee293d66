"""The app that the real-server tests serve with uvicorn, plus a `/_test` control API.

Run as `uvicorn --app-dir tests/server _served:api` (imported standalone, so it only uses absolute
imports). Its model, `ControlledModel`, plays turns the test scripts over HTTP:

- `POST /_test/script {"turns": [["Hel", "lo", "@gate:g1", " world"]]}` queues turns; a step
  `"@gate:NAME"` blocks the stream until `POST /_test/gates/NAME/release`;
- `GET /_test/gates/NAME/reached` answers once a stream has reached the gate (a sync point for the
  test, no sleeping);
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

from tether import END, START, App, InMemoryCheckpointer, StateGraph
from tether.messages import Message
from tether.models import Finish, Model, ModelDelta, ModelSettings, TextDelta, ToolSpec
from tether.server import create_app
from tether.testing import Gate


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
        for step in turn:
            if step.startswith("@gate:"):
                await self.gate(step.removeprefix("@gate:")).wait()
                continue
            await anyio.lowlevel.checkpoint()
            yield TextDelta(step)
        yield Finish("stop")


def chat_graph(model: Model, checkpointer: Any) -> App:
    async def answer(state: dict[str, Any]) -> Any:
        async with model.stream(state["messages"]) as deltas:
            async for delta in deltas:
                if isinstance(delta, TextDelta):
                    yield delta.text

    graph = StateGraph()
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer, name="chat")


def _checkpointer() -> Any:
    path = os.environ.get("TETHER_TEST_DB")
    if path:
        from tether.storage.sqlite import SqliteCheckpointer

        return SqliteCheckpointer(path)
    return InMemoryCheckpointer()


model = ControlledModel()
keys = os.environ.get("TETHER_TEST_API_KEYS")
api = create_app(chat_graph(model, _checkpointer()), api_keys=keys.split(",") if keys else None)
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


@control.get("/calls")
async def calls() -> list[list[dict[str, Any]]]:
    return [
        [{"role": m.role, "content": m.content, "status": m.status} for m in call]
        for call in model.calls
    ]


api.include_router(control)
