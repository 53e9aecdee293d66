"""A flow run's runtime stream (`RuntimeStream`, `SyncRuntimeStream`).

Design note. The runtime stream is a view of the run's event list, not a second channel: each item
a handler puts is one `custom` event, and a reader keeps a cursor into `handle.events` and yields
the `data` of the custom events. So the stream, `flow.stream()` and the stored event log always
agree, and a burst of items costs a reader one wake-up.

A reader ends when it reaches the position where `stop_stream()` closed the stream, or the run's
`run_finished` event. It blocks on one of three things, by the program's phase:
- before the program runs: the run's next event (`run_started`, or `run_finished` when the run
  was stopped before it started);
- while it runs: the program's change signal, set when an item is put, when the stream is closed
  (which sends no event), and when the program ends;
- after it ended: the run's end (`handle.wait()`).

A reader that is abandoned (closed, dropped, or cancelled while it waits) stops the run with
`requested_by="disconnect"`, unless the stream is detached. A stream that ended normally (by
`stop_stream()`, or with the run) never stops anything. A timeout stops the run with
`requested_by="timeout"` and reason `"timeout"`, detached or not, and then ends the stream after the
run's terminal event.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self

import anyio

from .. import _portal
from ..events import CustomEvent, RunFinished
from ..handle import AbandonableStream, SyncRunStream
from .program import FlowRun

if TYPE_CHECKING:
    from .inbox import Inbox

__all__ = ["RuntimeStream", "SyncRuntimeStream"]


class RuntimeStream(AbandonableStream):
    """An async iterator over the items a flow run puts into its runtime stream.

    Made by `flow.aget_runtime_stream(...)`; the run starts on the first iteration (or `start()`).

    Attributes:
        run: The run's handle once it started, else None.
        finished: The run's `run_finished` event if the stream ended with the run; None while it
            runs, and when the stream ended by `stop_stream()` or was abandoned.
        timed_out: Whether the stream's timeout stopped the run.
    """

    def __init__(
        self,
        start: Callable[[], Awaitable[FlowRun]],
        *,
        inbox: Inbox,
        timeout: float,
        detached: bool,
    ) -> None:
        self._start = start
        self._inbox = inbox
        self._timeout = timeout  # seconds from the start; inf for none
        self._detached = detached
        self.run: FlowRun | None = None
        self.finished: RunFinished | None = None
        self.timed_out = False
        self._deadline = math.inf  # on the loop's clock; inf once the timeout fired
        self._cursor = 0  # the index in run.events of the next event to look at
        self._pending: deque[Any] = deque()  # items found but not yet handed out
        self._ended = False  # no more items will be looked for

    @property
    def run_id(self) -> str | None:
        """The run id once the run has started."""
        return self.run.run_id if self.run is not None else None

    async def start(self) -> FlowRun:
        """Start the run now, if it has not started; returns its handle.

        Cancellation: cancelling this call before it returns cancels nothing that started.
        """
        if self.run is None:
            self.run = await self._start()
            self._deadline = anyio.current_time() + self._timeout
        return self.run

    def send(self, name: str, value: Any = None) -> bool:
        """Send input to the run (see `FlowRun.send`); works before the run starts, too."""
        return self._inbox.send(name, value)

    def stop(self, *, mode: str = "now", reason: str | None = None) -> bool:
        """Stop the run; safe from any thread. The stream then ends after the run's terminal event.

        A stream whose run has not started yet ends at once, without starting it. Returns whether
        a running run accepted the stop.
        """
        if self.run is None:
            self._ended = True
            return False
        return self.run.stop(mode=mode, reason=reason)

    async def wait(self) -> None:
        """Wait until the run has ended (at once if it never started).

        The stream may end before its run does (`stop_stream()`); this waits for the run.
        Cancellation: stops waiting; the run is not affected.
        """
        if self.run is not None:
            await self.run.wait()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        """The next item.

        Cancellation: a consumer cancelled while it waits abandons the stream, which stops the run
        unless the stream is detached.
        """
        if not self._pending:
            await self._fill()
            if not self._pending:
                raise StopAsyncIteration
        return self._pending.popleft()

    async def next_batch(self) -> list[Any]:
        """All items available now (at least one), for the sync wrapper; [] at the end.

        Cancellation: as for `__anext__`.
        """
        if not self._pending:
            await self._fill()
        batch = list(self._pending)
        self._pending.clear()
        return batch

    async def _fill(self) -> None:
        if self._ended:
            return
        run = self.run or await self.start()
        try:
            while True:
                self._scan(run)
                if self._pending or self._ended:
                    return
                await self._wait(run)
        except BaseException:
            self._abandon()
            raise

    def _scan(self, run: FlowRun) -> None:
        """Move the cursor over the events that exist, collecting items; notice the end."""
        events = run.events
        closed_at = run.program.stream_closed_at
        end = len(events) if closed_at is None else min(len(events), closed_at)
        cursor = self._cursor
        pending = self._pending
        while cursor < end:
            event = events[cursor]
            cursor += 1
            if isinstance(event, CustomEvent):
                pending.append(event.data)
            elif isinstance(event, RunFinished):
                self.finished = event
                self._ended = True
                break
        self._cursor = cursor
        if closed_at is not None and cursor >= closed_at:
            self._ended = True

    async def _wait(self, run: FlowRun) -> None:
        program = run.program
        with anyio.CancelScope(deadline=self._deadline) as scope:
            if run.done or program.phase == "over":
                await run.wait()
            elif program.phase == "running":
                await program.wait_changed()
            else:
                await run.wait_for_events(self._cursor)
        if scope.cancelled_caught:  # our deadline passed (an outer cancellation propagates)
            self.timed_out = True
            self._deadline = math.inf
            run.stop(requested_by="timeout", reason="timeout")

    def _abandon(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self.run is not None and not self._detached:
            self.run.stop(
                requested_by="disconnect", reason="the consumer stopped reading the runtime stream"
            )


class SyncRuntimeStream(SyncRunStream[Any]):
    """The sync face of `RuntimeStream`: iterate it from any thread; the run lives on tether's
    background loop. Made by `flow.get_runtime_stream(...)`."""

    _stream: RuntimeStream

    def __init__(self, stream: RuntimeStream) -> None:
        super().__init__(stream)

    @property
    def run(self) -> FlowRun | None:
        """The run's handle once it started (after the first `next()`), else None."""
        return self._stream.run

    @property
    def finished(self) -> RunFinished | None:
        """The run's `run_finished` event if the stream ended with the run (see `RuntimeStream`)."""
        return self._stream.finished

    @property
    def timed_out(self) -> bool:
        """Whether the stream's timeout stopped the run."""
        return self._stream.timed_out

    def start(self) -> FlowRun:
        """Start the run now, if it has not started; returns its handle."""
        return _portal.call(self._stream.start)

    def send(self, name: str, value: Any = None) -> bool:
        """Send input to the run (see `FlowRun.send`); safe from any thread, even before start."""
        return self._stream.send(name, value)

    def stop(self, *, mode: str = "now", reason: str | None = None) -> bool:
        """Stop the run; safe from any thread (see `RuntimeStream.stop`)."""
        return self._stream.stop(mode=mode, reason=reason)

    def wait(self) -> None:
        """Block until the run has ended (see `RuntimeStream.wait`)."""
        _portal.call(self._stream.wait)
