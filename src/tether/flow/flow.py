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
`FlowRun` handle, `stop` / `astop` stop a run by `run_id` or `thread_id` from any thread, `send` /
`asend` feed a run's `wait_for` and `stop_stream` / `astop_stream` end its runtime stream (in this
process or, with a Redis registry, in another one), and `get_run`, `get_state`, `list_runs`
inspect runs. See docs/flow.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Unpack

from .._twin import SyncStreamTwin, SyncTwin
from ..app import App, RunOptions
from ..errors import UserError
from ..run import StartOptions
from .chain import Chain, Handler, HandlerFn, Wiring
from .handle import RuntimeStream, SyncRuntimeStream
from .inbox import Inbox, _check_name
from .program import START, FlowProgram, FlowRun

if TYPE_CHECKING:
    from ..coordination.base import RunRegistry
    from ..storage.base import Checkpointer

__all__ = ["Chain", "Flow", "Handler"]


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
        self.wiring = Wiring()  # the flow's chains, by event; its runs read them as they go

    # wiring
    def to(self, handler: HandlerFn, *, name: str | None = None) -> Chain:
        """Start a chain with `handler`, called with the run's initial value."""
        return self.wiring.chain(START).to(handler, name=name)

    def when(self, event: str) -> Chain:
        """A new, empty chain that runs each time `event` is emitted; add handlers with `.to()`."""
        if not isinstance(event, str) or not event:
            raise UserError(f"an event name must be a non-empty string, not {event!r}")
        return self.wiring.chain(event)

    # the App's side
    def _program(self, input: Any, options: RunOptions) -> FlowProgram:
        return FlowProgram(self.wiring, input, Inbox())

    def _empty_values(self) -> dict[str, Any]:
        return {"result": None, "stream": [], "state": {}}

    async def _launch(self, program: FlowProgram, options: RunOptions) -> FlowRun:
        handle = await self.engine.start(program, options)
        assert isinstance(handle, FlowRun)  # FlowProgram.make_handle
        return handle

    # running
    async def astart(
        self,
        input: Any = None,
        config: Mapping[str, Any] | None = None,
        **options: Unpack[StartOptions],
    ) -> FlowRun:
        """Start a run with `input` as the initial value, in the background; returns its handle.

        Takes the arguments of `App.astart` (see `StartOptions`). The `FlowRun` has `run_id`,
        `status`, `result()`, `wait()`, `stop()` and `send()`. Cancelling this call before it
        returns cancels nothing that started.
        """
        run = await super().astart(input, config, **options)
        assert isinstance(run, FlowRun)  # FlowProgram.make_handle
        return run

    start = SyncTwin(astart)

    def aget_runtime_stream(
        self,
        initial_value: Any = None,
        *,
        timeout: float | None = None,
        detached: bool = False,
        config: Mapping[str, Any] | None = None,
        **options: Unpack[StartOptions],
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
            detached: If True, a consumer that stops reading early (closes or drops the stream, or
                is cancelled) leaves the run running; by default that stops the run
                (`requested_by="disconnect"`).
            config: The run's config mapping.
            **options: The options of `App.astart` (see `StartOptions`): `thread_id` (a new
                thread by default), `multitask_strategy` (what to do when the thread is busy),
                `checkpoint_id`, `metadata`, `thread_metadata`.
        """
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise UserError(f"timeout must be a number of seconds > 0 or None, not {timeout!r}")
        resolved = RunOptions.resolve(
            "aget_runtime_stream",
            config,
            options,
            on_disconnect="continue" if detached else "cancel",
        )
        inbox = Inbox()
        return RuntimeStream(
            lambda: self._launch(FlowProgram(self.wiring, initial_value, inbox), resolved),
            inbox=inbox,
            timeout=math.inf if timeout is None else float(timeout),
            detached=detached,
        )

    get_runtime_stream = SyncStreamTwin(aget_runtime_stream, SyncRuntimeStream)

    # input
    def _local_run(self, run_id: str) -> FlowRun | None:
        """The run `run_id` of this flow if it executes in this process."""
        handle = self.registry.local(run_id)
        if isinstance(handle, FlowRun) and handle.program.wiring is self.wiring:
            return handle
        return None

    def send(self, run_id: str, name: str, value: Any = None) -> bool:
        """Send `value` under `name` to the run `run_id` of this flow, for `data.wait_for(name)`.

        Safe from any thread. A run of this process gets it at once; a run in another process (a
        Redis registry) through `asend`, so the value must then be JSON data or messages.
        Returns True if the run accepted it (for a run elsewhere: was live), False if the run is
        unknown or has ended. `FlowRun.send` and `RuntimeStream.send` do the same for their run.

        Raises:
            UserError: `name` is not a non-empty string; or the run is elsewhere and this is
                called on the event loop the registry runs on (use `await flow.asend(...)`).
            CoordinationUnavailableError: the run is not here and Redis cannot be reached.
        """
        _check_name(name)
        local = self._local_run(run_id)
        if local is not None:
            return local.send(name, value)
        if self.registry.local(run_id) is not None or not self.registry.cross_process:
            return False  # a run of another app here, or no run at all
        return self.registry.call_sync(self.asend, run_id, name, value)

    async def asend(self, run_id: str, name: str, value: Any = None) -> bool:
        """`send`, from async code: reaches the run here or in another process (through the
        registry's inbox in Redis, where values arrive in the order sent).

        Cancellation: the value may or may not have been sent.
        """
        _check_name(name)
        local = self._local_run(run_id)
        if local is not None:
            return local.send(name, value)
        if self.registry.local(run_id) is not None:
            return False
        return await self.registry.send_input(run_id, name, value)

    def stop_stream(self, run_id: str) -> bool:
        """End the runtime stream of the run `run_id` of this flow; the run itself goes on.

        The same as a handler's `data.stop_stream()`, from outside: the stream's readers get the
        items put so far and then the end. Safe from any thread; reaches the run in this process
        or in another one (a Redis registry), after the values sent to it before. Returns True if
        the run was live, False if it is unknown or has ended. To stop the work, use `stop()`.

        Raises:
            UserError: the run is elsewhere and this is called on the event loop the registry
                runs on (use `await flow.astop_stream(...)`).
            CoordinationUnavailableError: the run is not here and Redis cannot be reached.
        """
        local = self._local_run(run_id)
        if local is not None:
            return local.stop_stream()
        if self.registry.local(run_id) is not None or not self.registry.cross_process:
            return False
        return self.registry.call_sync(self.astop_stream, run_id)

    async def astop_stream(self, run_id: str) -> bool:
        """`stop_stream`, from async code.

        Cancellation: the stream may or may not have been ended.
        """
        local = self._local_run(run_id)
        if local is not None:
            return local.stop_stream()
        if self.registry.local(run_id) is not None:
            return False
        return await self.registry.close_stream(run_id)
