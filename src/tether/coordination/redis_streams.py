"""Live events across processes: a Redis Stream per run (`P:events:{run}`).

Each local run's events are pumped into its stream (`EventStreams.pump`), batched per wake-up,
with entry ids `<seq + 1>-0`, so a join on any process reads them live, in order and without gaps
(`RemoteRunStream`), and the sweeper can recover what a dead worker streamed after its last
commit. The stream expires `STREAM_TTL` seconds after the run's terminal event. A re-sent batch
(an earlier try landed, but its reply was lost) is refused by Redis as "equal or smaller" and
counts as sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from redis.exceptions import RedisError

from ..events import Event, RunFinished, event_from_json, event_json_bytes
from ..handle import RunHandle, RunStream
from ..storage.base import Checkpointer
from .redis_context import RETRY, RedisContext
from .redis_runs import LocalRuns

__all__ = ["STREAM_TTL", "EventStreams", "LiveRuns", "RemoteRunStream"]

STREAM_TTL = 300  # seconds a finished run's event stream stays readable in Redis
_JOIN_BLOCK = 1.0  # seconds a join waits on the stream before it re-checks that the run lives


@dataclass(frozen=True, slots=True)
class EventStreams:
    """Writes this process's runs' events to their streams, and reads any run's stream."""

    ctx: RedisContext
    local: LocalRuns  # a pump whose run left it and stays silent gives up

    async def pump(self, handle: RunHandle) -> None:
        """Copy the run's events into its Redis Stream as they come, until its terminal event.

        A run that was released without ever ending (its start failed, e.g. `ThreadBusyError`)
        sends nothing more: the pump gives up once it was released and stayed silent for
        `max(lease / 3, 2 * timeout)` seconds (a run that ends appends its terminal event right
        after its release, which takes at most `timeout`).
        """
        ctx = self.ctx
        key = ctx.key("events", handle.run_id)
        sent = 0
        tries_after_end = 0  # once the run ended, give up after a few failed tries
        while True:
            while len(handle.events) <= sent and not handle.done:
                with anyio.move_on_after(max(ctx.lease / 3, 2 * ctx.timeout)) as idle:
                    await handle.wait_for_events(sent)
                silent = len(handle.events) <= sent and not handle.done
                if idle.cancelled_caught and silent and handle.run_id not in self.local.runs:
                    return
            batch = handle.events[sent:]
            if not batch and handle.done:
                return
            client = ctx.redis
            if client is None:
                return  # closed
            try:
                if len(batch) == 1 and not isinstance(batch[0], RunFinished):
                    # The common case while a run streams; a bare XADD costs redis-py about half
                    # the CPU of a one-command pipeline (bench/cross_worker_stop.py, live events).
                    only = batch[0]
                    await client.xadd(key, {"e": event_json_bytes(only)}, id=f"{only.seq + 1}-0")
                else:
                    async with client.pipeline(transaction=False) as pipe:
                        for event in batch:
                            pipe.xadd(key, {"e": event_json_bytes(event)}, id=f"{event.seq + 1}-0")
                        if isinstance(batch[-1], RunFinished):
                            pipe.expire(key, STREAM_TTL)
                        await pipe.execute()
            except RedisError as exc:
                if "equal or smaller" not in str(exc):  # already there: an earlier try landed
                    tries_after_end += handle.done
                    if tries_after_end > 10:
                        return  # the event log holds the ended run's events; readers use it
                    await anyio.sleep(RETRY)
                    continue
            sent += len(batch)
            if isinstance(batch[-1], RunFinished):
                return

    async def read(
        self, run_id: str, after_seq: int, block: float | None = None
    ) -> list[Event] | None:
        """See `RedisRunRegistry.read_stream`."""
        ctx = self.ctx
        client = await ctx.client()
        key = ctx.key("events", run_id)
        try:
            # Stream entry ids are "<seq+1>-0", so "after seq s" is the entry id "<s+1>-0".
            wait_ms = None if block is None else max(1, int(block * 1000))
            reply: Any = await client.xread({key: f"{after_seq + 1}-0"}, block=wait_ms)
            if not reply and not await client.exists(key):
                return None
        except RedisError as exc:
            raise ctx.unavailable(f"read the events of run {run_id!r}", exc) from exc
        return [
            event_from_json(json.loads(fields["e"]))
            for _, entries in reply
            for _, fields in entries
        ]


class LiveRuns(Protocol):
    """What a `RemoteRunStream` reads through: a `RedisRunRegistry`."""

    async def read_stream(
        self, run_id: str, after_seq: int, block: float | None = None
    ) -> list[Event] | None: ...

    async def is_live(self, run_id: str) -> bool: ...


class RemoteRunStream(RunStream):
    """A join on a run that executes in another process: its Redis Stream, live and in order.

    Gaps (events pumped while Redis was restarting) are filled from the event log. When the
    stream is gone (the run ended long ago, or Redis lost it) the event log serves the rest.
    Closing it never stops the run.
    """

    def __init__(
        self, registry: LiveRuns, checkpointer: Checkpointer, run_id: str, after_seq: int
    ) -> None:
        super().__init__(after_seq=after_seq, on_disconnect="continue")
        self._registry = registry
        self._checkpointer = checkpointer
        self._run_id = run_id
        self._next = after_seq + 1  # the seq this stream returns next
        self._buffer: list[Event] = []

    @property
    def run_id(self) -> str | None:
        return self._run_id

    async def __anext__(self) -> Event:
        if not self._buffer:
            self._buffer = await self.next_batch()
            if not self._buffer:
                raise StopAsyncIteration
        return self._buffer.pop(0)

    async def next_batch(self) -> list[Event]:
        """The events available now (at least one, in seq order, no gaps); [] after the end."""
        if self._buffer:
            batch, self._buffer = self._buffer, []
            return batch
        while not self._finished:
            events = await self._registry.read_stream(self._run_id, self._next - 1, _JOIN_BLOCK)
            ended = events == [] and not await self._registry.is_live(self._run_id)
            if events is None or ended or (events and events[0].seq > self._next):
                events = await self._from_log(events or [])
                if events is None:
                    continue
            batch = self._take(events)
            if batch:
                return batch
        return []

    async def _from_log(self, streamed: list[Event]) -> list[Event] | None:
        """Logged events from `_next` on, merged with `streamed`; None while the run is live but
        neither source has them yet (its stream is being created)."""
        logged = await self._checkpointer.read_events(self._run_id, after_seq=self._next - 1)
        top = logged[-1].seq if logged else self._next - 1
        merged = [*logged, *(e for e in streamed if e.seq > top)]
        if merged or not await self._registry.is_live(self._run_id):
            if not merged:
                self._finished = True  # nothing after `_next`, and the run has ended
            return merged
        return None

    def _take(self, events: list[Event]) -> list[Event]:
        batch = []
        for event in events:
            if event.seq < self._next:
                continue
            batch.append(event)
            self._next = event.seq + 1
            if isinstance(event, RunFinished):
                self._finished = True
                break
        return batch
