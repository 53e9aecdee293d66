"""Stop delivery across processes: durable intents plus a pub/sub message.

`REQUEST_STOP` appends the request to the run's intent list (`P:stops:{run}`) and publishes it in
one atomic step. The executing process applies the published message at once (`deliver`) and
re-reads the intent lists of its runs (`apply_intents`) whenever its subscription (re)connects and
on every heartbeat, so a stop sent while it was not listening still lands. A stop for a run of
this process is applied to its token directly, even while Redis is down, and then recorded in
Redis too (best effort), so other processes see the owner stopping.

A stop may also find a run queued for `tether worker` (`PostgresRunQueue`): holding its place on
the thread in Redis (`admit_queued`), or not known to Redis at all. Either way the stop removes
it from the queue if no worker took it yet, and ends it `cancelled` there; otherwise the worker
that took it reads the intent as it registers the run, so it never executes. Redis, then the
queue, then Redis again: a worker registers a run before it deletes its queue row, so a stop
never falls between "queued" and "registered".
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import anyio
import redis.asyncio as aredis
from redis.exceptions import RedisError

from ..handle import RunHandle
from ..stop import StopRequest
from .base import StopResult
from .lost import end_unstarted_run
from .redis_context import RedisContext
from .redis_runs import LocalRuns, RunIndex

__all__ = ["Stops", "decode_stop", "encode_stop"]


@dataclass(frozen=True, slots=True)
class Stops:
    """Delivers stops to runs wherever they execute (`RedisRunRegistry.request_stop`)."""

    ctx: RedisContext
    local: LocalRuns
    index: RunIndex  # gives up the place of a queued run the stop took off the queue

    async def request(
        self, request: StopRequest, run_id: str | None, thread_id: str | None
    ) -> StopResult:
        """See `RedisRunRegistry.request_stop`."""
        ctx = self.ctx
        local = self.local.target(run_id, thread_id)
        if local is not None:
            if not local.token.request_stop(request):
                return StopResult(accepted=False)
            # Other processes must see the owner stopping (a `reject` then waits). While Redis
            # looks down this goes to the background: the stop itself already took effect.
            if ctx.subscribed.is_set():
                await self._publish_intent(local.run_id, request)
            elif ctx.tg is not None:
                ctx.tg.start_soon(self._publish_intent, local.run_id, request)
            return StopResult(accepted=True, run_id=local.run_id, handle=local)
        if run_id is None and thread_id is None:
            return StopResult(accepted=False)
        found, queued_run = await self._stop_remote(request, run_id, thread_id)
        if queued_run is not None:  # queued and holding its place: remove it if not taken yet
            return await self._stop_queued(request, queued_run)
        if not found and ctx.run_queue is not None:
            queued = await ctx.run_queue.cancel(run_id=run_id, thread_id=thread_id)
            if queued is not None:  # it never ran, and now never will
                if ctx.checkpointer is not None:
                    await end_unstarted_run(
                        ctx.checkpointer, queued.run_id, queued.thread_id, stop=request
                    )
                return StopResult(accepted=True, run_id=queued.run_id)
            found, _ = await self._stop_remote(request, run_id, thread_id)  # a worker took it
        if not found:
            return StopResult(accepted=False)
        handle = self.local.runs.get(found)  # registered here meanwhile
        if handle is not None:
            if not handle.token.request_stop(request):
                return StopResult(accepted=False)
            return StopResult(accepted=True, run_id=found, handle=handle)
        return StopResult(accepted=True, run_id=str(found))

    async def _stop_remote(
        self, request: StopRequest, run_id: str | None, thread_id: str | None
    ) -> tuple[str | None, tuple[str, str] | None]:
        """Record and publish the stop for the live run in Redis. Returns its id (None if no
        run matched), and `(run, thread)` when that run is queued and has not started."""
        ctx = self.ctx
        client = await ctx.client()
        try:
            found = await ctx.scripts.request_stop(
                args=[ctx.prefix, run_id or "", thread_id or "", encode_stop(request), ctx.channel],
                client=client,
            )
        except RedisError as exc:
            raise ctx.unavailable("deliver the stop", exc) from exc
        if not found:
            return None, None
        run, worker = str(found[0]), str(found[1])
        if worker:
            return run, None
        thread: str | None = await client.hget(ctx.key("run", run), "thread")  # type: ignore[assignment]  # decode_responses=True
        return run, (run, thread) if thread is not None else None

    async def _stop_queued(self, request: StopRequest, queued: tuple[str, str]) -> StopResult:
        """A stop of a queued run that holds its place on the thread: the intent is recorded
        (a worker that takes the run now applies it as it registers, so it never runs); if the
        run is still in the queue it leaves it and ends `cancelled` here, freeing its place."""
        ctx = self.ctx
        run, thread = queued
        if ctx.run_queue is not None and await ctx.run_queue.cancel(run_id=run) is not None:
            if ctx.checkpointer is not None:
                await end_unstarted_run(ctx.checkpointer, run, thread, stop=request)
            await self.index.forget_queued(run, thread)
        return StopResult(accepted=True, run_id=run)

    async def _publish_intent(self, run: str, request: StopRequest) -> None:
        """Record a locally applied stop in Redis too, so other processes see the owner stopping
        (a `reject` then waits instead of failing). Best effort: the stop already took effect."""
        ctx = self.ctx
        if ctx.redis is None:
            return
        with anyio.move_on_after(ctx.timeout):
            # On failure the run stops regardless; only the hint to other processes is missing.
            with contextlib.suppress(RedisError):
                await ctx.scripts.request_stop(
                    args=[ctx.prefix, run, "", encode_stop(request), ctx.channel],
                    client=ctx.redis,
                )

    def deliver(self, run: str, payload: str) -> None:
        """Apply a published stop (`stop <run> <json>`) to the run, if it executes here."""
        handle = self.local.runs.get(run)
        if handle is not None:
            handle.token.request_stop(decode_stop(payload))

    async def apply_intents(self, client: aredis.Redis, runs: list[RunHandle]) -> None:
        """Apply every stop intent Redis holds for `runs` (one pipelined read)."""
        async with client.pipeline(transaction=False) as pipe:
            for handle in runs:
                pipe.lrange(self.ctx.key("stops", handle.run_id), 0, -1)
            intents = await pipe.execute()
        for handle, requests in zip(runs, intents, strict=True):
            for payload in requests:
                handle.token.request_stop(decode_stop(payload))


def encode_stop(request: StopRequest) -> str:
    return json.dumps(
        {
            "mode": request.mode,
            "reason": request.reason,
            "requested_by": request.requested_by,
            "grace": request.grace,
            "requested_at": request.requested_at,
        },
        separators=(",", ":"),
    )


def decode_stop(payload: str) -> StopRequest:
    data: dict[str, Any] = json.loads(payload)
    return StopRequest(**data)
