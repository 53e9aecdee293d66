"""`RedisRunRegistry`: coordination across processes and machines through one Redis server.

Design note. Redis holds only what coordination needs (key layout in `redis_scripts.py`); Postgres
(the checkpointer) holds everything durable. Every process keeps its own runs' handles in memory,
as `LocalRunRegistry` does, and mirrors them in Redis. The registry is a facade over one part per
concept, each a module with its own design note:

- `redis_context.py`: the client, the event loop it belongs to, the key names and the settings
  every part shares; the first use starts the background loops.
- `redis_runs.py`: who runs what: this process's runs, written to Redis (`RESTORE`) as they
  register and after any reconnection, and erased (`RELEASE`, which publishes `free`) on release;
  a release Redis missed is retried by the heartbeat.
- `redis_admission.py`: admission to a thread (`ACQUIRE`, atomic), the per-thread policy and FIFO,
  and the places of runs queued for `tether worker` (`ENQUEUE`).
- `redis_stops.py`: durable stops: an intent list per run plus a pub/sub message, applied at once
  when it arrives and re-read on every (re)subscription and heartbeat; stops of queued runs.
- `redis_streams.py`: live events: a Redis Stream per run, pumped as events come; joins elsewhere
  read it live, in order and without gaps (`RemoteRunStream`).
- `redis_inbox.py`: flow inputs (`Flow.send`, `Flow.stop_stream`) for runs elsewhere.
- `redis_signals.py`: the subscription to the registry's channel, and the local waiters for a
  thread or a run to be freed.
- `redis_leases.py`: the heartbeat that renews this process's lease (and re-reads intents and
  inboxes), and the sweep that recovers the runs of a dead worker (`failed` / `worker_lost`,
  through `lost.py`) within `lease + lease / 3` of a kill -9.

A stop for a run of this process is applied to its token directly, even while Redis is down; a
stop for a run elsewhere that cannot reach Redis raises `CoordinationUnavailableError`, never
silently returns False. **Redis restarts** lose the keys; a process that reconnects writes its
live runs back, so stops, admission and leases continue. Runs never wait on Redis to keep running:
only admission of a new run and a stop of a run in another process need it.

The registry binds to the event loop it is first used on (redis-py connections belong to one
loop); its background tasks run in that loop's host task group until `aclose()`.

Residual races: a worker that stalls longer than its lease (a long GC pause, or an outage of Redis
for that long) is swept although alive; when it notices its lease was lost it stops its runs, but
the sweeper's terminal event is the one the log keeps. Redis (restarted empty) can lose a stop in
two narrow windows: an intent accepted by Redis that the executing process had neither received
by pub/sub nor read yet when Redis went down (the stop returned True, the run goes on); and a stop
sent after Redis came back but before the executing process wrote its runs back (it answers
False). Configure Redis with persistence (AOF) to close the first window.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import redis.asyncio as aredis
from redis.exceptions import RedisError

from ..errors import CoordinationUnavailableError, UserError
from ..events import Event
from ..handle import RunHandle, RunStream
from ..run import MultitaskStrategy
from ..stop import StopRequest
from ..storage.base import Checkpointer
from .base import RunRegistry, StopResult
from .redis_admission import Admission
from .redis_context import RedisContext
from .redis_inbox import Inbox
from .redis_leases import Heartbeat, Sweeper
from .redis_runs import LocalRuns, RunIndex
from .redis_signals import Subscription, Waiters
from .redis_stops import Stops, decode_stop
from .redis_streams import STREAM_TTL, EventStreams, RemoteRunStream

if TYPE_CHECKING:
    from ..storage.run_queue import PostgresRunQueue

__all__ = ["DEFAULT_LEASE", "STREAM_TTL", "RedisRunRegistry", "RemoteRunStream"]

T = TypeVar("T")

DEFAULT_LEASE = 10.0  # seconds a worker's runs survive it without a heartbeat
# Seconds after which a queued run's place is checked against the queue; read at every sweep.
QUEUED_STALE = 60.0


class RedisRunRegistry(RunRegistry):
    """Coordinates runs of many processes (and machines) that share one Redis server.

    Args:
        url: The Redis URL, e.g. `redis://127.0.0.1:6379/0`.
        prefix: Prefix of every key and channel; processes that coordinate share it.
        lease: Seconds after which a silent worker counts as dead and its runs are recovered.
        checkpointer: Where a dead worker's runs are marked `failed` / `worker_lost`; the app's
            checkpointer (`App` attaches it when not given). Without one, a sweep only frees the
            dead worker's threads.
        timeout: Seconds a single Redis command may take before it counts as unreachable.
        run_queue: The queue of background runs for `tether worker` processes, so that stops
            and joins reach runs still waiting there (see `tether.worker`).
    """

    cross_process = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "tether",
        lease: float = DEFAULT_LEASE,
        checkpointer: Checkpointer | None = None,
        timeout: float = 2.0,
        run_queue: PostgresRunQueue | None = None,
    ) -> None:
        if lease <= 0:
            raise UserError(f"lease must be a number of seconds > 0, not {lease!r}")
        if not prefix or any(c in prefix for c in " \n"):
            raise UserError(f"prefix must be a non-empty word without spaces, not {prefix!r}")
        ctx = RedisContext(
            url,
            prefix=prefix,
            lease=lease,
            timeout=timeout,
            checkpointer=checkpointer,
            run_queue=run_queue,
            background=self._background,
        )
        # Fixed at construction (the parts read them from `ctx`).
        self.url, self.prefix, self.lease = url, prefix, lease
        self.worker_id = ctx.worker_id
        self._ctx = ctx
        self._local = LocalRuns()
        self._index = RunIndex(ctx, self._local)
        self._waiters = Waiters()
        self._stops = Stops(ctx, self._local, self._index)
        self._admission = Admission(ctx, self._local, self._waiters, self._stops)
        self._streams = EventStreams(ctx, self._local)
        self._inbox = Inbox(ctx)
        self._sweeper = Sweeper(ctx, self._index, self._streams)
        self._subscription = Subscription(ctx, on_message=self._on_message, resync=self._resync)
        self._heartbeat = Heartbeat(
            ctx, self._local, self._index, catch_up=self._catch_up, sweep=self.sweep
        )

    def __repr__(self) -> str:
        return f"RedisRunRegistry({self.url!r}, prefix={self.prefix!r}, lease={self.lease!r})"

    # ------------------------------------------------------------------ settings

    @property
    def run_queue(self) -> PostgresRunQueue | None:
        """The queue of background runs given at construction (shared with the parts)."""
        return self._ctx.run_queue

    @property
    def checkpointer(self) -> Checkpointer | None:
        """Where the registry records runs it ends (shared with its parts; see `attach`)."""
        return self._ctx.checkpointer

    @checkpointer.setter
    def checkpointer(self, checkpointer: Checkpointer | None) -> None:
        self._ctx.checkpointer = checkpointer

    def attach(self, checkpointer: Checkpointer) -> None:
        """Use `checkpointer` to record runs of dead workers, unless one was given already."""
        if self.checkpointer is None:
            self.checkpointer = checkpointer

    # ------------------------------------------------------------------ lifecycle

    @property
    def _redis(self) -> aredis.Redis | None:
        """The client once started (None before, and after `aclose()`)."""
        return self._ctx.redis

    async def _client(self) -> aredis.Redis:
        """The Redis client, starting the subscription and heartbeat loops on first use."""
        return await self._ctx.client()

    async def _background(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._subscription.listen)
            tg.start_soon(self._heartbeat.run)

    async def aclose(self) -> None:
        """Stop the background loops and close the client. Local runs keep their handles.

        The close is shielded: cancelling `aclose()` does not interrupt it.
        """
        await self._ctx.aclose()

    # ------------------------------------------------------------------ the contract

    async def register(self, handle: RunHandle) -> None:
        """Make the run visible to stops from every process, and store its pending record.

        Raises `CoordinationUnavailableError` when Redis cannot be reached (the run is not started).
        """
        client = await self._client()
        if self.checkpointer is not None:  # a pending run is visible (read, join) everywhere
            await self.checkpointer.commit(run=handle.record.model_copy())
        self._local.runs[handle.run_id] = handle
        try:
            intents = await self._index.write(client, handle, holds=False)
        except RedisError as exc:
            del self._local.runs[handle.run_id]
            raise self._ctx.unavailable("start a run", exc) from exc
        for payload in intents:  # a stop of a queued run, sent before a worker took it
            handle.token.request_stop(decode_stop(payload))
        assert self._ctx.tg is not None
        self._ctx.tg.start_soon(self._streams.pump, handle, name=f"tether-pump-{handle.run_id}")

    async def acquire(self, handle: RunHandle, strategy: MultitaskStrategy) -> None:
        """Wait until `handle` holds its thread in every process's view, applying `strategy`.

        Raises `ThreadBusyError` for `reject`, `CoordinationUnavailableError` when Redis cannot be
        reached. If cancelled while waiting, the run leaves the queue and holds nothing.
        """
        await self._admission.acquire(handle, strategy)

    async def release(self, handle: RunHandle) -> None:
        """Free the thread (if held) and forget the run everywhere. Idempotent; never raises.

        When Redis is unreachable the release is retried by the heartbeat until it succeeds; until
        then other processes see the thread as held (and after the lease, as held by a dead run).
        """
        await self._index.release(handle)

    async def request_stop(
        self, request: StopRequest, *, run_id: str | None = None, thread_id: str | None = None
    ) -> StopResult:
        """Deliver the stop to the run wherever it executes; see `RunRegistry.request_stop`.

        Raises `CoordinationUnavailableError` when the run is not local and Redis cannot be
        reached: the stop was not delivered.
        """
        return await self._stops.request(request, run_id, thread_id)

    async def admit_queued(self, run_id: str, thread_id: str, strategy: MultitaskStrategy) -> None:
        """Admit a run queued for `tether worker` to its thread now, as it is queued.

        `reject` raises `ThreadBusyError` when the thread is busy (an active run that is not
        stopping, or a run waiting for the thread), atomically: of two `reject` runs queued at
        once on a free thread, one is refused. `enqueue` (and an admitted `reject`) holds its
        place on the thread, in FIFO order, until a worker starts it (the run then keeps it) or
        `forget_queued` gives it up. `interrupt` and `rollback` are left to the worker's start,
        where they stop the run on the thread. Raises `CoordinationUnavailableError` when Redis
        cannot be reached (nothing was admitted).

        Cancellation: the place may or may not be held; `forget_queued` gives it up.
        """
        await self._admission.admit_queued(run_id, thread_id, strategy)

    async def forget_queued(self, run_id: str, thread_id: str) -> None:
        """Give up the place `admit_queued` held for a run that will never start (stopped while
        queued, or not queued after all). Idempotent; never raises: Redis errors are logged, and
        a place left behind is freed by a later sweep.

        Cancellation: shielded, with the registry's timeout.
        """
        await self._index.forget_queued(run_id, thread_id)

    def local(self, run_id: str) -> RunHandle | None:
        return self._local.runs.get(run_id)

    def local_runs(self) -> list[RunHandle]:
        """Every active run of this process."""
        return list(self._local.runs.values())

    def active_on(self, thread_id: str) -> RunHandle | None:
        return self._local.owners.get(thread_id)

    def size(self) -> int:
        """Local runs, held threads and releases still owed to Redis (0 when idle)."""
        return self._local.size()

    # ------------------------------------------------------------------ across processes

    async def is_live(self, run_id: str) -> bool:
        """Whether the run is registered and not yet released, in any process, or queued.

        Raises `CoordinationUnavailableError` when Redis cannot be reached, `StorageError` when
        the run queue's database cannot.
        """
        if run_id in self._local.runs or await self._index.exists(run_id):
            return True
        if self.run_queue is None:
            return False
        # Redis, the queue, Redis again: a worker registers a run before it leaves the queue.
        return await self.run_queue.contains(run_id) or await self._index.exists(run_id)

    async def wait_released(self, run_id: str) -> None:
        """Wait until the run (in any process) released its thread.

        Cancelling the wait does not affect the run. Raises `CoordinationUnavailableError` when
        Redis cannot be reached.
        """
        ended = self._waiters.ended
        while True:
            # Set up before the check, so a release between the two is not missed.
            event = ended.setdefault(run_id, anyio.Event())
            try:
                if not await self.is_live(run_id):
                    return
                with anyio.move_on_after(self.lease / 3):
                    await event.wait()
            finally:
                if ended.get(run_id) is event:  # leave nothing behind; any other waiter on the
                    del ended[run_id]  # same event wakes, checks again and sets up a new one
                    event.set()

    async def join(self, run_id: str, after_seq: int) -> RunStream | None:
        """A live stream of a run that executes in another process, or None if it is not live.

        Needs the checkpointer (gaps and ended runs are read from the event log).
        """
        if self.checkpointer is None or not await self.is_live(run_id):
            return None
        return RemoteRunStream(self, self.checkpointer, run_id, after_seq)

    async def read_stream(
        self, run_id: str, after_seq: int, block: float | None = None
    ) -> list[Event] | None:
        """The run's events after `after_seq` from its Redis Stream, waiting up to `block` seconds
        for one (None: no wait); None when Redis has no stream for the run (never pumped, or
        expired).

        Raises `CoordinationUnavailableError` when Redis cannot be reached.
        """
        return await self._streams.read(run_id, after_seq, block)

    async def send_input(self, run_id: str, name: str, value: Any) -> bool:
        """Put a flow input (`Flow.asend`) in the inbox of the live run `run_id`, wherever it
        executes; the executing process hands it to the run's `send`. True when the run was live
        (a run that ends before it reads its inbox drops the value, as a local run would).

        Raises `UserError` for a value that is not JSON data or messages,
        `CoordinationUnavailableError` when Redis cannot be reached (nothing was sent).
        Cancellation: the value may or may not have been sent.
        """
        return await self._inbox.send_input(run_id, name, value)

    async def close_stream(self, run_id: str) -> bool:
        """End the runtime stream of the live flow run `run_id` (`Flow.astop_stream`), wherever
        it executes; the run goes on. It travels through the run's inbox, so it lands after the
        inputs sent before it. True when the run was live.

        Raises `CoordinationUnavailableError` when Redis cannot be reached (nothing was sent).
        Cancellation: the stream may or may not have been ended.
        """
        return await self._inbox.close_stream(run_id)

    def call_sync(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` on the event loop this registry's client belongs to (tether's
        background loop if it was not used yet), from sync code in any other thread.

        Raises `UserError` when called on that loop's own thread (it would block the loop the
        call needs; use the async face), `CoordinationUnavailableError` when that loop stopped.
        """
        token = self._ctx.token
        if token is None:
            return super().call_sync(fn, *args)
        if threading.get_ident() == self._ctx.loop_thread:
            raise UserError(
                f"{getattr(fn, '__name__', fn)!r} was reached through a sync method on the event "
                "loop the Redis registry runs on, which it would block; await the async method "
                "instead (e.g. `await flow.asend(...)`)"
            )

        async def call() -> T:
            return await fn(*args)

        try:
            return anyio.from_thread.run(call, token=token)
        except RuntimeError as exc:
            if "loop" not in str(exc).lower():
                raise
            raise CoordinationUnavailableError(
                f"the event loop the Redis registry {self.url!r} was used on has stopped ({exc})"
            ) from exc

    async def sweep(self) -> list[str]:
        """Recover the runs of every worker whose lease lapsed; returns the recovered run ids.

        Safe to call from many processes at once: one claims each dead worker. Raises
        `RedisError` when Redis cannot be reached.
        """
        return await self._sweeper.sweep(queued_stale=QUEUED_STALE)

    # ------------------------------------------------------------------ signals

    def _on_message(self, data: str) -> None:
        """Handle one message of the channel: a stop, an input, or a freed thread and run."""
        kind, _, rest = data.partition(" ")
        if kind == "stop":
            run, _, payload = rest.partition(" ")
            self._stops.deliver(run, payload)
        elif kind == "input":
            handle = self._local.runs.get(rest)
            if handle is not None and self._ctx.tg is not None:
                self._ctx.tg.start_soon(self._inbox.drain, [handle])
        elif kind == "free":
            # A thread id may hold spaces; a run id (`new_id`, hex) never does.
            thread, _, run = rest.rpartition(" ")
            self._waiters.on_free(thread, run)

    async def _resync(self, client: aredis.Redis) -> None:
        """Write local runs back (Redis may have restarted) and apply their stop intents."""
        await self._index.write_all(client)
        await self._catch_up(client)
        self._waiters.wake_all()  # a notification may have been missed

    async def _catch_up(self, client: aredis.Redis) -> None:
        """Apply the stop intents and inputs Redis holds for the local runs."""
        runs = list(self._local.runs.values())
        if not runs:
            return
        await self._stops.apply_intents(client, runs)
        await self._inbox.drain(runs)
