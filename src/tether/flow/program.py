"""`FlowProgram`: one run of a flow, on the run engine, under the stop contract.

Design note. Every handler call of a run is a task of one task group that `execute()` opens. The
engine awaits `execute()` inside the run's cancel scope, so the task group is inside it too:
- `data.emit(event, value)` starts each chain registered for `event` with `tg.start_soon` and
  returns; chains run concurrently, and a loop of emissions never deepens the stack. A chain calls
  its handlers in order, each getting the previous one's return value; `.end()` stores the last one
  as the run's `result`.
- The run completes when the task group is empty: no handler runs and none is pending.
- A `now` (or `rollback`) stop cancels the run's scope, hence the task group: every running handler
  is cancelled at its next `await`, and every pending emission is cancelled before its first
  handler runs (each chain starts with `checkpoint_if_cancelled`). The task group only exits when
  all of them have unwound, so no handler code runs after the terminal event, which the engine
  sends only after `execute()` returned. Sync handlers, in worker threads, are abandoned (see
  `data.py`).
- An `after_step` stop lets running handlers finish and starts no new one (no new chain, no next
  handler of a chain, no `wait_for`); the run then ends `cancelled`. A handler already blocked in
  `wait_for` only ends when the stop's grace runs out and escalates to `now`.
- A handler that raises fails the run: its siblings are cancelled, and the error is recorded.

Stored values, JSON only: `{"result": ..., "stream": [items of this run], "state": {...}}`.
`state` is loaded from the thread's last checkpoint; `result` and `stream` start empty for each run.
A checkpoint is committed when a handler starts waiting for outside input, when the run completes,
and, through `stopped_state()`, when it is stopped; so items already streamed and the state are
kept after a stop.

The runtime stream's readers (`handle.py`) wait on `wait_changed()`, which wakes them when an item
is put, when the stream is closed, and when the program ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup

from .._loop import RunLoop, Signal
from ..engine import Execution, Outcome, Program, StoppedState
from ..errors import UserError
from ..events import CustomEvent, NodeFinished, NodeStarted
from ..handle import RunHandle
from .data import FlowData
from .inbox import Inbox

if TYPE_CHECKING:
    from ..run import RunRecord
    from .chain import Chain, Handler, Wiring

__all__ = ["START", "FlowProgram", "FlowRun"]

START = "__start__"
"""The event that carries a run's initial value to the chains made with `flow.to(...)`."""

Phase = Literal["pending", "running", "over"]


class FlowProgram(Program):
    """One run of a `Flow`: its handler tasks, runtime stream, stored values and input."""

    def __init__(self, wiring: Wiring, input: Any, inbox: Inbox) -> None:
        self.wiring = wiring  # the flow's chains
        self.input = input
        self.inbox = inbox
        # The last value that reached an `.end()`; None until one did.
        self.result: Any = None
        # The items put into the runtime stream by this run, in order (all are JSON data).
        self.stream: list[Any] = []
        # The flow's stored state: the thread's last checkpointed state, then the handlers' writes.
        self.state: dict[str, Any] = {}
        # pending -> running (execute() began) -> over (execute() ended); only moves forward.
        self.phase: Phase = "pending"
        # The seq the stream was closed at by `stop_stream()`: readers end there. Set once.
        self.stream_closed_at: int | None = None
        # Set (from any thread) by an outside `FlowRun.stop_stream()`; `execute()` closes the
        # stream as it begins when the request came before the program ran. Never cleared.
        self.close_requested = False
        # Whether an `after_step` stop kept a chain or handler from starting.
        self.skipped = False
        # Handler calls started so far; numbers the calls (`node_started.step`).
        self.calls = 0
        self._ex: Execution | None = None
        # The handlers' task group; set while execute() has it open.
        self._tg: TaskGroup | None = None
        # The run's loop (the handle's), set when execute() begins; handlers hop to it.
        self._loop: RunLoop | None = None
        # Notified whenever the runtime stream's readers must look again (cheap when none wait).
        self._changed = Signal()
        # Serializes this run's checkpoint commits (handlers may wait for input concurrently).
        self._commit_lock = anyio.Lock()
        # The step number of the next checkpoint.
        self._step = 0

    # identity
    @property
    def execution(self) -> Execution:
        assert self._ex is not None, "the program has not started"
        return self._ex

    @property
    def run_id(self) -> str:
        return self.execution.handle.run_id

    @property
    def thread_id(self) -> str:
        return self.execution.handle.thread_id

    @property
    def stop_requested(self) -> bool:
        """Whether a stop of the run was requested (sticky)."""
        return self._ex is not None and self._ex.handle.token.requested

    def _cancelling(self) -> bool:
        """Whether a `now`/`rollback` stop was requested: from then on, new work is discarded."""
        return self._ex is not None and self._ex.handle.token.mode in ("now", "rollback")

    def values(self) -> dict[str, Any]:
        """The stored values now: `result`, this run's `stream` items, and `state`."""
        return {"result": self.result, "stream": list(self.stream), "state": dict(self.state)}

    # the engine's side
    def make_handle(self, record: RunRecord) -> FlowRun:
        """A flow run's handle is a `FlowRun`, which can also `send` input."""
        return FlowRun(record, self)

    async def execute(self, ex: Execution) -> Outcome:
        """Run the flow until no handler runs or is pending; see the module docstring.

        Cancellation: cancels every handler and pending emission, and returns once all unwound.
        """
        self._ex = ex
        base = ex.base
        if base is not None and isinstance(base.values.get("state"), dict):
            self.state = dict(base.values["state"])
        self._step = base.step + 1 if base is not None else 0
        self._loop = ex.handle.token.loop
        self.inbox.bind(self._loop)
        self.phase = "running"
        if self.close_requested:  # stop_stream() from outside, before the program ran
            self.close_stream()
        try:
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    self.dispatch(START, self.input)
            except BaseExceptionGroup as group:
                raise _first_error(group) from None
            finally:
                self._tg = None
            await self._commit("end")
            if self.skipped:  # an after_step stop kept work from starting
                return Outcome("cancelled", self.values())
            return Outcome("completed", self.values())
        finally:
            self.phase = "over"
            self.inbox.close()
            self._notify()

    def stopped_state(self, ex: Execution) -> StoppedState | None:
        """What a stop commits: the stored values, with the items streamed so far."""
        if self.phase == "pending":
            return None  # stopped before the flow ran: the last checkpoint holds everything
        return StoppedState(self.values())

    # what handlers do (through FlowData), on the loop
    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the run's loop (else: a sync handler's worker thread)."""
        return self._loop is not None and self._loop.on_loop

    def run_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` on the run's loop from a sync handler's worker thread, and wait for it.

        Does nothing once the run's program ended (the call would change nothing that is kept).

        Raises:
            UserError: the caller is not a worker thread of the run (e.g. a thread the handler
                started itself).
        """
        if self.phase == "over" or self._loop is None:
            return
        try:
            self._loop.run_from_worker(fn, *args)
        except RuntimeError:
            raise UserError(
                "a flow handler's `data` was used from a thread that is not the handler's own "
                "worker thread; call it from the handler, or hand the work back to it"
            ) from None

    def dispatch(self, event: str, value: Any) -> None:
        """Start every chain registered for `event`, as new tasks of the run."""
        chains = self.wiring.chains_for(event)
        tg = self._tg
        if not chains or tg is None or self._cancelling():
            return
        if self.execution.stop_after_step:
            self.skipped = True
            return
        for chain in chains:
            tg.start_soon(self._run_chain, chain, event, value)

    def put(self, item: Any, node: str) -> None:
        """Stream `item` as a `custom` event and keep it, unless the stream or run is closed."""
        if self.stream_closed_at is not None or self.phase != "running" or self._cancelling():
            return
        if self.execution.handle.emit(CustomEvent, node=node, data=item) is None:
            return  # the run already sent its terminal event
        self.stream.append(item)
        self._notify()

    def close_stream(self) -> None:
        """End the runtime stream at the current position; the run goes on."""
        if self.stream_closed_at is None and self.phase == "running":
            self.stream_closed_at = len(self.execution.handle.events)
            self._notify()

    async def wait_for(self, name: str, chain: anyio.CancelScope) -> Any:
        """The next value sent under `name`; commits a checkpoint first if it must wait.

        After an `after_step` stop, waiting is a step boundary: the handler's chain is cancelled
        (`chain` is its scope) instead, and the chain ends there.
        """
        if self.execution.stop_after_step:
            self.skipped = True
            chain.cancel()
            await anyio.lowlevel.checkpoint()  # raises: the chain's scope is cancelled
        if not self.inbox.has_value(name):
            await self._commit("wait")
        return await self.inbox.get(name)

    # the runtime stream's readers
    async def wait_changed(self) -> None:
        """Wait until an item is put, the stream closes, or the program ends.

        Cancellation: stops waiting; nothing else changes.
        """
        await self._changed.wait_change()

    def _notify(self) -> None:
        self._changed.notify()

    # internals
    async def _run_chain(self, chain: Chain, event: str, value: Any) -> None:
        # A stop that arrived after the emission and before this task first ran ends it here,
        # before any handler code.
        await anyio.lowlevel.checkpoint_if_cancelled()
        ex = self.execution
        # The chain's own scope: an `after_step` stop that finds a handler about to wait for input
        # cancels it, which ends the chain at that boundary (see `wait_for`).
        with anyio.CancelScope() as scope:
            for handler in chain.handlers:
                if ex.stop_after_step:
                    self.skipped = True
                    return
                value = await self._call(handler, event, value, scope)
            if chain.ends:
                self.result = value

    async def _call(
        self, handler: Handler, event: str, value: Any, chain: anyio.CancelScope
    ) -> Any:
        handle = self.execution.handle
        self.calls += 1
        step = self.calls
        data = FlowData(self, handler.name, event, value, chain)
        handle.emit(NodeStarted, node=handler.name, step=step)
        try:
            if handler.is_async:
                result = await handler.fn(data)
            else:
                result = await anyio.to_thread.run_sync(handler.fn, data, abandon_on_cancel=True)
        except Exception as exc:
            data._abandon()
            exc.add_note(f"in flow handler {handler.name!r}")
            raise
        except BaseException:  # cancelled (the thread of a sync handler is abandoned)
            data._abandon()
            raise
        handle.emit(NodeFinished, node=handler.name, step=step)
        return result

    async def _commit(self, source: str) -> None:
        ex = self.execution
        # Shielded: a stop during the (short) write must not leave it half-known.
        with anyio.CancelScope(shield=True):
            async with self._commit_lock:
                await ex.commit(self.values(), step=self._step, source=source)
                self._step += 1


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that failed the task group: its first exception that is not a cancellation."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    first: BaseException = group.exceptions[0]
    return first


class FlowRun(RunHandle):
    """The handle of one flow run: a `RunHandle` that can also `send` input to the run and end
    its runtime stream (`stop_stream`).

    Returned by `flow.start()` / `flow.astart()`. It has `run_id`, `thread_id`, `status`, `done`,
    `events`, `result()`, `wait()`, `stop()` and `astop()` like every run handle.
    """

    def __init__(self, record: RunRecord, program: FlowProgram) -> None:
        super().__init__(record)
        self._flow_program = program

    @property
    def program(self) -> FlowProgram:
        """The run's program (its stored values so far: `program.values()`)."""
        program: FlowProgram = self._flow_program
        return program

    def send(self, name: str, value: Any = None) -> bool:
        """Send `value` under `name` to the run, for a handler's `await data.wait_for(name)`.

        Safe from any thread; values of one name arrive in order, and a value sent before a
        handler waits is queued. Returns False (and drops the value) if the run has ended.
        """
        return self.program.inbox.send(name, value)

    def stop_stream(self) -> bool:
        """End the run's runtime stream from outside, as a handler's `data.stop_stream()` does:
        readers get the items put so far, then the end; the run goes on.

        Safe from any thread, also before the run started (the stream then ends where the
        program begins). Returns False if the run has ended, else True (also when the stream
        was closed already).
        """
        program = self.program
        if self.done or program.phase == "over":
            return False
        program.close_requested = True  # read by execute() if the program has not begun
        # On the loop, close_stream() closes a running program's stream and is a no-op before
        # it runs (execute() then sees the flag); None: the loop is not bound yet, same thing.
        return self.token.loop.call_soon(program.close_stream) is not False

    def __repr__(self) -> str:
        return f"<FlowRun {self.run_id} thread={self.thread_id} status={self.status}>"
