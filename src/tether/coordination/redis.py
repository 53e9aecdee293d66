"""`RedisRunRegistry`: coordination across processes and machines through one Redis server.

Design note. Redis holds only what coordination needs (key layout in `_scripts.py`); Postgres (the
checkpointer) holds everything durable. Every process keeps its own runs' handles in memory, as
`LocalRunRegistry` does, and mirrors them in Redis:

- **Admission** is one Lua script (`ACQUIRE`): the thread's owner key and FIFO queue are read and
  changed in one atomic step, so two processes can never both win a thread. `interrupt` and
  `rollback` jump the queue and stop the owner through `request_stop` (wherever it runs); `reject`
  fails unless the owner is already stopping. A waiter sleeps until a `free` notification for its
  thread, re-checking at least every `lease / 3` seconds in case a notification was lost.
- **Stops** are durable: `REQUEST_STOP` appends the request to the run's intent list and publishes
  it in the same atomic step. The executing process applies the published message at once, and
  re-reads the intent list of every local run whenever its subscription (re)connects and on every
  heartbeat. So a stop sent while the worker is between registering and subscribing, or while it
  is reconnecting, still lands (within one heartbeat at worst). A stop for a run of this process is
  applied to its token directly, even while Redis is down; a stop for a run elsewhere that cannot
  reach Redis raises `CoordinationUnavailableError`, never silently returns False.
- **Leases.** Every process heartbeats a lease key (`lease` seconds, refreshed every `lease / 3`,
  also while idle) and lists its live runs under its worker id. The same loop sweeps: a worker with live runs whose
  lease lapsed is dead; the first process to claim it marks its runs `failed` / `worker_lost`
  through `lost.py`, and releases their threads. A kill -9 is noticed within `lease + lease / 3`.
- **Live events.** Each local run's events are pumped into a Redis Stream (`P:events:{run}`),
  batched per wake-up, so a join on any process reads them live, in order and without gaps
  (`join()`), and the sweeper can recover what a dead worker streamed after its last commit.
  The stream expires `STREAM_TTL` seconds after the run's terminal event.
- **Flow inputs** (`Flow.send` / `asend`) and stream ends (`Flow.stop_stream`) for a run elsewhere
  go to the run's inbox list in Redis (`SEND_INPUT`, only while the run is live) with an `input`
  notification; the executing process drains the list into the run (`send`, `stop_stream`) on the
  notification, on resync and on every heartbeat, one drain at a time, so they arrive in the order
  they were sent. Sync faces reach the registry through `call_sync`, on its own loop.
- **Queued runs** (`run_queue`, a `PostgresRunQueue` that `tether worker` processes take from) are
  live too. `reject` and `enqueue` runs are admitted as they are queued (`admit_queued`, the
  `ENQUEUE` script, in the queue row's transaction): a busy `reject` thread refuses at once, and
  an admitted run holds its place (the thread, or its turn in the thread's FIFO) as a live run
  with an empty worker until a worker registers it, so FIFO order does not depend on which worker
  takes which row first. A stop of such a run records its intent (the worker that registers the
  run reads the intents in the same script, so it never executes), removes it from the queue and
  ends it `cancelled` (`lost.end_unstarted_run`). A stop that finds no registered run (a place
  Redis lost) looks at the queue the same way, and `is_live` counts queued runs, so a join waits
  for them to start. A worker registers a run before it deletes its queue row, in the row's
  transaction, and a stop looks at Redis, then the queue (waiting on a row being taken), then
  Redis again, so a stop never falls between "queued" and "registered". A place whose queue row
  never committed (the queueing process died) is freed by the sweep after `QUEUED_STALE`.
- **Redis restarts** lose the keys; a process that reconnects writes its live runs back
  (`RESTORE`), so stops, admission and leases continue. Runs never wait on Redis to keep running:
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

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import redis.asyncio as aredis
from anyio.abc import TaskGroup
from redis.exceptions import RedisError

from .._host import current_host
from ..errors import CoordinationUnavailableError, TetherError, ThreadBusyError, UserError
from ..events import Event, RunFinished, event_from_json, event_json_bytes
from ..handle import RunHandle, RunStream
from ..run import MultitaskStrategy
from ..serde import decode_value, encode_value
from ..stop import StopRequest
from ..storage.base import Checkpointer
from . import _scripts
from .base import RunRegistry, StopResult
from .lost import end_unstarted_run, recover_lost_run

if TYPE_CHECKING:
    from ..storage.run_queue import PostgresRunQueue

__all__ = ["DEFAULT_LEASE", "STREAM_TTL", "RedisRunRegistry", "RemoteRunStream"]

log = logging.getLogger("tether.coordination")
T = TypeVar("T")

DEFAULT_LEASE = 10.0  # seconds a worker's runs survive it without a heartbeat
STREAM_TTL = 300  # seconds a finished run's event stream stays readable in Redis
_RETRY = 0.2  # seconds between reconnection attempts of the background loops
QUEUED_STALE = 60.0  # seconds after which a queued run's place is checked against the queue
QUEUE_ROW_LOST = "its queue entry was never stored (the process that queued it failed)"


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
        self.url = url
        self.prefix = prefix
        self.lease = lease
        self.checkpointer = checkpointer
        self.run_queue = run_queue
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._timeout = timeout
        self._channel = f"{prefix}:signal"
        self._redis: aredis.Redis | None = None
        self._tg: TaskGroup | None = None  # the host task group of our loop, once started
        # The loop the client belongs to (its token and thread), once started; never changes.
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._stopper: anyio.CancelScope | None = None  # cancels the background loops
        self._start_lock = anyio.Lock()
        # Every registered, not yet released run of this process.
        self._runs: dict[str, RunHandle] = {}
        # thread_id -> the local run that holds the thread in Redis.
        self._owners: dict[str, RunHandle] = {}
        # Runs whose release could not reach Redis; retried by the heartbeat until it succeeds.
        self._unreleased: dict[str, RunHandle] = {}
        # thread_id -> event that the next `free` notification of the thread pops and sets.
        self._freed: dict[str, anyio.Event] = {}
        self._ended: dict[str, anyio.Event] = {}  # run_id -> set when that run is released
        # Set while the subscription is up (stops published now reach us).
        self._subscribed = anyio.Event()
        # Serializes inbox drains, so inputs of one name reach a run in the order they were sent.
        self._draining = anyio.Lock()

    def __repr__(self) -> str:
        return f"RedisRunRegistry({self.url!r}, prefix={self.prefix!r}, lease={self.lease!r})"

    # ------------------------------------------------------------------ keys

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    def attach(self, checkpointer: Checkpointer) -> None:
        """Use `checkpointer` to record runs of dead workers, unless one was given already."""
        if self.checkpointer is None:
            self.checkpointer = checkpointer

    # ------------------------------------------------------------------ lifecycle

    async def _client(self) -> aredis.Redis:
        """The Redis client, starting the subscription and heartbeat loops on first use."""
        if self._redis is not None:
            return self._redis
        async with self._start_lock:
            if self._redis is None:
                client = aredis.Redis.from_url(
                    self.url,
                    socket_timeout=self._timeout,
                    socket_connect_timeout=self._timeout,
                    decode_responses=True,
                )
                self._acquire_script = client.register_script(_scripts.ACQUIRE)
                self._release_script = client.register_script(_scripts.RELEASE)
                self._stop_script = client.register_script(_scripts.REQUEST_STOP)
                self._restore_script = client.register_script(_scripts.RESTORE)
                self._send_script = client.register_script(_scripts.SEND_INPUT)
                self._drain_script = client.register_script(_scripts.DRAIN_INPUT)
                self._enqueue_script = client.register_script(_scripts.ENQUEUE)
                host = await current_host()
                self._tg = host.tg
                self._token = anyio.lowlevel.current_token()
                self._loop_thread = threading.get_ident()
                self._redis = client
                host.tg.start_soon(self._background, name=f"tether-redis-{self.prefix}")
                with anyio.move_on_after(self._timeout):
                    await self._subscribed.wait()  # so stops published from now on reach us
        return self._redis

    async def _background(self) -> None:
        with anyio.CancelScope() as scope:
            self._stopper = scope
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen)
                tg.start_soon(self._heartbeat)

    async def aclose(self) -> None:
        """Stop the background loops and close the client. Local runs keep their handles.

        The close is shielded: cancelling `aclose()` does not interrupt it.
        """
        if self._stopper is not None:
            self._stopper.cancel()
        if self._redis is not None:
            client, self._redis = self._redis, None
            with anyio.CancelScope(shield=True):
                await client.aclose()

    # ------------------------------------------------------------------ the contract

    async def register(self, handle: RunHandle) -> None:
        """Make the run visible to stops from every process, and store its pending record.

        Raises `CoordinationUnavailableError` when Redis cannot be reached (the run is not started).
        """
        client = await self._client()
        if self.checkpointer is not None:  # a pending run is visible (read, join) everywhere
            await self.checkpointer.commit(run=handle.record.model_copy())
        self._runs[handle.run_id] = handle
        try:
            intents = await self._restore(client, handle, holds=False)
        except RedisError as exc:
            del self._runs[handle.run_id]
            raise self._unavailable("start a run", exc) from exc
        for payload in intents:  # a stop of a queued run, sent before a worker took it
            handle.token.request_stop(_decode(payload))
        assert self._tg is not None
        self._tg.start_soon(self._pump, handle, name=f"tether-pump-{handle.run_id}")

    async def _restore(self, client: aredis.Redis, handle: RunHandle, *, holds: bool) -> list[str]:
        """Write the local run to Redis; returns its stop intents (JSON requests)."""
        run, thread = handle.run_id, handle.thread_id
        keys = [
            self._key("run", run),
            self._key("truns", thread),
            self._key("wruns", self.worker_id),
            f"{self.prefix}:workers",
            self._key("lease", self.worker_id),
            self._key("owner", thread),
            f"{self.prefix}:queued",
            self._key("stops", run),
        ]
        lease_ms = int(self.lease * 1000)
        args: list[str | int] = [run, thread, self.worker_id, lease_ms, "1" if holds else "0"]
        intents: list[str] = await self._restore_script(keys=keys, args=args, client=client)
        return intents

    async def acquire(self, handle: RunHandle, strategy: MultitaskStrategy) -> None:
        """Wait until `handle` holds its thread in every process's view, applying `strategy`.

        Raises `ThreadBusyError` for `reject`, `CoordinationUnavailableError` when Redis cannot be
        reached. If cancelled while waiting, the run leaves the queue and holds nothing.
        """
        client = await self._client()
        thread, run = handle.thread_id, handle.run_id
        keys = [self._key("owner", thread), self._key("queue", thread)]
        stopped: set[str] = set()
        try:
            while True:
                freed = self._freed.setdefault(thread, anyio.Event())
                try:
                    reply = await self._acquire_script(
                        keys=keys, args=[self.prefix, run, strategy], client=client
                    )
                except RedisError as exc:
                    raise self._unavailable(f"admit run {run!r} to its thread", exc) from exc
                verdict = reply[0]
                if verdict == "acquired":
                    self._owners[thread] = handle
                    return
                if verdict == "busy":
                    raise ThreadBusyError(thread, reply[1])
                blocker = reply[1]
                if blocker and strategy in ("interrupt", "rollback") and blocker not in stopped:
                    stopped.add(blocker)
                    await self.request_stop(
                        StopRequest(
                            mode="now" if strategy == "interrupt" else "rollback",
                            reason=f"superseded by run {run}",
                            requested_by="superseded",
                        ),
                        run_id=blocker,
                    )
                with anyio.move_on_after(self.lease / 3):
                    await freed.wait()
        except BaseException:
            # On failure the run key still goes with release(); ACQUIRE skips dead entries.
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(self._timeout),
                contextlib.suppress(RedisError),
            ):
                await client.lrem(self._key("queue", thread), 0, run)
            raise

    async def release(self, handle: RunHandle) -> None:
        """Free the thread (if held) and forget the run everywhere. Idempotent; never raises.

        When Redis is unreachable the release is retried by the heartbeat until it succeeds; until
        then other processes see the thread as held (and after the lease, as held by a dead run).
        """
        self._runs.pop(handle.run_id, None)
        if self._owners.get(handle.thread_id) is handle:
            del self._owners[handle.thread_id]
        if self._redis is None:
            return
        self._unreleased[handle.run_id] = handle
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
            try:
                await self._release_remote(self._redis, handle.run_id, handle.thread_id)
            except RedisError as exc:
                log.warning("could not release run %s in Redis (retrying): %s", handle.run_id, exc)
            else:
                self._unreleased.pop(handle.run_id, None)

    async def _release_remote(
        self,
        client: aredis.Redis,
        run: str,
        thread: str,
        worker: str | None = None,
        *,
        queued_only: bool = False,
    ) -> None:
        keys = [
            self._key("owner", thread),
            self._key("queue", thread),
            self._key("run", run),
            self._key("truns", thread),
            self._key("wruns", worker or self.worker_id),
            self._key("stops", run),
            self._key("inbox", run),
            f"{self.prefix}:queued",
        ]
        args = [run, thread, self._channel, "1" if queued_only else "0"]
        await self._release_script(keys=keys, args=args, client=client)

    async def request_stop(
        self, request: StopRequest, *, run_id: str | None = None, thread_id: str | None = None
    ) -> StopResult:
        """Deliver the stop to the run wherever it executes; see `RunRegistry.request_stop`.

        Raises `CoordinationUnavailableError` when the run is not local and Redis cannot be
        reached: the stop was not delivered.
        """
        local = self._local_target(run_id, thread_id)
        if local is not None:
            if not local.token.request_stop(request):
                return StopResult(accepted=False)
            # Other processes must see the owner stopping (a `reject` then waits). While Redis
            # looks down this goes to the background: the stop itself already took effect.
            if self._subscribed.is_set():
                await self._publish_intent(local.run_id, request)
            elif self._tg is not None:
                self._tg.start_soon(self._publish_intent, local.run_id, request)
            return StopResult(accepted=True, run_id=local.run_id, handle=local)
        if run_id is None and thread_id is None:
            return StopResult(accepted=False)
        found, queued_run = await self._stop_remote(request, run_id, thread_id)
        if queued_run is not None:  # queued and holding its place: remove it if not taken yet
            return await self._stop_queued(request, queued_run)
        if not found and self.run_queue is not None:
            queued = await self.run_queue.cancel(run_id=run_id, thread_id=thread_id)
            if queued is not None:  # it never ran, and now never will
                if self.checkpointer is not None:
                    await end_unstarted_run(
                        self.checkpointer, queued.run_id, queued.thread_id, stop=request
                    )
                return StopResult(accepted=True, run_id=queued.run_id)
            found, _ = await self._stop_remote(request, run_id, thread_id)  # a worker took it
        if not found:
            return StopResult(accepted=False)
        handle = self._runs.get(found)  # registered here meanwhile
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
        client = await self._client()
        try:
            found = await self._stop_script(
                args=[self.prefix, run_id or "", thread_id or "", _encode(request), self._channel],
                client=client,
            )
        except RedisError as exc:
            raise self._unavailable("deliver the stop", exc) from exc
        if not found:
            return None, None
        run, worker = str(found[0]), str(found[1])
        if worker:
            return run, None
        thread: str | None = await client.hget(self._key("run", run), "thread")  # type: ignore[assignment]  # decode_responses=True
        return run, (run, thread) if thread is not None else None

    async def _stop_queued(self, request: StopRequest, queued: tuple[str, str]) -> StopResult:
        """A stop of a queued run that holds its place on the thread: the intent is recorded
        (a worker that takes the run now applies it as it registers, so it never runs); if the
        run is still in the queue it leaves it and ends `cancelled` here, freeing its place."""
        run, thread = queued
        if self.run_queue is not None and await self.run_queue.cancel(run_id=run) is not None:
            if self.checkpointer is not None:
                await end_unstarted_run(self.checkpointer, run, thread, stop=request)
            await self.forget_queued(run, thread)
        return StopResult(accepted=True, run_id=run)

    def _local_target(self, run_id: str | None, thread_id: str | None) -> RunHandle | None:
        if run_id is not None:
            handle = self._runs.get(run_id)
            if handle is not None and thread_id is not None and handle.thread_id != thread_id:
                return None
            return handle
        if thread_id is not None:
            return self._owners.get(thread_id)
        return None

    async def _publish_intent(self, run: str, request: StopRequest) -> None:
        """Record a locally applied stop in Redis too, so other processes see the owner stopping
        (a `reject` then waits instead of failing). Best effort: the stop already took effect."""
        if self._redis is None:
            return
        with anyio.move_on_after(self._timeout):
            # On failure the run stops regardless; only the hint to other processes is missing.
            with contextlib.suppress(RedisError):
                await self._stop_script(
                    args=[self.prefix, run, "", _encode(request), self._channel],
                    client=self._redis,
                )

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
        if strategy not in ("reject", "enqueue"):
            return
        client = await self._client()
        keys = [
            self._key("owner", thread_id),
            self._key("queue", thread_id),
            self._key("run", run_id),
            self._key("truns", thread_id),
            f"{self.prefix}:queued",
        ]
        now_ms = int(time.time() * 1000)
        try:
            reply = await self._enqueue_script(
                keys=keys, args=[self.prefix, run_id, thread_id, strategy, now_ms], client=client
            )
        except RedisError as exc:
            raise self._unavailable(f"admit queued run {run_id!r} to its thread", exc) from exc
        if reply[0] == "busy":
            raise ThreadBusyError(thread_id, reply[1])

    async def forget_queued(self, run_id: str, thread_id: str) -> None:
        """Give up the place `admit_queued` held for a run that will never start (stopped while
        queued, or not queued after all). Idempotent; never raises: Redis errors are logged, and
        a place left behind is freed by a later sweep.

        Cancellation: shielded, with the registry's timeout.
        """
        client = self._redis
        if client is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
            try:
                await self._release_remote(client, run_id, thread_id, queued_only=True)
            except RedisError as exc:
                log.warning("could not free the place of queued run %s: %s", run_id, exc)

    def local(self, run_id: str) -> RunHandle | None:
        return self._runs.get(run_id)

    def local_runs(self) -> list[RunHandle]:
        """Every active run of this process."""
        return list(self._runs.values())

    def active_on(self, thread_id: str) -> RunHandle | None:
        return self._owners.get(thread_id)

    def size(self) -> int:
        """Local runs, held threads and releases still owed to Redis (0 when idle)."""
        return len(self._runs) + len(self._owners) + len(self._unreleased)

    # ------------------------------------------------------------------ across processes

    async def is_live(self, run_id: str) -> bool:
        """Whether the run is registered and not yet released, in any process, or queued.

        Raises `CoordinationUnavailableError` when Redis cannot be reached, `StorageError` when
        the run queue's database cannot.
        """
        if run_id in self._runs or await self._registered(run_id):
            return True
        if self.run_queue is None:
            return False
        # Redis, the queue, Redis again: a worker registers a run before it leaves the queue.
        return await self.run_queue.contains(run_id) or await self._registered(run_id)

    async def _registered(self, run_id: str) -> bool:
        client = await self._client()
        try:
            return bool(await client.exists(self._key("run", run_id)))
        except RedisError as exc:
            raise self._unavailable(f"look up run {run_id!r}", exc) from exc

    async def wait_released(self, run_id: str) -> None:
        """Wait until the run (in any process) released its thread.

        Cancelling the wait does not affect the run. Raises `CoordinationUnavailableError` when
        Redis cannot be reached.
        """
        while True:
            event = self._ended.setdefault(run_id, anyio.Event())  # before the check: no gap
            if not await self.is_live(run_id):
                return
            with anyio.move_on_after(self.lease / 3):
                await event.wait()

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
        client = await self._client()
        key = self._key("events", run_id)
        try:
            # Stream entry ids are "<seq+1>-0", so "after seq s" is the entry id "<s+1>-0".
            wait_ms = None if block is None else max(1, int(block * 1000))
            reply: Any = await client.xread({key: f"{after_seq + 1}-0"}, block=wait_ms)
            if not reply and not await client.exists(key):
                return None
        except RedisError as exc:
            raise self._unavailable(f"read the events of run {run_id!r}", exc) from exc
        return [
            event_from_json(json.loads(fields["e"]))
            for _, entries in reply
            for _, fields in entries
        ]

    # ------------------------------------------------------------------ background loops

    async def _pump(self, handle: RunHandle) -> None:
        """Copy the run's events into its Redis Stream as they come, until its terminal event.

        A run that was released without ever ending (its start failed, e.g. `ThreadBusyError`)
        sends nothing more: the pump gives up once it was released and stayed silent for
        `max(lease / 3, 2 * timeout)` seconds (a run that ends appends its terminal event right
        after its release, which takes at most `timeout`).
        """
        key = self._key("events", handle.run_id)
        sent = 0
        tries_after_end = 0  # once the run ended, give up after a few failed tries
        while True:
            while len(handle.events) <= sent and not handle.done:
                with anyio.move_on_after(max(self.lease / 3, 2 * self._timeout)) as idle:
                    await handle.wait_for_events(sent)
                silent = len(handle.events) <= sent and not handle.done
                if idle.cancelled_caught and silent and handle.run_id not in self._runs:
                    return
            batch = handle.events[sent:]
            if not batch and handle.done:
                return
            client = self._redis
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
                    await anyio.sleep(_RETRY)
                    continue
            sent += len(batch)
            if isinstance(batch[-1], RunFinished):
                return

    async def _listen(self) -> None:
        """Apply published stops and wake waiters; resubscribe (and resync) after any failure."""
        while True:
            client = self._redis
            if client is None:
                return
            try:
                pubsub = client.pubsub()
                async with pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message["type"] == "subscribe":
                            await self._resync(client)
                            self._subscribed.set()
                        elif message["type"] == "message":
                            self._on_message(message["data"])
            except RedisError as exc:
                if self._subscribed.is_set():
                    log.warning("Redis subscription lost (reconnecting): %s", exc)
                    self._subscribed = anyio.Event()
                await anyio.sleep(_RETRY)

    def _on_message(self, data: str) -> None:
        kind, _, rest = data.partition(" ")
        if kind == "stop":
            run, _, payload = rest.partition(" ")
            handle = self._runs.get(run)
            if handle is not None:
                handle.token.request_stop(_decode(payload))
        elif kind == "input":
            handle = self._runs.get(rest)
            if handle is not None and self._tg is not None:
                self._tg.start_soon(self._drain_inputs, [handle])
        elif kind == "free":
            thread, _, run = rest.partition(" ")
            for waiters, name in ((self._freed, thread), (self._ended, run)):
                event = waiters.pop(name, None)
                if event is not None:
                    event.set()

    async def _resync(self, client: aredis.Redis) -> None:
        """Write local runs back (Redis may have restarted) and apply their stop intents."""
        for handle in list(self._runs.values()):
            held = self._owners.get(handle.thread_id) is handle
            await self._restore(client, handle, holds=held)
        await self._apply_intents(client)
        for waiters in (self._freed, self._ended):  # a notification may have been missed
            for event in waiters.values():
                event.set()
            waiters.clear()

    async def _apply_intents(self, client: aredis.Redis) -> None:
        runs = list(self._runs.values())
        if not runs:
            return
        async with client.pipeline(transaction=False) as pipe:
            for handle in runs:
                pipe.lrange(self._key("stops", handle.run_id), 0, -1)
            intents = await pipe.execute()
        for handle, requests in zip(runs, intents, strict=True):
            for payload in requests:
                handle.token.request_stop(_decode(payload))
        await self._drain_inputs(runs)

    async def send_input(self, run_id: str, name: str, value: Any) -> bool:
        """Put a flow input (`Flow.asend`) in the inbox of the live run `run_id`, wherever it
        executes; the executing process hands it to the run's `send`. True when the run was live
        (a run that ends before it reads its inbox drops the value, as a local run would).

        Raises `UserError` for a value that is not JSON data or messages,
        `CoordinationUnavailableError` when Redis cannot be reached (nothing was sent).
        Cancellation: the value may or may not have been sent.
        """
        payload = json.dumps({"name": name, "value": encode_value(value, where="the input")})
        return await self._to_inbox(run_id, payload, "send input")

    async def close_stream(self, run_id: str) -> bool:
        """End the runtime stream of the live flow run `run_id` (`Flow.astop_stream`), wherever
        it executes; the run goes on. It travels through the run's inbox, so it lands after the
        inputs sent before it. True when the run was live.

        Raises `CoordinationUnavailableError` when Redis cannot be reached (nothing was sent).
        Cancellation: the stream may or may not have been ended.
        """
        return await self._to_inbox(run_id, json.dumps({"close_stream": True}), "end the stream")

    async def _to_inbox(self, run_id: str, payload: str, action: str) -> bool:
        client = await self._client()
        keys = [self._key("run", run_id), self._key("inbox", run_id)]
        try:
            sent = await self._send_script(
                keys=keys, args=[run_id, payload, self._channel], client=client
            )
        except RedisError as exc:
            raise self._unavailable(f"{action} of run {run_id!r}", exc) from exc
        return bool(sent)

    def call_sync(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` on the event loop this registry's client belongs to (tether's
        background loop if it was not used yet), from sync code in any other thread.

        Raises `UserError` when called on that loop's own thread (it would block the loop the
        call needs; use the async face), `CoordinationUnavailableError` when that loop stopped.
        """
        token = self._token
        if token is None:
            return super().call_sync(fn, *args)
        if threading.get_ident() == self._loop_thread:
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

    async def _drain_inputs(self, runs: list[RunHandle]) -> None:
        """Hand the inputs waiting in the runs' inboxes to the runs (called on an `input`
        notification, on resync and on every heartbeat, so none is left behind)."""
        client = self._redis
        if client is None:
            return
        async with self._draining:
            for handle in runs:
                send = getattr(handle, "send", None)  # a FlowRun; other runs take no input
                stop_stream = getattr(handle, "stop_stream", None)
                if send is None or stop_stream is None:
                    continue
                try:
                    payloads = await self._drain_script(
                        keys=[self._key("inbox", handle.run_id)], client=client
                    )
                except RedisError as exc:
                    log.warning("could not read the inputs of run %s: %s", handle.run_id, exc)
                    return
                for payload in payloads:
                    try:
                        data = json.loads(payload)
                        if data.get("close_stream"):
                            stop_stream()
                        else:
                            send(data["name"], decode_value(data["value"]))
                    except Exception:  # a malformed input must not take the registry down
                        log.exception("run %s: could not deliver input %r", handle.run_id, payload)

    async def _heartbeat(self) -> None:
        """Every `lease / 3`: renew the lease, re-read stop intents, retry owed releases, sweep."""
        while True:
            client = self._redis
            if client is None:
                return
            try:
                await self._beat(client)
            except RedisError as exc:
                log.warning("Redis heartbeat failed (runs keep running): %s", exc)
            await anyio.sleep(self.lease / 3)

    async def _beat(self, client: aredis.Redis) -> None:
        lease_key, lease_ms = self._key("lease", self.worker_id), int(self.lease * 1000)
        # Renewed even while idle, so a live process is never swept (only a stalled one).
        if not await client.set(lease_key, "1", px=lease_ms, xx=True):
            await self._on_lease_lost(client)
            await client.set(lease_key, "1", px=lease_ms)
        await self._apply_intents(client)
        for run, handle in list(self._unreleased.items()):
            await self._release_remote(client, run, handle.thread_id)
            self._unreleased.pop(run, None)
        await self.sweep()

    async def _on_lease_lost(self, client: aredis.Redis) -> None:
        """Our lease lapsed: either Redis restarted (write our runs back) or a sweeper took our
        runs for lost (stop them: their threads were handed on)."""
        swept = await client.delete(self._key("swept", self.worker_id))
        for handle in list(self._runs.values()):
            if swept:
                handle.token.request_stop(
                    StopRequest(
                        reason="lease lost: another process recovered this run",
                        requested_by="shutdown",
                    )
                )
            else:
                held = self._owners.get(handle.thread_id) is handle
                await self._restore(client, handle, holds=held)

    async def sweep(self) -> list[str]:
        """Recover the runs of every worker whose lease lapsed; returns the recovered run ids.

        Safe to call from many processes at once: one claims each dead worker. Raises
        `RedisError` when Redis cannot be reached.
        """
        client = self._redis
        if client is None:
            return []
        recovered: list[str] = []
        workers: set[str] = await client.smembers(f"{self.prefix}:workers")  # type: ignore[assignment]  # decode_responses=True
        for worker in workers:
            if worker == self.worker_id or await client.exists(self._key("lease", worker)):
                continue
            claimed = await client.set(
                self._key("swept", worker), self.worker_id, nx=True, px=int(self.lease * 3000)
            )
            if not claimed:
                continue
            runs: set[str] = await client.smembers(self._key("wruns", worker))  # type: ignore[assignment]  # decode_responses=True
            for run in runs:
                thread: str | None = await client.hget(self._key("run", run), "thread")  # type: ignore[assignment]  # decode_responses=True
                if thread is None:
                    await client.srem(self._key("wruns", worker), run)
                    continue
                if self.checkpointer is not None:
                    streamed = await self.read_stream(run, -1) or []
                    await recover_lost_run(self.checkpointer, run, streamed)
                await self._release_remote(client, run, thread, worker)
                recovered.append(run)
            await client.srem(f"{self.prefix}:workers", worker)
        await self._sweep_queued(client)
        return recovered

    async def _sweep_queued(self, client: aredis.Redis) -> None:
        """Free the places of queued runs that are neither in the run queue nor started: the
        process that queued one died (or failed) between admitting it and committing its queue
        row. Looked at once they are `QUEUED_STALE` seconds old, then again every as long."""
        if self.run_queue is None:
            return
        key, now = f"{self.prefix}:queued", time.time()
        stale: list[str] = await client.zrangebyscore(  # type: ignore[assignment]  # decode_responses=True
            key, "-inf", int((now - QUEUED_STALE) * 1000), start=0, num=100
        )
        for run in stale:
            try:
                if await self.run_queue.contains(run):
                    await client.zadd(key, {run: int(now * 1000)})  # waits for a worker
                    continue
                fields: list[str | None] = await client.hmget(  # type: ignore[assignment]  # decode_responses=True
                    self._key("run", run), ["thread", "worker"]
                )
                thread, worker = fields
                if thread is None or worker:  # released, or a worker started it
                    await client.zrem(key, run)
                    continue
                if self.checkpointer is not None:
                    record = await self.checkpointer.get_run(run)
                    if record is not None and record.status == "pending":
                        await end_unstarted_run(
                            self.checkpointer, run, thread, error=QUEUE_ROW_LOST
                        )
                await self._release_remote(client, run, thread, queued_only=True)
            except TetherError as exc:  # the database is down: look again next sweep
                log.warning("could not check queued run %s: %s", run, exc)
                return

    def _unavailable(self, action: str, exc: BaseException) -> CoordinationUnavailableError:
        return CoordinationUnavailableError(
            f"could not {action}: Redis at {self.url!r} is unreachable ({exc}); retry once it is "
            "back, nothing was changed"
        )


def _encode(request: StopRequest) -> str:
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


def _decode(payload: str) -> StopRequest:
    data: dict[str, Any] = json.loads(payload)
    return StopRequest(**data)


class RemoteRunStream(RunStream):
    """A join on a run that executes in another process: its Redis Stream, live and in order.

    Gaps (events pumped while Redis was restarting) are filled from the event log. When the
    stream is gone (the run ended long ago, or Redis lost it) the event log serves the rest.
    Closing it never stops the run.
    """

    def __init__(
        self, registry: RedisRunRegistry, checkpointer: Checkpointer, run_id: str, after_seq: int
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


_JOIN_BLOCK = 1.0  # seconds a join waits on the stream before it re-checks that the run lives
