"""Admission to a thread across processes: the thread's owner key and its FIFO of waiting runs.

`ACQUIRE` reads and changes the owner key and the queue in one atomic step, so two processes can
never both win a thread. `interrupt` and `rollback` jump the queue and stop the owner through
`Stops.request` (wherever the owner runs); `reject` fails unless the owner is already
stopping. A waiter sleeps until a `free` notification for its thread, re-checking at least every
`lease / 3` seconds in case a notification was lost.

Runs queued for `tether worker` are admitted as they are queued (`admit_queued`, the `ENQUEUE`
script, in the queue row's transaction): a busy `reject` thread refuses at once, and an admitted
run holds its place (the thread, or its turn in the FIFO) as a live run with an empty worker until
a worker registers it, so FIFO order does not depend on which worker takes which row first.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import anyio
from redis.exceptions import RedisError

from ..errors import ThreadBusyError
from ..handle import RunHandle
from ..run import MultitaskStrategy
from ..stop import StopRequest
from .redis_context import RedisContext
from .redis_runs import LocalRuns
from .redis_signals import Waiters
from .redis_stops import Stops

__all__ = ["Admission"]

log = logging.getLogger("tether.coordination")


@dataclass(frozen=True, slots=True)
class Admission:
    """Admits runs to their threads (`acquire`, `admit_queued`) for one registry."""

    ctx: RedisContext
    local: LocalRuns
    waiters: Waiters
    stops: Stops  # stops the owner a new run supersedes, wherever it runs

    async def acquire(self, handle: RunHandle, strategy: MultitaskStrategy) -> None:
        """See `RedisRunRegistry.acquire`."""
        ctx = self.ctx
        client = await ctx.client()
        thread, run = handle.thread_id, handle.run_id
        keys = [ctx.key("owner", thread), ctx.key("queue", thread)]
        stopped: set[str] = set()
        try:
            while True:
                freed = self.waiters.freed.setdefault(thread, anyio.Event())
                try:
                    reply = await ctx.scripts.acquire(
                        keys=keys, args=[ctx.prefix, run, strategy], client=client
                    )
                except RedisError as exc:
                    raise ctx.unavailable(f"admit run {run!r} to its thread", exc) from exc
                verdict = reply[0]
                if verdict == "acquired":
                    self.local.owners[thread] = handle
                    return
                if verdict == "busy":
                    raise ThreadBusyError(thread, reply[1])
                blocker = reply[1]
                if blocker and strategy in ("interrupt", "rollback") and blocker not in stopped:
                    stopped.add(blocker)
                    await self.stops.request(
                        StopRequest(
                            mode="now" if strategy == "interrupt" else "rollback",
                            reason=f"superseded by run {run}",
                            requested_by="superseded",
                        ),
                        blocker,
                        None,
                    )
                with anyio.move_on_after(ctx.lease / 3):
                    await freed.wait()
        except BaseException:
            # On failure the run key still goes with release(); ACQUIRE skips dead entries.
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(ctx.timeout),
                contextlib.suppress(RedisError),
            ):
                await client.lrem(ctx.key("queue", thread), 0, run)
            raise

    async def admit_queued(self, run_id: str, thread_id: str, strategy: MultitaskStrategy) -> None:
        """See `RedisRunRegistry.admit_queued`."""
        if strategy not in ("reject", "enqueue"):
            return
        ctx = self.ctx
        client = await ctx.client()
        keys = [
            ctx.key("owner", thread_id),
            ctx.key("queue", thread_id),
            ctx.key("run", run_id),
            ctx.key("truns", thread_id),
            f"{ctx.prefix}:queued",
        ]
        now_ms = int(time.time() * 1000)
        try:
            reply = await ctx.scripts.enqueue(
                keys=keys, args=[ctx.prefix, run_id, thread_id, strategy, now_ms], client=client
            )
        except RedisError as exc:
            raise ctx.unavailable(f"admit queued run {run_id!r} to its thread", exc) from exc
        if reply[0] == "busy":
            raise ThreadBusyError(thread_id, reply[1])
