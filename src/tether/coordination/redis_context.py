"""What the parts of one `RedisRunRegistry` share: its identity in Redis, its client, its stores.

The client is created on first use (`client()`) and belongs to the event loop it was created on
(redis-py connections belong to one loop): the context records that loop's token and thread, so
sync faces can hop onto it (`RedisRunRegistry.call_sync`). The first use also starts the
registry's background loops in that loop's host task group, and waits (at most `timeout`) until
the subscription is up, so stops published from then on reach this process. `aclose()` cancels
the loops and closes the client.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import redis.asyncio as aredis
from anyio.abc import TaskGroup

from .._host import current_host
from ..errors import CoordinationUnavailableError
from ..storage.base import Checkpointer
from .redis_scripts import Scripts

if TYPE_CHECKING:
    from ..storage.run_queue import PostgresRunQueue

__all__ = ["RETRY", "RedisContext"]

RETRY = 0.2  # seconds between reconnection attempts of the background loops


class RedisContext:
    """One registry's settings, stores and Redis client, shared by all its parts."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        lease: float,
        timeout: float,
        checkpointer: Checkpointer | None,
        run_queue: PostgresRunQueue | None,
        background: Callable[[], Awaitable[None]],
    ) -> None:
        self.url = url
        self.prefix = prefix  # of every key and of the channel
        self.lease = lease  # seconds a silent worker's runs survive it
        self.timeout = timeout  # seconds one Redis command may take
        # Where a stop of an unstarted run and a dead worker's runs are recorded; may be attached
        # after construction (`RedisRunRegistry.attach`), so parts read it when they need it.
        self.checkpointer = checkpointer
        self.run_queue = run_queue  # the queue of `tether worker` runs, or None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.channel = f"{prefix}:signal"
        self.redis: aredis.Redis | None = None  # the client once started; None again once closed
        self._scripts: Scripts | None = None  # registered on the client, set just before `redis`
        self.tg: TaskGroup | None = None  # the host task group of our loop, once started
        # The loop the client belongs to (its token and thread), once started; never changes.
        self.token: anyio.lowlevel.EventLoopToken | None = None
        self.loop_thread: int | None = None
        # Set while the subscription is up (stops published now reach us); replaced by a fresh
        # event when it is lost.
        self.subscribed = anyio.Event()
        self._background = background  # the loops the first use starts
        self._stopper: anyio.CancelScope | None = None  # cancels the background loops
        self._start_lock = anyio.Lock()

    def key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    @property
    def lease_ms(self) -> int:
        return int(self.lease * 1000)

    async def client(self) -> aredis.Redis:
        """The Redis client, starting the background loops on first use."""
        if self.redis is not None:
            return self.redis
        async with self._start_lock:
            if self.redis is None:
                client = aredis.Redis.from_url(
                    self.url,
                    socket_timeout=self.timeout,
                    socket_connect_timeout=self.timeout,
                    decode_responses=True,
                )
                self._scripts = Scripts.register(client)
                host = await current_host()
                self.tg = host.tg
                self.token = anyio.lowlevel.current_token()
                self.loop_thread = threading.get_ident()
                self.redis = client
                host.tg.start_soon(self._run_background, name=f"tether-redis-{self.prefix}")
                with anyio.move_on_after(self.timeout):
                    await self.subscribed.wait()  # so stops published from now on reach us
        return self.redis

    @property
    def scripts(self) -> Scripts:
        """The scripts registered on the client; only used once `client()` has returned."""
        assert self._scripts is not None
        return self._scripts

    async def _run_background(self) -> None:
        with anyio.CancelScope() as scope:
            self._stopper = scope
            await self._background()

    async def aclose(self) -> None:
        """Cancel the background loops and close the client (shielded)."""
        if self._stopper is not None:
            self._stopper.cancel()
        if self.redis is not None:
            client, self.redis = self.redis, None
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def unavailable(self, action: str, exc: BaseException) -> CoordinationUnavailableError:
        return CoordinationUnavailableError(
            f"could not {action}: Redis at {self.url!r} is unreachable ({exc}); retry once it is "
            "back, nothing was changed"
        )
