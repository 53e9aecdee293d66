"""Leases: each process heartbeats, and any live process sweeps the runs of a dead one.

Every process renews a lease key (`lease` seconds, every `lease / 3`, also while idle) and lists
its live runs under its worker id. On each beat it also re-reads its runs' stop intents and
inboxes, retries owed releases, and sweeps: a worker with live runs whose lease lapsed is dead;
the first process to claim it (`P:swept:{worker}`, set NX) marks its runs `failed` /
`worker_lost` through `lost.py`, keeping what they streamed, and releases their threads. A kill -9
is noticed within `lease + lease / 3`.

A process that finds its own lease gone either lost its keys to a Redis restart (it writes its
runs back) or was swept while stalled (its `swept` key is set; it stops its runs, whose threads
were handed on).

The sweep also frees the places of runs queued for `tether worker` whose queue row never
committed (the queueing process died between admitting the run and committing the row).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import redis.asyncio as aredis
from redis.exceptions import RedisError

from ..errors import TetherError
from ..stop import StopRequest
from .lost import end_unstarted_run, recover_lost_run
from .redis_context import RedisContext
from .redis_runs import LocalRuns, RunIndex
from .redis_streams import EventStreams

__all__ = ["QUEUE_ROW_LOST", "Heartbeat", "Sweeper"]

log = logging.getLogger("tether.coordination")

QUEUE_ROW_LOST = "its queue entry was never stored (the process that queued it failed)"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The loop that keeps this process's lease, and what it does on every beat."""

    ctx: RedisContext
    local: LocalRuns
    index: RunIndex
    catch_up: Callable[[aredis.Redis], Awaitable[None]]  # applies local runs' intents and inputs
    sweep: Callable[[], Awaitable[object]]  # the registry's sweep

    async def run(self) -> None:
        """Every `lease / 3`: renew the lease, re-read stop intents, retry owed releases, sweep."""
        while True:
            client = self.ctx.redis
            if client is None:
                return
            try:
                await self._beat(client)
            except RedisError as exc:
                log.warning("Redis heartbeat failed (runs keep running): %s", exc)
            await anyio.sleep(self.ctx.lease / 3)

    async def _beat(self, client: aredis.Redis) -> None:
        ctx = self.ctx
        lease_key, lease_ms = ctx.key("lease", ctx.worker_id), ctx.lease_ms
        # Renewed even while idle, so a live process is never swept (only a stalled one).
        if not await client.set(lease_key, "1", px=lease_ms, xx=True):
            await self._on_lease_lost(client)
            await client.set(lease_key, "1", px=lease_ms)
        await self.catch_up(client)
        await self.index.retry_releases(client)
        await self.sweep()

    async def _on_lease_lost(self, client: aredis.Redis) -> None:
        """Our lease lapsed: either Redis restarted (write our runs back) or a sweeper took our
        runs for lost (stop them: their threads were handed on)."""
        swept = await client.delete(self.ctx.key("swept", self.ctx.worker_id))
        for handle in list(self.local.runs.values()):
            if swept:
                handle.token.request_stop(
                    StopRequest(
                        reason="lease lost: another process recovered this run",
                        requested_by="shutdown",
                    )
                )
            else:
                await self.index.write(client, handle, holds=self.local.holds(handle))


@dataclass(frozen=True, slots=True)
class Sweeper:
    """Recovers the runs of dead workers, and frees the places of lost queued runs."""

    ctx: RedisContext
    index: RunIndex
    streams: EventStreams  # what a dead worker streamed after its last commit

    async def sweep(self, *, queued_stale: float) -> list[str]:
        """See `RedisRunRegistry.sweep`; queued runs are checked once `queued_stale` seconds old."""
        ctx = self.ctx
        client = ctx.redis
        if client is None:
            return []
        recovered: list[str] = []
        workers: set[str] = await client.smembers(f"{ctx.prefix}:workers")  # type: ignore[assignment]  # decode_responses=True
        for worker in workers:
            if worker == ctx.worker_id or await client.exists(ctx.key("lease", worker)):
                continue
            claimed = await client.set(
                ctx.key("swept", worker), ctx.worker_id, nx=True, px=int(ctx.lease * 3000)
            )
            if not claimed:
                continue
            runs: set[str] = await client.smembers(ctx.key("wruns", worker))  # type: ignore[assignment]  # decode_responses=True
            for run in runs:
                thread: str | None = await client.hget(ctx.key("run", run), "thread")  # type: ignore[assignment]  # decode_responses=True
                if thread is None:
                    await client.srem(ctx.key("wruns", worker), run)
                    continue
                if ctx.checkpointer is not None:
                    streamed = await self.streams.read(run, -1) or []
                    await recover_lost_run(ctx.checkpointer, run, streamed)
                await self.index.erase(client, run, thread, worker)
                recovered.append(run)
            await client.srem(f"{ctx.prefix}:workers", worker)
        await self._sweep_queued(client, queued_stale)
        return recovered

    async def _sweep_queued(self, client: aredis.Redis, queued_stale: float) -> None:
        """Free the places of queued runs that are neither in the run queue nor started: the
        process that queued one died (or failed) between admitting it and committing its queue
        row. Looked at once they are `queued_stale` seconds old, then again every as long."""
        ctx = self.ctx
        if ctx.run_queue is None:
            return
        key, now = f"{ctx.prefix}:queued", time.time()
        stale: list[str] = await client.zrangebyscore(  # type: ignore[assignment]  # decode_responses=True
            key, "-inf", int((now - queued_stale) * 1000), start=0, num=100
        )
        for run in stale:
            try:
                if await ctx.run_queue.contains(run):
                    await client.zadd(key, {run: int(now * 1000)})  # waits for a worker
                    continue
                fields: list[str | None] = await client.hmget(  # type: ignore[assignment]  # decode_responses=True
                    ctx.key("run", run), ["thread", "worker"]
                )
                thread, worker = fields
                if thread is None or worker:  # released, or a worker started it
                    await client.zrem(key, run)
                    continue
                if ctx.checkpointer is not None:
                    record = await ctx.checkpointer.get_run(run)
                    if record is not None and record.status == "pending":
                        await end_unstarted_run(ctx.checkpointer, run, thread, error=QUEUE_ROW_LOST)
                await self.index.erase(client, run, thread, queued_only=True)
            except TetherError as exc:  # the database is down: look again next sweep
                log.warning("could not check queued run %s: %s", run, exc)
                return
