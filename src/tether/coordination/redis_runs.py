"""Who runs what: this process's runs in memory, and their mirror in Redis.

`LocalRuns` holds the handles of the runs this process executes, as `LocalRunRegistry` does.
`RunIndex` mirrors them in Redis (`RESTORE`: the run key, the thread's and the worker's run sets,
the worker's lease, the thread's owner key) and erases them there (`RELEASE`, which also publishes
`free`, so waiters for the thread or the run wake up). A release that cannot reach Redis is owed:
it stays in `LocalRuns.unreleased` and the heartbeat retries it (`retry_releases`) until it lands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import redis.asyncio as aredis
from redis.exceptions import RedisError

from ..handle import RunHandle
from .redis_context import RedisContext

__all__ = ["LocalRuns", "RunIndex"]

log = logging.getLogger("tether.coordination")


class LocalRuns:
    """The runs of this process that the registry tracks, and the threads they hold."""

    def __init__(self) -> None:
        # Every registered, not yet released run of this process.
        self.runs: dict[str, RunHandle] = {}
        # thread_id -> the local run that holds the thread in Redis.
        self.owners: dict[str, RunHandle] = {}
        # Runs whose release could not reach Redis; retried by the heartbeat until it succeeds.
        self.unreleased: dict[str, RunHandle] = {}

    def holds(self, handle: RunHandle) -> bool:
        """Whether `handle` holds its thread."""
        return self.owners.get(handle.thread_id) is handle

    def target(self, run_id: str | None, thread_id: str | None) -> RunHandle | None:
        """The local run a stop by `run_id` and/or `thread_id` is for, or None."""
        if run_id is not None:
            handle = self.runs.get(run_id)
            if handle is not None and thread_id is not None and handle.thread_id != thread_id:
                return None
            return handle
        if thread_id is not None:
            return self.owners.get(thread_id)
        return None

    def forget(self, handle: RunHandle) -> None:
        """Drop the run and, if it holds one, its thread."""
        self.runs.pop(handle.run_id, None)
        if self.holds(handle):
            del self.owners[handle.thread_id]

    def size(self) -> int:
        return len(self.runs) + len(self.owners) + len(self.unreleased)


@dataclass(frozen=True, slots=True)
class RunIndex:
    """The live runs in Redis: written by the process that runs them, erased on release."""

    ctx: RedisContext
    local: LocalRuns

    async def write(self, client: aredis.Redis, handle: RunHandle, *, holds: bool) -> list[str]:
        """Write the local run to Redis; returns its stop intents (JSON requests)."""
        ctx = self.ctx
        run, thread = handle.run_id, handle.thread_id
        keys = [
            ctx.key("run", run),
            ctx.key("truns", thread),
            ctx.key("wruns", ctx.worker_id),
            f"{ctx.prefix}:workers",
            ctx.key("lease", ctx.worker_id),
            ctx.key("owner", thread),
            f"{ctx.prefix}:queued",
            ctx.key("stops", run),
        ]
        args: list[str | int] = [run, thread, ctx.worker_id, ctx.lease_ms, "1" if holds else "0"]
        intents: list[str] = await ctx.scripts.restore(keys=keys, args=args, client=client)
        return intents

    async def write_all(self, client: aredis.Redis) -> None:
        """Write every local run back (Redis may have restarted and lost them)."""
        for handle in list(self.local.runs.values()):
            await self.write(client, handle, holds=self.local.holds(handle))

    async def erase(
        self,
        client: aredis.Redis,
        run: str,
        thread: str,
        worker: str | None = None,
        *,
        queued_only: bool = False,
    ) -> None:
        """Erase the run from Redis (of `worker`, by default this process), freeing its thread
        or its place in the thread's queue. With `queued_only`, only while no worker started it.
        """
        ctx = self.ctx
        keys = [
            ctx.key("owner", thread),
            ctx.key("queue", thread),
            ctx.key("run", run),
            ctx.key("truns", thread),
            ctx.key("wruns", worker or ctx.worker_id),
            ctx.key("stops", run),
            ctx.key("inbox", run),
            f"{ctx.prefix}:queued",
        ]
        args = [run, thread, ctx.channel, "1" if queued_only else "0"]
        await ctx.scripts.release(keys=keys, args=args, client=client)

    async def release(self, handle: RunHandle) -> None:
        """Forget the run here and erase it in Redis; on failure the release is owed (retried
        by `retry_releases`). Never raises; shielded, with the registry's timeout."""
        self.local.forget(handle)
        client = self.ctx.redis
        if client is None:
            return
        self.local.unreleased[handle.run_id] = handle
        if await self._erase_now(
            client, handle.run_id, handle.thread_id, "could not release run %s in Redis (retrying)"
        ):
            self.local.unreleased.pop(handle.run_id, None)

    async def forget_queued(self, run_id: str, thread_id: str) -> None:
        """See `RedisRunRegistry.forget_queued`. Never raises; shielded, with the registry's
        timeout."""
        client = self.ctx.redis
        if client is not None:
            await self._erase_now(
                client, run_id, thread_id, "could not free the place of queued run %s", queued=True
            )

    async def _erase_now(
        self, client: aredis.Redis, run: str, thread: str, failed: str, *, queued: bool = False
    ) -> bool:
        """`erase`, shielded from cancellation and bounded by the registry's timeout; True once
        done. A Redis error is logged (`failed % run`, then the error), not raised."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.ctx.timeout):
            try:
                await self.erase(client, run, thread, queued_only=queued)
            except RedisError as exc:
                log.warning(f"{failed}: %s", run, exc)
                return False
            return True
        return False

    async def retry_releases(self, client: aredis.Redis) -> None:
        """Erase the runs whose release is owed. Raises `RedisError` (the rest stay owed)."""
        for run, handle in list(self.local.unreleased.items()):
            await self.erase(client, run, handle.thread_id)
            self.local.unreleased.pop(run, None)

    async def exists(self, run_id: str) -> bool:
        """Whether the run is live in Redis (registered, or queued and holding its place).

        Raises `CoordinationUnavailableError` when Redis cannot be reached.
        """
        client = await self.ctx.client()
        try:
            return bool(await client.exists(self.ctx.key("run", run_id)))
        except RedisError as exc:
            raise self.ctx.unavailable(f"look up run {run_id!r}", exc) from exc
