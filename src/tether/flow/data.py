"""`FlowData`: what a flow handler receives, and everything it may do to its run.

A handler is `async def handler(data)` (or a plain `def`, run in a worker thread). `data.value` is
the incoming value; the handler's return value goes to the next handler of its chain. Through
`data` a handler:
- pushes items into the runtime stream (`put_into_stream`) and ends that stream (`stop_stream`);
- emits named events that start other handlers (`emit`, alias `async_emit`), loops included;
- waits for input from outside the run (`wait_for`), which the caller feeds with `run.send()`;
- reads and writes the flow's stored state (`state`), checkpointed with the thread.

What a stop does to a handler: an async handler is cancelled at its next `await` (its `finally`
blocks run before the run's terminal event). A sync handler cannot be cancelled; it is abandoned:
the run ends at once, the thread runs on until the function returns, and from then on its result,
its stream items and its emissions are discarded. It may poll `data.stop_requested` to end early.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from ..errors import UserError
from ..serde import encode_value

__all__ = ["FlowData", "RunSide"]


class RunSide(Protocol):
    """What `FlowData` asks of its run (`FlowProgram` provides it; see `program.py`)."""

    @property
    def run_id(self) -> str: ...

    @property
    def thread_id(self) -> str: ...

    @property
    def state(self) -> dict[str, Any]: ...

    @property
    def stop_requested(self) -> bool: ...

    def on_loop_thread(self) -> bool: ...

    def run_on_loop(self, fn: Callable[..., None], *args: Any) -> None: ...

    def dispatch(self, event: str, value: Any) -> None: ...

    def put(self, item: Any, node: str) -> None: ...

    def close_stream(self) -> None: ...

    async def wait_for(self, name: str, chain: anyio.CancelScope) -> Any: ...


_PLAIN = (str, int, float, bool, type(None))


class _Yield:
    """The awaitable `emit()` returns: awaiting it gives the event loop one turn (a checkpoint).

    Not a coroutine, so a sync handler may call `data.emit(...)` without awaiting it and Python
    warns about nothing.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return anyio.lowlevel.checkpoint().__await__()


_YIELD = _Yield()


class _Done:
    """The awaitable `emit()` returns in a worker thread: awaiting it does nothing."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # makes this a generator function


_DONE = _Done()


class FlowData:
    """The argument of a flow handler: the incoming value and the run's stream, events and input.

    Attributes:
        value: The value the handler was called with: the run's initial value, an emitted event's
            value, or the previous handler's return value in a chain.
        event: The event that started the handler's chain (`"__start__"` for the initial value).
        node: The handler's name (its function's name unless given with `.to(fn, name=...)`); the
            `node` of the events it causes.
    """

    __slots__ = ("_chain", "_live", "_program", "event", "node", "value")

    def __init__(
        self, program: RunSide, node: str, event: str, value: Any, chain: anyio.CancelScope
    ) -> None:
        self._program = program
        self._chain = chain  # the cancel scope of the handler's chain
        self.node = node
        self.event = event
        self.value = value
        # False once the handler was cancelled or abandoned: what it does later is discarded.
        self._live = True

    def __repr__(self) -> str:
        return f"FlowData(node={self.node!r}, event={self.event!r}, value={self.value!r})"

    @property
    def run_id(self) -> str:
        """The id of the run."""
        return self._program.run_id

    @property
    def thread_id(self) -> str:
        """The id of the run's thread."""
        return self._program.thread_id

    @property
    def state(self) -> dict[str, Any]:
        """The flow's stored state, shared by the run's handlers; JSON values (and `Message`s).

        Loaded from the thread's last checkpoint when the run starts, and checkpointed with the
        run: when a handler waits for input, when the run ends, and when it is stopped (so a
        handler's `finally` block can record partial work here). An abandoned sync handler must not
        write to it.
        """
        return self._program.state

    @property
    def stop_requested(self) -> bool:
        """Whether a stop of the run was requested. A sync handler may poll this to end early."""
        return not self._live or self._program.stop_requested

    def emit(self, event: str, value: Any = None) -> Awaitable[None]:
        """Emit `event` with `value`: every chain registered with `flow.when(event)` starts.

        The chains start as new tasks of the run; `emit` does not wait for them. An event that no
        chain listens to is dropped. In an async handler, `await` the result: it gives the loop one
        turn, so a handler that emits in a loop can be stopped between two emissions. A sync
        handler may call it without `await`.

        Cancellation: a stop cancels the chains this call started, including those that have not
        begun yet; none of their handlers runs after the stop.

        Raises:
            UserError: `event` is not a non-empty string.
        """
        if not isinstance(event, str) or not event:
            raise UserError(f"an event name must be a non-empty string, not {event!r}")
        program = self._program
        if program.on_loop_thread():
            if self._live:
                program.dispatch(event, value)
            return _YIELD
        program.run_on_loop(self._emit_from_thread, event, value)
        return _DONE

    async_emit = emit
    """Alias of `emit` (TriggerFlow's name for it)."""

    def _emit_from_thread(self, event: str, value: Any) -> None:
        if self._live:
            self._program.dispatch(event, value)

    def put_into_stream(self, item: Any) -> None:
        """Push `item` into the run's runtime stream; safe from worker threads.

        The item is streamed at once as a `custom` event and kept in the run's event log and in the
        stored values (`stream`). Items put after `stop_stream()`, after the run ended, or by a
        cancelled or abandoned handler are dropped.

        Raises:
            UserError: `item` is not JSON data (dict, list, str, int, float, bool, None) or a
                `Message`, which tether could not store.
        """
        if not isinstance(item, _PLAIN):
            encode_value(item, where="the stream item")
        program = self._program
        if program.on_loop_thread():
            if self._live:
                program.put(item, self.node)
        else:
            program.run_on_loop(self._put_from_thread, item)

    def _put_from_thread(self, item: Any) -> None:
        if self._live:
            self._program.put(item, self.node)

    def stop_stream(self) -> None:
        """End the runtime stream; the run itself goes on. Safe from worker threads.

        Readers of `get_runtime_stream()` get the items put so far and then the end; later items
        are dropped. The run is not stopped and not marked failed: its handlers run to their end
        and the run completes as usual. To stop the work, stop the run (`run.stop()`).
        """
        program = self._program
        if program.on_loop_thread():
            if self._live:
                program.close_stream()
        else:
            program.run_on_loop(self._close_from_thread)

    def _close_from_thread(self) -> None:
        if self._live:
            self._program.close_stream()

    async def wait_for(self, name: str) -> Any:
        """Wait for the next value sent to the run under `name` (with `run.send(name, value)`).

        Values sent before anyone waits are queued, so none is lost. Sent values never start
        handlers, and emitted events never end a `wait_for`: the run's input and its events are
        separate. Before it blocks, the run commits a checkpoint, so a flow that waits for a person
        has its progress stored. Only async handlers can wait.

        Cancellation: a stop ends the wait at once (the handler is cancelled). An `after_step` stop
        requested before the call ends the handler's chain here, at a clean boundary; one that
        arrives while the handler waits takes effect when its grace runs out.
        """
        return await self._program.wait_for(name, self._chain)

    def _abandon(self) -> None:
        """Discard whatever the handler does from now on (it was cancelled or abandoned)."""
        self._live = False
