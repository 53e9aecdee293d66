"""`Flow`: event-driven flows (TriggerFlow-style) as a tether app, with a runtime stream.

Handlers are wired to named events; they emit events to one another (loops included) and push
items into a runtime stream that the caller reads while the flow runs:

    flow = Flow()

    async def stream_steps(data: FlowData) -> str:
        for i in range(3):
            data.put_into_stream({"step": i + 1, "status": "working"})
            await anyio.sleep(0.05)
        data.stop_stream()
        return "done"

    flow.to(stream_steps).end()
    for item in flow.get_runtime_stream("start"):
        print("[stream]", item)

A flow is an `App`, so it runs on the run engine and keeps the whole stop contract: `stream` /
`astream` give the typed events (stream items are `custom` events), `start` / `astart` return a
`FlowRun` handle, `stop` / `astop` stop a run by `run_id` or `thread_id` from any thread, and
`get_run`, `get_state`, `list_runs` inspect runs. See docs/flow.md.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _portal
from ..app import App, RunOptions
from ..errors import UserError
from .handle import FlowRun, RuntimeStream, SyncRuntimeStream
from .inbox import Inbox
from .program import START, FlowProgram

if TYPE_CHECKING:
    from ..coordination.base import RunRegistry
    from ..storage.base import Checkpointer
    from .data import FlowData

__all__ = ["Chain", "Flow", "Handler"]

HandlerFn = Callable[["FlowData"], Any]
"""A flow handler: `async def handler(data)` or `def handler(data)`."""


@dataclass(frozen=True, slots=True)
class Handler:
    """One handler of a chain: its name, its function, and whether it is async."""

    name: str
    fn: HandlerFn
    is_async: bool

    @classmethod
    def of(cls, fn: HandlerFn, name: str | None) -> Handler:
        """Check `fn` and wrap it; raises `UserError` for what cannot be a handler."""
        if not callable(fn):
            raise UserError(f"a flow handler must be a function taking `data`, not {fn!r}")
        target = fn if inspect.isroutine(fn) else getattr(fn, "__call__", fn)  # noqa: B004
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise UserError(
                f"flow handler {fn!r} is a generator; push items with "
                "`data.put_into_stream(item)` and return the handler's result instead"
            )
        label = name if name is not None else getattr(fn, "__name__", None) or type(fn).__name__
        if not isinstance(label, str) or not label:
            raise UserError(f"a handler name must be a non-empty string, not {label!r}")
        return cls(label, fn, inspect.iscoroutinefunction(target))


class Chain:
    """Handlers that run one after another when an event arrives.

    Made by `flow.to(handler)` (started by the run's initial value) or `flow.when(event)`. Each
    handler gets the previous one's return value as `data.value`; `.end()` stores the last one as
    the run's result.
    """

    def __init__(self, event: str) -> None:
        self.event = event
        self.handlers: list[Handler] = []
        self.ends = False  # whether the last handler's return value is the run's result

    def to(self, handler: HandlerFn, *, name: str | None = None) -> Chain:
        """Append `handler`; returns this chain, for `.to(...)` / `.end()`.

        Raises:
            UserError: `handler` is not a function of `data`, or the chain already `.end()`ed.
        """
        if self.ends:
            raise UserError(
                f"the chain on {self.event!r} already ended; start another with flow.when(...)"
            )
        self.handlers.append(Handler.of(handler, name))
        return self

    def end(self) -> Chain:
        """Make the value returned by the chain's last handler the run's `result`.

        The run still completes only when no handler runs or is pending; if several chains end,
        the last value to arrive wins.
        """
        if not self.handlers:
            raise UserError(f"the chain on {self.event!r} has no handler; add one with .to(...)")
        self.ends = True
        return self

    def __repr__(self) -> str:
        names = " -> ".join(h.name for h in self.handlers)
        return f"<Chain on {self.event!r}: {names}{' -> end' if self.ends else ''}>"


class Flow(App):
    """An event-driven flow: handlers wired to events, with a runtime stream that really stops.

    Args:
        checkpointer: Where threads, runs and events are stored; SQLite under `./.tether/` by
            default.
        registry: Who runs what, and where stops go; in-process by default.
        name: The app name recorded on runs.
    """

    def __init__(
        self,
        *,
        checkpointer: Checkpointer | None = None,
        registry: RunRegistry | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(checkpointer=checkpointer, registry=registry, name=name)
        self._chains: dict[str, list[Chain]] = {}
        # The programs of this flow's runs that may still take input, by run id (for `send`).
        self._programs: weakref.WeakValueDictionary[str, FlowProgram] = (
            weakref.WeakValueDictionary()
        )

    # wiring
    def to(self, handler: HandlerFn, *, name: str | None = None) -> Chain:
        """Start a chain with `handler`, called with the run's initial value."""
        return self._chain(START).to(handler, name=name)

    def when(self, event: str) -> Chain:
        """A new, empty chain that runs each time `event` is emitted; add handlers with `.to()`."""
        if not isinstance(event, str) or not event:
            raise UserError(f"an event name must be a non-empty string, not {event!r}")
        return self._chain(event)

    def _chain(self, event: str) -> Chain:
        chain = Chain(event)
        self._chains.setdefault(event, []).append(chain)
        return chain

    def _chains_for(self, event: str) -> list[Chain]:
        return [c for c in self._chains.get(event, ()) if c.handlers]

    # the App's side
    def _program(self, input: Any, options: RunOptions) -> FlowProgram:
        return FlowProgram(self, input, Inbox())

    def _empty_values(self) -> dict[str, Any]:
        return {"result": None, "stream": [], "state": {}}

    async def _start(self, input: Any, options: RunOptions) -> FlowRun:
        return await self._launch(input, options, Inbox())

    async def _launch(self, input: Any, options: RunOptions, inbox: Inbox) -> FlowRun:
        program = FlowProgram(self, input, inbox)
        handle = await self.engine.start(
            program,
            thread_id=options.thread_id,
            strategy=options.multitask_strategy,
            config=options.config,
            checkpoint_id=options.checkpoint_id,
            metadata=options.metadata,
            thread_metadata=options.thread_metadata,
            make_handle=lambda record: FlowRun(record, program),
        )
        assert isinstance(handle, FlowRun)
        if program.phase != "over":
            self._track(handle.run_id, program)
        return handle

    def _track(self, run_id: str, program: FlowProgram) -> None:
        self._programs[run_id] = program

    def _untrack(self, run_id: str) -> None:
        self._programs.pop(run_id, None)

    # running
    async def astart(
        self,
        input: Any = None,
        config: Mapping[str, Any] | None = None,
        *,
        thread_id: str | None = None,
        multitask_strategy: str = "reject",
        checkpoint_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        thread_metadata: Mapping[str, Any] | None = None,
    ) -> FlowRun:
        """Start a run with `input` as the initial value, in the background; returns its handle.

        The `FlowRun` has `run_id`, `status`, `result()`, `wait()`, `stop()` and `send()`.
        Cancelling this call before it returns cancels nothing that started.
        """
        run = await super().astart(
            input,
            config,
            thread_id=thread_id,
            multitask_strategy=multitask_strategy,
            checkpoint_id=checkpoint_id,
            metadata=metadata,
            thread_metadata=thread_metadata,
        )
        assert isinstance(run, FlowRun)
        return run

    def start(
        self,
        input: Any = None,
        config: Mapping[str, Any] | None = None,
        *,
        thread_id: str | None = None,
        multitask_strategy: str = "reject",
        checkpoint_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> FlowRun:
        """Sync `astart`: the run executes on tether's background loop; stop it from any thread."""
        run = super().start(
            input,
            config,
            thread_id=thread_id,
            multitask_strategy=multitask_strategy,
            checkpoint_id=checkpoint_id,
            metadata=metadata,
        )
        assert isinstance(run, FlowRun)
        return run

    def aget_runtime_stream(
        self,
        initial_value: Any = None,
        *,
        timeout: float | None = None,
        thread_id: str | None = None,
        detached: bool = False,
        multitask_strategy: str = "reject",
        config: Mapping[str, Any] | None = None,
    ) -> RuntimeStream:
        """Start a run and iterate the items its handlers put into the runtime stream.

        The run starts on the first iteration. The stream yields each item exactly as it was put,
        and ends when a handler calls `stop_stream()` (the run goes on) or when the run ends
        (`stream.finished` is then its `run_finished` event).

        Args:
            initial_value: The value the chains made with `flow.to(...)` are called with.
            timeout: Seconds the run may take. When they pass, the run is stopped
                (`requested_by="timeout"`, reason `"timeout"`), the stream ends, `stream.timed_out`
                is True and `stream.finished.reason` is `"timeout"`. Applies to detached runs too.
            thread_id: The thread to run on; a new one by default.
            detached: If True, a consumer that stops reading early (closes or drops the stream, or
                is cancelled) leaves the run running; by default that stops the run
                (`requested_by="disconnect"`).
            multitask_strategy: What to do when the thread is busy (see `App.astart`).
            config: The run's config mapping.
        """
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise UserError(f"timeout must be a number of seconds > 0 or None, not {timeout!r}")
        options = self._options(
            config,
            thread_id,
            multitask_strategy,
            "continue" if detached else "cancel",
            None,
            None,
        )
        inbox = Inbox()
        return RuntimeStream(
            lambda: self._launch(initial_value, options, inbox),
            inbox=inbox,
            timeout=math.inf if timeout is None else float(timeout),
            detached=detached,
        )

    def get_runtime_stream(
        self,
        initial_value: Any = None,
        *,
        timeout: float | None = None,
        thread_id: str | None = None,
        detached: bool = False,
        multitask_strategy: str = "reject",
        config: Mapping[str, Any] | None = None,
    ) -> SyncRuntimeStream:
        """Sync `aget_runtime_stream`: iterate from any thread; the run executes on tether's
        background loop. Breaking out of the loop stops the run unless `detached=True`."""
        _portal.close_at_exit(self.checkpointer, self.checkpointer.aclose)
        return SyncRuntimeStream(
            self.aget_runtime_stream(
                initial_value,
                timeout=timeout,
                thread_id=thread_id,
                detached=detached,
                multitask_strategy=multitask_strategy,
                config=config,
            )
        )

    # input
    def send(self, run_id: str, name: str, value: Any = None) -> bool:
        """Send `value` under `name` to the run `run_id` of this flow, for `data.wait_for(name)`.

        Safe from any thread. Returns True if the run accepted it, False if the run is unknown to
        this process or has ended. `FlowRun.send` and `RuntimeStream.send` do the same.
        """
        program = self._programs.get(run_id)
        return program is not None and program.inbox.send(name, value)
