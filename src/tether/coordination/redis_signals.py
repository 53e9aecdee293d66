"""The registry's pub/sub channel (`P:signal`): the subscription, and who waits for what on it.

Messages are `stop <run> <json>`, `input <run>` and `free <thread> <run>` (published by the Lua
scripts in `redis_scripts.py`). `Subscription.listen` hands each one to the registry and, every
time the subscription is (re)established, first resyncs: a message published while it was down is
lost, so the registry writes its runs back, re-reads their intents and inboxes, and wakes every
waiter (who then re-checks). `Waiters` are the local tasks blocked until a `free` for a thread (an
admission) or a run (a `wait_released`); each also re-checks on its own every `lease / 3`, so a
lost notification only delays it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import redis.asyncio as aredis
from redis.exceptions import RedisError

from .redis_context import RETRY, RedisContext

__all__ = ["Subscription", "Waiters"]

log = logging.getLogger("tether.coordination")


class Waiters:
    """Events that the next `free` notification of a thread or a run sets."""

    def __init__(self) -> None:
        # thread_id -> event that the next `free` notification of the thread pops and sets.
        self.freed: dict[str, anyio.Event] = {}
        self.ended: dict[str, anyio.Event] = {}  # run_id -> set when that run is released

    def on_free(self, thread: str, run: str) -> None:
        for waiters, name in ((self.freed, thread), (self.ended, run)):
            event = waiters.pop(name, None)
            if event is not None:
                event.set()

    def wake_all(self) -> None:
        """Wake every waiter, so each checks again (a notification may have been missed)."""
        for waiters in (self.freed, self.ended):
            for event in waiters.values():
                event.set()
            waiters.clear()


@dataclass(frozen=True, slots=True)
class Subscription:
    """The listening loop on the registry's channel."""

    ctx: RedisContext
    on_message: Callable[[str], None]  # handles one published message
    resync: Callable[[aredis.Redis], Awaitable[None]]  # catches up on what may have been missed

    async def listen(self) -> None:
        """Apply published stops and wake waiters; resubscribe (and resync) after any failure."""
        ctx = self.ctx
        while True:
            client = ctx.redis
            if client is None:
                return
            try:
                pubsub = client.pubsub()
                async with pubsub:
                    await pubsub.subscribe(ctx.channel)
                    async for message in pubsub.listen():
                        if message["type"] == "subscribe":
                            await self.resync(client)
                            ctx.subscribed.set()
                        elif message["type"] == "message":
                            self.on_message(message["data"])
            except RedisError as exc:
                if ctx.subscribed.is_set():
                    log.warning("Redis subscription lost (reconnecting): %s", exc)
                    ctx.subscribed = anyio.Event()
                await anyio.sleep(RETRY)
