"""A live run (`RunHandle`) and the streams that read its events (`RunStream`, `SyncRunStream`).

Design note. A run appends its events to one in-memory list; every reader keeps its own cursor into
that list, so any number of readers (the caller, a re-joined client, the server's SSE stream) see the
same events in the same order, and a reader can start after any `seq`. Appending never blocks: a slow
reader does not slow the run. Readers wait on the run's one `RunLoop` signal (`_loop.py`), from any
event loop or thread: appending notifies it only when a reader waits, and a reader takes every event
already logged per wake-up, so a burst of events costs one wake-up. The end of the run sets the same
object's flag. A run nobody waits on allocates nothing for waiting.

A stream that is abandoned (closed, garbage-collected, or cancelled while waiting) asks the run to
stop with `requested_by="disconnect"`, unless it was opened with `on_disconnect="continue"`.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from . import _portal
from ._loop import RunLoop, in_event_loop
from .events import Event, MessageDeltaEvent, RunFinished, RunStatus
from .run import OnDisconnect, RunRecord
from .stop import StopRequest, StopToken

__all__ = ["AbandonableStream", "RunHandle", "RunStream", "SyncRunStream", "TextKey"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

TextKey = tuple[str | None, str]  # `emit_text`'s (node, message_id)
_NO_SPAN = object()  # no text span is open


class RunHandle:
    """One run while it executes: its record, stop token and event buffer.

    Obtain it from `app.start()` / `app.astart()`. It stays usable after the run ended. One per
    run, so it has slots (a subclass may add a `__dict__`).
    """

    __slots__ = (
        "_loop",
        "_run_id",
        "_span",
        "_spans",
        "_thread_id",
        "error",
        "events",
        "observer",
        "record",
        "token",
        "values",
    )

    def __init__(self, record: RunRecord) -> None:
        self.record = record  # mutated only by the engine, on the run's loop
        self._run_id, self._thread_id = record.run_id, record.thread_id  # fixed for the run
        self.token = StopToken()
        # The run's loop: notified when events are appended; its flag is set once the terminal
        # event is appended and the thread released (any thread or loop may wait on it).
        self._loop: RunLoop = self.token.loop
        # Every event of the run so far, in seq order; append-only, ends with one RunFinished.
        self.events: list[Event] = []
        # What the run produced: its final state values, or the error that failed it.
        self.values: dict[str, Any] | None = None
        self.error: BaseException | None = None
        # Called with each event `emit` appends (tracing, `tether.tracing`); None: no one.
        self.observer: Callable[[Event], None] | None = None
        # Text spans (see `text_spans`): the flat list of their start and end seqs (the last one
        # open while its length is odd), and the `emit_text` key of the open one.
        self._spans: list[int] | None = None
        self._span: object = _NO_SPAN

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def thread_id(self) -> str:
        return self.record.thread_id

    @property
    def status(self) -> RunStatus:
        """`pending`, `running`, or the terminal status once the run ended."""
        return self.record.status

    def snapshot(self) -> RunRecord:
        """A copy of the run record as of now, with a stop that was requested but has not taken
        effect yet already shown (`stop_requested_at`, mode, reason, who)."""
        record = self.record.model_copy()
        req = self.token.request
        if req is not None and record.stop_requested_at is None:
            record.stop_requested_at = req.requested_at
            record.stop_mode = self.token.mode
            record.stop_reason = req.reason
            record.stop_requested_by = req.requested_by
        return record

    @property
    def done(self) -> bool:
        """Whether the run sent its terminal event."""
        return self._loop.flag

    def emit(self, cls: type[Any], /, **fields: Any) -> Event | None:
        """Append an event of type `cls`; dropped (returns None) once the run has finished.

        Must be called on the run's loop.
        """
        if self.token.finished:
            return None
        if self._span is not _NO_SPAN:
            self._end_span()
        event: Event = cls(
            run_id=self.record.run_id,
            thread_id=self.record.thread_id,
            seq=len(self.events),
            ts=time.time(),
            **fields,
        )
        self.events.append(event)
        if self._loop.waiters:
            self._loop.notify()
        if self.observer is not None:
            self.observer(event)
        return event

    def emit_text(self, key: TextKey, content: str) -> None:
        """`emit(MessageDeltaEvent, node=..., message_id=..., content=...)` for a text token.

        Token streaming is the hot path: one call per token. `key` is `(node, message_id)`; pass
        the same tuple object for every token of one message, so that they form one text span
        (see `text_spans`). Must be called on the run's loop.
        """
        events = self.events
        if key is not self._span:  # a new span; or the run finished, which ends every span
            if self.token.finished:
                return
            self._start_span(key)
        node, message_id = key
        events.append(
            MessageDeltaEvent(
                run_id=self._run_id,
                thread_id=self._thread_id,
                seq=len(events),
                ts=time.time(),
                node=node,
                message_id=message_id,
                content=content,
            )
        )
        if self._loop.waiters:
            self._loop.notify()

    def finish_events(self) -> None:
        """From here on no stop is accepted and no event is logged but the terminal one (the
        engine calls this once it decided how the run ends)."""
        with self.token._lock:
            self.token.finished = True
        if self._span is not _NO_SPAN:
            self._end_span()

    def text_spans(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The text spans among `events[start:stop]`, as `(first, end)` indexes into that slice.

        A text span is a run of two or more consecutive events logged by `emit_text` with one
        key (so for one node and one message): they differ only in `seq`, `ts` and `content`.
        Storage keeps each as one row without comparing its events (`tether.storage.EventBatch`).
        """
        flat = self._spans
        if not flat:
            return []
        spans = []
        for k in range(bisect_right(flat, start) // 2 * 2, len(flat), 2):
            first = max(flat[k], start)
            if first >= stop:
                break
            end = min(flat[k + 1], stop) if k + 1 < len(flat) else stop  # else: still open
            if end - first > 1:
                spans.append((first - start, end - start))
        return spans

    def _start_span(self, key: TextKey) -> None:
        spans = self._spans
        if spans is None:
            spans = self._spans = []
        if len(spans) % 2:
            spans.append(len(self.events))
        spans.append(len(self.events))
        self._span = key

    def _end_span(self) -> None:
        assert self._spans is not None
        self._spans.append(len(self.events))
        self._span = _NO_SPAN

    def _finish(self) -> None:
        """Mark the run ended and wake every reader and waiter; the terminal event is logged."""
        self._loop.set()

    async def wait_for_events(self, count: int) -> None:
        """Wait until more than `count` events exist, or the run ended (returns at once if so).

        Cancellation: stops waiting; nothing else changes.
        """
        if len(self.events) <= count:
            await self._loop.wait_change()

    async def wait(self) -> None:
        """Wait until the run has ended, from any event loop. Cancelling the wait does not affect
        the run."""
        await self._loop.wait()

    def request_stop(
        self,
        *,
        mode: str = "now",
        reason: str | None = None,
        grace: float | None = None,
        requested_by: str = "user",
    ) -> bool:
        """Ask the run to stop and return at once; safe from any thread and any loop.

        Returns False if the run had already ended. The engine and the streams use this.
        """
        req = StopRequest(mode=mode, reason=reason, grace=grace, requested_by=requested_by)  # type: ignore[arg-type]  # checked in StopRequest
        return self.token.request_stop(req)

    def stop(
        self,
        *,
        mode: str = "now",
        reason: str | None = None,
        grace: float | None = None,
        requested_by: str = "user",
        wait: bool = True,
    ) -> bool:
        """Stop the run, as `App.stop(run_id=...)` does; safe from any thread.

        Returns True if the run was active and accepted the stop, False if it had already ended.
        With `wait=True` it returns once the run has ended and its thread accepts a new run, except
        inside a running event loop, where blocking would freeze the loop: there it does not wait
        (use `await handle.astop()`).
        """
        stopped = self.request_stop(
            mode=mode, reason=reason, grace=grace, requested_by=requested_by
        )
        if stopped and wait and not in_event_loop():
            self._loop.wait_sync()
        return stopped

    async def astop(
        self,
        *,
        mode: str = "now",
        reason: str | None = None,
        grace: float | None = None,
        requested_by: str = "user",
        wait: bool = True,
    ) -> bool:
        """Stop the run, as `App.astop(run_id=...)` does; with `wait=True` return once it has
        ended. Cancelling the wait leaves the stop requested."""
        stopped = self.request_stop(
            mode=mode, reason=reason, grace=grace, requested_by=requested_by
        )
        if stopped and wait:
            await self.wait()
        return stopped

    async def result(self) -> dict[str, Any]:
        """Wait for the run and return its final state values.

        Raises `RunFailedError` (or another `RunError`) if it failed, and `RunCancelledError` if it
        was stopped.
        """
        await self.wait()
        if self.error is not None:
            raise self.error
        assert self.values is not None
        return self.values

    def events_after(
        self, after_seq: int = -1, *, on_disconnect: OnDisconnect = "continue"
    ) -> RunStream:
        """A stream of this run's events with `seq > after_seq` (a re-join)."""
        return RunStream(handle=self, after_seq=after_seq, on_disconnect=on_disconnect)

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id} thread={self.thread_id} status={self.status}>"


class AbandonableStream:
    """The ways a reader leaves a run stream early: `aclose()`, leaving `async with`, or dropping
    it (breaking out of `async for`). Each is a disconnect: the subclass's `_abandon()` decides
    whether that stops the run. `async with` starts the run on entry.
    """

    async def start(self) -> Any:
        """Start the run now, if it has not started; returns its handle."""
        raise NotImplementedError

    def _abandon(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop reading; before the end this stops the run, unless it was started to continue
        without a reader (`on_disconnect="continue"`, or a detached flow stream)."""
        self._abandon()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._abandon()

    def __del__(self) -> None:
        # The consumer broke out of `async for` and dropped us: that is a disconnect.
        self._abandon()


class RunStream(AbandonableStream):
    """An async iterator over a run's events; it ends after the `run_finished` event.

    Starting is lazy: the run starts on the first `__anext__` (or `__aenter__`). Closing the stream
    before the end, or being cancelled while waiting for an event, stops the run when
    `on_disconnect="cancel"` (the default for `astream`), with `requested_by="disconnect"`.
    """

    def __init__(
        self,
        *,
        start: Callable[[], Awaitable[RunHandle]] | None = None,
        handle: RunHandle | None = None,
        after_seq: int = -1,
        on_disconnect: OnDisconnect = "cancel",
        events: list[Event] | None = None,
        join: Callable[[], Awaitable[RunHandle | RunStream | list[Event]]] | None = None,
    ) -> None:
        self._start = start
        # A re-join not resolved yet: finds the live handle, a stream of a run that executes in
        # another process, or the finished run's logged events.
        self._join = join
        self._remote: RunStream | None = None  # set when the re-join found a remote run
        self.handle = handle
        # The live run's event list while this stream reads it; () before the run is attached
        # and once the stream ended (so the hot path in `__anext__` needs one length check).
        self._live: Sequence[Event] = () if handle is None else handle.events
        self._cursor = after_seq + 1
        self._on_disconnect = on_disconnect
        self._finished = False
        self._logged = events  # a finished run's logged events, when there is no live handle

    @property
    def run_id(self) -> str | None:
        """The run id once the run has started."""
        if self._remote is not None:
            return self._remote.run_id
        return self.handle.run_id if self.handle else None

    async def start(self) -> RunHandle:
        """Start the run now, if it has not started; returns its handle."""
        if self.handle is None:
            assert self._start is not None
            self._attach(await self._start())
        assert self.handle is not None
        return self.handle

    def _attach(self, handle: RunHandle) -> None:
        """Read `handle`'s events from now on (unless this stream already ended)."""
        self.handle = handle
        if not self._finished:
            self._live = handle.events

    async def _resolve(self) -> Self:
        """Resolve a re-join: attach the live run, or load the finished run's event log."""
        if self._join is not None:
            found = await self._join()
            self._join = None
            if isinstance(found, RunHandle):
                self._attach(found)
            elif isinstance(found, RunStream):
                self._remote = found
            else:
                self._logged = found
        return self

    def __await__(self) -> Generator[Any, None, Self]:
        # `await app.ajoin(...)` resolves the run first, so an unknown run raises right there.
        return self._resolve().__await__()

    async def __aenter__(self) -> Self:
        if self._join is not None:
            return await self._resolve()
        return await super().__aenter__()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        live, cursor = self._live, self._cursor
        if cursor < len(live):  # the hot path: the event is already logged, take it
            event = live[cursor]
            self._cursor = cursor + 1
            if type(event) is RunFinished:
                self._end()
            return event
        return await self._next_event()

    def _end(self) -> None:
        self._finished = True
        self._live = ()

    async def _next_event(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        if self._join is not None:
            await self._resolve()
        if self._remote is not None:
            return await self._next_remote(self._remote)
        if self._logged is not None:
            return self._next_logged()
        handle = self.handle or await self.start()
        try:
            while len(handle.events) <= self._cursor:
                if handle.done:  # a cursor past the end of an ended run: end with its terminal
                    self._end()  # event, as a re-join from the event log does
                    return handle.events[-1]
                await handle.wait_for_events(self._cursor)
        except BaseException:
            self._abandon()
            raise
        event = handle.events[self._cursor]
        self._cursor += 1
        if isinstance(event, RunFinished):
            self._end()
        return event

    async def _next_remote(self, remote: RunStream) -> Event:
        try:
            event = await remote.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        if isinstance(event, RunFinished):
            self._end()
        return event

    def _next_logged(self) -> Event:
        assert self._logged is not None
        rest = [e for e in self._logged if e.seq >= self._cursor]
        if not rest:
            self._end()
            # A re-join always ends with the terminal event, even one logged with a seq at or
            # below the cursor (a crashed run's recovered end reuses the first unlogged seq).
            final = next((e for e in self._logged if isinstance(e, RunFinished)), None)
            if final is None:
                raise StopAsyncIteration
            return final
        self._cursor = rest[0].seq + 1
        if isinstance(rest[0], RunFinished):
            self._end()
        return rest[0]

    async def next_batch(self) -> list[Event]:
        """All events available now (at least one), for the sync wrapper; [] at the end."""
        try:
            first = await self.__anext__()
        except StopAsyncIteration:
            return []
        batch = [first]
        handle = self.handle
        if handle is not None and not self._finished:
            more = handle.events[self._cursor :]
            for event in more:
                batch.append(event)
                self._cursor += 1
                if isinstance(event, RunFinished):
                    self._end()
                    break
        return batch

    def _abandon(self) -> None:
        if self._finished:
            return
        self._end()
        if self.handle is not None and self._on_disconnect == "cancel":
            self.handle.request_stop(requested_by="disconnect", reason="the client disconnected")


class _Batches(Protocol[T_co]):
    """What a sync stream wraps: an async stream that hands out what is available in batches."""

    @property
    def run_id(self) -> str | None: ...

    async def next_batch(self) -> Sequence[T_co]: ...

    def _abandon(self) -> None: ...


class SyncRunStream(Iterator[T]):
    """The sync face of an async run stream: iterate it from any thread; runs live on tether's
    background loop. Each `next()` that finds its buffer empty fetches every item available."""

    def __init__(self, stream: _Batches[T]) -> None:
        self._stream = stream
        self._buffer: Sequence[T] = ()
        self._pos = 0

    @property
    def run_id(self) -> str | None:
        return self._stream.run_id

    def __next__(self) -> T:
        if self._pos >= len(self._buffer):
            self._buffer = _portal.call(self._stream.next_batch)
            self._pos = 0
            if not self._buffer:
                raise StopIteration
        item = self._buffer[self._pos]
        self._pos += 1
        return item

    def close(self) -> None:
        """Stop reading; before the end this stops the run, unless it was started with
        `on_disconnect="continue"` (or detached)."""
        self._stream._abandon()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
