"""Server-sent events for runs, with reliable client-disconnect detection.

Wire format. Each event of a run is one SSE message:

    event: message_delta
    id: 7
    data: {"type":"message_delta","run_id":"…","thread_id":"…","seq":7,"content":"Hel",…}

`id` is the event's `seq`, so a client that reconnects with `Last-Event-ID: 7` (or `?after_seq=7`)
gets exactly the events after it. The last message of every run is `event: run_finished`, whose
data carries `status`, `reason` and `run_id`; then the response ends. A comment line (`: ping`) is
sent when the stream has been idle for `ping_interval` seconds, so proxies keep it open.

Mechanism. `EventStreamResponse` is a plain ASGI response (no framework generator machinery). While
it writes, a watcher task waits on `receive()`; ASGI servers deliver `http.disconnect` there the
moment the client goes away — even while the run is silent, e.g. inside a long tool call (uvicorn's
`send()` silently drops data after a disconnect, so a writer alone could not notice). The watcher
then cancels the writer, which is waiting for the next event inside `RunStream`: the stream is
abandoned, and a `RunStream` opened with `on_disconnect="cancel"` stops the run with
`requested_by="disconnect"`; with `"continue"` the run goes on and can be re-joined. Either way the
response's source is closed in a shielded `finally`.

Runs never live in the request's task: they run in tether's host task group, so a request that
ends (or is cancelled) can only *ask* a run to stop, never kill it mid-commit.

Events available at once are written in one `send` (one syscall for a burst of tokens).

Pings. Each response has a pinger task that wakes when the stream could have been idle for
`ping_interval`, and sends `: ping` only if it was. A stream that writes often still wakes it once
per interval, and streams opened together (a burst of clients, a server restart) would all wake at
the same moment every interval: 1,000 wake-ups in one burst stall the event loop for tens of
milliseconds, and every stream's latency with it. So the first check of each stream comes at its
own fraction of the interval (`ping_phase()`: consecutive streams get evenly spread fractions),
and each later one one interval after that stream's own last write. Whether a ping is sent does
not change: only when the stream was idle for the whole interval.

Gathering. A socket write costs far more than a token (a syscall, and on loopback the reader's TCP
processing and wake-up too), so a worker serving many streams spends most of its time writing. So
a run's stream writes text deltas at most once per *interval*: after a write of only text deltas,
the writer waits, on one timer, until one interval after that write, and then sends whatever came
meanwhile (one `send`; `COALESCE_RUN` or more deltas become one frame). While it waits, the writer
is not woken per token (the run appends without notifying anyone), which saves as much again, and
it does not wait for the next token first: one wake-up per write. The interval grows with the
load: it is the number of run streams open in this
process divided by `WRITE_RATE`, at most `flush_interval` (`create_app(sse_flush_interval=...)`).
So all streams together write about `WRITE_RATE` times a second at most, whatever their number:
one stream gathers for 0.2 ms (nothing to notice), 100 for 20 ms, 1,000 for 0.2 s (the default
`flush_interval`). A stream is never more than one interval behind its run, and the first token
after a pause goes out at once.

After a write that held any other kind of event, the next events go out as they come. An event
that comes while the writer waits (the run's end, a tool call) goes out when the wait ends, so
within one interval, except:
- a stop requested through this server (`/cancel`, `/stop`, a WebSocket `stop` frame) calls
  `flush_now()`, which ends the wait at once;
- once a stop was requested (from anywhere), the stream no longer gathers, so the run's last
  events go out as they come.
A stop that reaches the run another way (another process, a superseding run, deleting its
thread) therefore reaches the client up to one interval later than it would without gathering.

Coalescing. A client that is behind (the run logged a backlog while the writer was busy) would
otherwise get one frame per token. When one batch holds `COALESCE_RUN` or more consecutive text
deltas of one message (same message, node and path, no tool-call fragments), they go out as one
`message_delta` frame: its `content` is their text joined, and its `id` and `seq` are those of the
last delta it covers (its `ts` too). So seqs on the wire may skip, but a client that re-joins with
`Last-Event-ID` (the last id it saw) still gets exactly the events after it, and the text it shows
is the same. Shorter runs (the usual live case) keep one frame per event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard

import anyio
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._loop import resolve
from ..events import Event, MessageDeltaEvent, event_json_bytes, replace
from ..handle import RunHandle, RunStream

__all__ = [
    "SSE_SCHEMA",
    "ChunkSource",
    "DeferredJSONResponse",
    "EventStreamResponse",
    "RunEventSource",
    "coalesce_deltas",
    "encode_event",
    "flush_now",
    "gather_interval",
    "parse_last_event_id",
    "ping_phase",
]

# One SSE message as OpenAPI describes a `text/event-stream` item (`data` holds the JSON text).
SSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "id": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
PING_INTERVAL = 15.0  # seconds of silence before a `: ping` comment
COALESCE_RUN = 4  # consecutive text deltas of one message, in one batch, sent as one frame
FLUSH_INTERVAL = 0.2  # seconds: the default longest gathering interval (`create_app`)
WRITE_RATE = 5_000  # writes per second that the run streams of one process aim to stay under
SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


_GOLDEN = (5**0.5 - 1) / 2  # frac(k * golden ratio) spreads any run of consecutive k evenly
_ping_streams = itertools.count()  # event streams started in this process


def ping_phase(k: int | None = None) -> float:
    """The fraction of the ping interval, in [0, 1), at which stream `k` (by default: the next
    stream of this process) first checks whether it is idle. Any N consecutive streams get
    fractions spread over [0, 1) with gaps of less than 3/N (the three-gap theorem)."""
    if k is None:
        k = next(_ping_streams)
    return (k * _GOLDEN) % 1.0


def encode_event(event: Event) -> bytes:
    """One SSE message for a run event (JSON escapes newlines, so `data` is one line)."""
    head = f"event: {event.type}\nid: {event.seq}\ndata: ".encode()
    return head + event_json_bytes(event) + b"\n\n"


def parse_last_event_id(header: str | None, after_seq: int | None) -> int:
    """The seq to resume after: the `Last-Event-ID` header wins over `?after_seq=`; -1 for all."""
    if header is not None:
        try:
            return max(-1, int(header.strip()))
        except ValueError:
            pass
    return max(-1, after_seq) if after_seq is not None else -1


def _joinable(event: Event) -> TypeGuard[MessageDeltaEvent]:
    return type(event) is MessageDeltaEvent and not event.tool_calls


def coalesce_deltas(batch: Sequence[Event], *, run: int = COALESCE_RUN) -> Sequence[Event]:
    """`batch`, with each run of `run` or more consecutive text deltas of one message merged
    into one delta (joined text; the last delta's `seq` and `ts`). Other events are kept as they
    are, in order; a batch without such a run is returned as is."""
    if len(batch) < run:
        return batch
    out: list[Event] = []
    group: list[MessageDeltaEvent] = []

    def flush() -> None:
        if len(group) >= run:
            last = group[-1]
            text = "".join(d.content for d in group)
            out.append(replace(group[0], seq=last.seq, ts=last.ts, content=text))
        else:
            out.extend(group)
        group.clear()

    for event in batch:
        if _joinable(event):
            head = group[0] if group else None
            if head is not None and (
                event.message_id != head.message_id
                or event.node != head.node
                or event.path != head.path
                or event.role != head.role
            ):
                flush()
            group.append(event)
        else:
            flush()
            out.append(event)
    flush()
    return out


class ChunkSource(Protocol):
    """What an `EventStreamResponse` writes: chunks of bytes until `None`."""

    async def next_chunk(self) -> bytes | None:
        """The next bytes to send (`b""` for nothing yet), or None at the end."""
        ...

    async def aclose(self) -> None:
        """The response ended (normally, or because the client went away)."""
        ...


class _Gathering:
    """What the gathering run streams of this process share (see the module docstring)."""

    __slots__ = ("open", "waiting")

    def __init__(self) -> None:
        # Run streams that began writing and are not closed: each counts once, from its first
        # chunk to its `aclose()`.
        self.open = 0
        # The futures of the writers now waiting out their interval, by run. A writer adds its
        # future before it waits and removes it when it wakes, however it wakes.
        self.waiting: dict[RunHandle, set[asyncio.Future[None]]] = {}


_gathering = _Gathering()


def gather_interval(streams: int, limit: float) -> float:
    """The gathering interval of each of `streams` open run streams: at most `limit` seconds."""
    return min(limit, streams / WRITE_RATE)


def flush_now(handle: RunHandle) -> None:
    """End the interval wait of every stream of `handle` in this process, so what the run logged
    goes out at once; call it on the server's loop when a stop was requested."""
    for future in _gathering.waiting.get(handle, ()):
        resolve(future)


async def _wait_until(handle: RunHandle, deadline: float) -> None:
    """Sleep until `deadline` (the running loop's clock), or until `flush_now(handle)`.

    Cancellation: stops waiting; nothing else changes.
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    timer = loop.call_at(deadline, resolve, future)
    waiting = _gathering.waiting.setdefault(handle, set())
    waiting.add(future)
    try:
        await future
    finally:
        timer.cancel()
        waiting.discard(future)
        if not waiting and _gathering.waiting.get(handle) is waiting:
            del _gathering.waiting[handle]


class RunEventSource:
    """A run's events as SSE chunks; closing it abandons the `RunStream` (see its on_disconnect).

    With `coalesce` (the default), a backlog of text deltas of one message goes out as one frame;
    with a `flush_interval` (seconds), text deltas are gathered for up to that long (see the
    module docstring).
    """

    def __init__(
        self,
        stream: RunStream,
        *,
        encode: Callable[[Event], bytes] = encode_event,
        coalesce: bool = True,
        flush_interval: float = 0.0,
    ) -> None:
        self.stream = stream
        self._encode = encode
        self._coalesce = coalesce
        self._limit = flush_interval
        self._counted = False  # True from the first chunk to `aclose()`: in `_gathering.open`
        self._written = -float("inf")  # the loop's clock when the last chunk was handed out
        # True when gathering is on and the last chunk held only text deltas of a live run: the
        # next chunk waits for the interval to end first.
        self._hold_next = False

    async def next_chunk(self) -> bytes | None:
        """The next events as SSE bytes, None at the end.

        Cancellation: stops waiting (the response is ending); events it had taken from the
        stream are not written, and a client that re-joins from its last id gets them.
        """
        if self._hold_next:
            await self._hold()
        batch = await self.stream.next_batch()
        if not batch:
            return None
        if self._limit > 0:
            self._handed_out(batch)
        out: Sequence[Event] = coalesce_deltas(batch) if self._coalesce else batch
        return b"".join(self._encode(event) for event in out)

    async def _hold(self) -> None:
        """Wait until one interval after the previous chunk, unless the run is being stopped;
        `flush_now()` ends the wait at once."""
        handle = self.stream.handle
        assert handle is not None  # `_hold_next` is only set for a live run
        due = self._written + gather_interval(_gathering.open, self._limit)
        if not handle.token.requested and asyncio.get_running_loop().time() < due:
            await _wait_until(handle, due)

    def _handed_out(self, batch: list[Event]) -> None:
        """Note a chunk: when it went out, and whether the next one waits for the interval."""
        if not self._counted:
            self._counted = True
            _gathering.open += 1
        self._written = asyncio.get_running_loop().time()
        self._hold_next = self.stream.handle is not None and all(
            type(event) is MessageDeltaEvent for event in batch
        )

    async def aclose(self) -> None:
        if self._counted:
            self._counted = False
            _gathering.open -= 1
        await self.stream.aclose()


class EventStreamResponse(Response):
    """A `text/event-stream` response that notices a client going away at once.

    See the module docstring. On disconnect the source's current `next_chunk()` is cancelled and
    `aclose()` is called; on a normal end `aclose()` is called too (a no-op for a finished run).
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        source: ChunkSource,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        ping_interval: float | None = PING_INTERVAL,
    ) -> None:
        self.source = source
        self.status_code = status_code
        self.background: BackgroundTask | None = None
        self.ping_interval = ping_interval
        self.init_headers({**SSE_HEADERS, **(headers or {})})
        self.disconnected = False  # set when the client went away before the end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Two tasks may write: the main loop (events) and the pinger (rare comments). ASGI sends
        # must not interleave, but a lock would cost a trip through the event loop per event;
        # instead the pinger only writes when the stream is idle, and the writer waits in the
        # rare case that a ping is being sent.
        last_write = time.monotonic()  # when the last send finished
        writing = False  # True while the writer is inside send()
        pinging: anyio.Event | None = None  # not None while the pinger is inside send()

        async def write(body: bytes, more: bool = True) -> None:
            nonlocal last_write, writing
            while pinging is not None:
                await pinging.wait()
            writing = True
            try:
                await send({"type": "http.response.body", "body": body, "more_body": more})
            finally:
                writing = False
            last_write = time.monotonic()

        async def ping(interval: float) -> None:
            nonlocal pinging, last_write
            wake = last_write + interval * ping_phase()  # see "Pings" in the module docstring
            while True:
                await anyio.sleep(max(0.0, wake - time.monotonic()))
                if not writing and time.monotonic() - last_write >= interval:
                    pinging = done = anyio.Event()
                    try:
                        await send(
                            {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
                        )
                    finally:
                        pinging = None
                        done.set()
                    last_write = time.monotonic()
                wake = last_write + interval

        async def watch(cancel: Callable[[], None]) -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.disconnected = True
                    cancel()
                    return

        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, tg.cancel_scope.cancel)
                if self.ping_interval:
                    tg.start_soon(ping, self.ping_interval)
                try:
                    while (chunk := await self.source.next_chunk()) is not None:
                        if chunk:
                            await write(chunk)
                    await write(b"", more=False)
                except OSError:  # a server that raises on writing to a closed connection
                    self.disconnected = True
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.source.aclose()


class DeferredJSONResponse(Response):
    """A JSON response computed while the client is watched: for `/runs/wait`.

    `compute()` runs while a watcher waits for `http.disconnect`. If the client goes away first,
    `compute()` is cancelled and `on_disconnect()` is called (e.g. to stop the run); nothing is sent.
    Exceptions from `compute()` propagate before the response starts, so the app's error handlers
    still answer them.
    """

    media_type = "application/json"

    def __init__(
        self,
        compute: Callable[[], Awaitable[Any]],
        *,
        on_disconnect: Callable[[], None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._compute = compute
        self._on_disconnect = on_disconnect
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.disconnected = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        result: Any = None
        done = False

        async def watch(cancel: Callable[[], None]) -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.disconnected = True
                    cancel()
                    return

        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope.cancel)
            try:
                result = await self._compute()
                done = True
            except Exception as exc:  # re-raised below, unwrapped, for the app's error handlers
                error = exc
            tg.cancel_scope.cancel()
        if error is not None:
            raise error
        if not done:
            if self._on_disconnect is not None:
                self._on_disconnect()
            return
        body = json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode()
        self.body = body
        self.headers["content-length"] = str(len(body))
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": body})
