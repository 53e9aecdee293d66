"""Deterministic test doubles: `ScriptedModel`, `Gate`, and `stream_forever`.

`ScriptedModel` plays back scripted turns, one per model call. A turn is a list of steps:
- a `str` is streamed as one text delta;
- a `ToolCallStep` is streamed as tool-call chunks (the id and name first, then the arguments in
  two fragments, to exercise reassembly);
- a `Gate` blocks the stream until the test releases it;
- a `ModelDelta` (`Usage`, `Finish`, ...) is streamed as is;
- `stream_forever()` streams text deltas endlessly, for stop tests.

Each delta is preceded by a checkpoint, so a stream can be cancelled between any two deltas.

`Gate` works across threads and event loops: tether's sync API runs runs on a background loop
while the test waits in the main thread. Its two flags are `tether._loop.Signal`s, the same
thread-safe flag a run's handle waits on: waiters are woken without polling, an async waiter on its
own loop, a sync waiter in its thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from tether._loop import Signal
from tether.errors import UserError
from tether.messages import Message
from tether.models.base import (
    Finish,
    Model,
    ModelDelta,
    ModelSettings,
    TextDelta,
    ToolCallChunk,
    ToolSpec,
    Usage,
)

__all__ = [
    "Gate",
    "ScriptExhaustedError",
    "ScriptedModel",
    "Step",
    "StreamForever",
    "ToolCallStep",
    "stream_forever",
]


class ScriptExhaustedError(UserError):
    """A `ScriptedModel` was called more often than it has turns."""


class Gate:
    """A point where a scripted stream blocks until the test releases it.

    `release()` may be called from any thread or event loop, before or after the stream reaches
    the gate. A test can wait until the stream reached the gate with `await gate.reached()` or,
    from another thread, `gate.wait_reached(timeout)`. A gate opens once and stays open.
    """

    def __init__(self, name: str = "gate") -> None:
        self.name = name
        self._reached = Signal()
        self._released = Signal()

    def __repr__(self) -> str:
        return f"Gate({self.name!r}, reached={self.is_reached}, released={self.is_released})"

    @property
    def is_reached(self) -> bool:
        """Whether a stream has reached the gate."""
        return self._reached.flag

    @property
    def is_released(self) -> bool:
        """Whether the gate was released."""
        return self._released.flag

    def release(self) -> None:
        """Open the gate; safe from any thread or loop, and idempotent."""
        self._released.set()

    async def wait(self) -> None:
        """Mark the gate reached, then block until it is released (used by the scripted model).

        Cancellation: returns at once by raising the cancellation; the gate stays reached.
        """
        self._reached.set()
        await self._released.wait()

    async def reached(self) -> None:
        """Block until a stream reaches the gate.

        Cancellation: stops waiting; nothing else changes.
        """
        await self._reached.wait()

    def wait_reached(self, timeout: float | None = None) -> bool:
        """Block this thread until a stream reaches the gate; `False` if `timeout` ran out."""
        return self._reached.wait_sync(timeout)


@dataclass(frozen=True, slots=True)
class ToolCallStep:
    """A scripted tool call; `id` defaults to `call_<turn>_<index>`."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class StreamForever:
    """A step that streams `text` as a delta endlessly, until the stream is closed."""

    text: str = "tok "


def stream_forever(text: str = "tok ") -> StreamForever:
    """A step that streams `text` endlessly, one delta per checkpoint: for stop tests."""
    return StreamForever(text)


Step = str | ToolCallStep | Gate | StreamForever | TextDelta | ToolCallChunk | Usage | Finish
"""One step of a scripted turn."""


class ScriptedModel(Model):
    """A model that plays back scripted turns, one per call, deterministically.

    Args:
        *turns: One entry per model call: a list of steps, or a plain `str` for a one-delta text
            turn.
        default_reply: What to answer once the turns are used up; by default the call raises
            `ScriptExhaustedError`.
        name: The model's name.

    Attributes:
        calls: The messages of every call, in call order.
        tools_seen: The tool specs of every call, in call order.
        emitted: How many deltas the model streamed, over all calls.

    Tool calls get a `Finish("tool_calls")` at the end of their turn, other turns
    `Finish("stop")`, unless the turn scripts its own `Finish`.
    """

    def __init__(
        self,
        *turns: Sequence[Step] | str,
        default_reply: str | None = None,
        name: str = "scripted",
    ) -> None:
        self.name = name
        self._turns: list[list[Step]] = [[t] if isinstance(t, str) else list(t) for t in turns]
        for number, turn in enumerate(self._turns):
            for step in turn:
                if not isinstance(step, Step):
                    raise UserError(
                        f"turn {number} has the step {step!r}; a step is a str, ToolCallStep, "
                        "Gate, stream_forever() or a ModelDelta"
                    )
        self._default_reply = default_reply
        self._lock = threading.Lock()  # guards `_next`, `calls` and `tools_seen` across threads
        self._next = 0  # index of the turn the next call plays
        self.calls: list[list[Message]] = []
        self.tools_seen: list[list[ToolSpec]] = []
        self.emitted = 0

    @property
    def remaining(self) -> int:
        """How many scripted turns are left."""
        return len(self._turns) - self._next

    @asynccontextmanager
    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[AsyncIterator[ModelDelta]]:
        """Play the next turn; see `Model.stream`.

        Raises:
            ScriptExhaustedError: every turn was played and there is no `default_reply`.

        Cancellation: the stream stops at its next checkpoint or gate.
        """
        with self._lock:
            number = self._next
            self.calls.append(list(messages))
            self.tools_seen.append(list(tools))
            if number < len(self._turns):
                turn = self._turns[number]
                self._next += 1
            elif self._default_reply is not None:
                turn = [self._default_reply]
            else:
                raise ScriptExhaustedError(
                    f"ScriptedModel {self.name!r} has no turn left for call {number + 1} (it has "
                    f"{len(self._turns)}); script more turns or pass default_reply=..."
                )
        await anyio.lowlevel.checkpoint()
        yield _ScriptedDeltas(self, _expand(turn, number))

    def _count(self) -> None:
        with self._lock:
            self.emitted += 1


class _ScriptedDeltas:
    def __init__(self, model: ScriptedModel, items: Iterator[ModelDelta | Gate]) -> None:
        self._model = model
        self._items = items

    def __aiter__(self) -> _ScriptedDeltas:
        return self

    async def __anext__(self) -> ModelDelta:
        for item in self._items:
            if isinstance(item, Gate):
                await item.wait()
                continue
            await anyio.lowlevel.checkpoint()
            self._model._count()
            return item
        await anyio.lowlevel.checkpoint()
        raise StopAsyncIteration


def _expand(turn: list[Step], number: int) -> Iterator[ModelDelta | Gate]:
    """The deltas (and gates) one turn streams, lazily."""
    index = 0
    finished = False
    for step in turn:
        if isinstance(step, str):
            yield TextDelta(step)
        elif isinstance(step, ToolCallStep):
            call_id = step.id or f"call_{number}_{index}"
            arguments = json.dumps(step.arguments)
            half = len(arguments) // 2
            yield ToolCallChunk(index=index, id=call_id, name=step.name, arguments="")
            yield ToolCallChunk(index=index, id=None, name=None, arguments=arguments[:half])
            yield ToolCallChunk(index=index, id=None, name=None, arguments=arguments[half:])
            index += 1
        elif isinstance(step, StreamForever):
            while True:
                yield TextDelta(step.text)
        else:
            finished = finished or isinstance(step, Finish)
            yield step
    if not finished:
        yield Finish("tool_calls" if index else "stop")
