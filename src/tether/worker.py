"""Background runs executed by a pool of `tether worker` processes, taken from a Postgres queue.

API processes and execution processes then scale separately: an API process queues a background
run (`enqueue_run()`, or `POST /threads/{id}/runs` on a server started with `--run-queue`) and
answers at once with its `pending` record; any `Worker` takes it from the `PostgresRunQueue` and
executes it. The run is an ordinary run there: it registers with the app's `RedisRunRegistry`, so
a stop, a join, a thread policy and the lease work from every process as for any run.

Requirements: the app's checkpointer is the Postgres database of the queue, and its registry is a
`RedisRunRegistry` with `run_queue=` (`tether serve` / `tether worker` with `--database-url` and
`--redis-url` build both). The registry's run queue is what lets a stop reach a run that is still
queued: that run is removed from the queue and ends `cancelled` without ever running (its record
and its one `run_finished` say so).

What a queued run carries: its input (JSON data, messages, or `Resume()`) and its options (thread,
config, strategy, checkpoint, metadata), as JSON; whatever cannot be stored as JSON is refused with
`UserError` at `enqueue_run()`.

Thread policies: `reject` and `enqueue` are applied when the run is queued (`admit_queued`, one
Lua script, in the queue row's transaction): a `reject` run on a busy thread raises
`ThreadBusyError` from `enqueue_run()` (HTTP 409) and nothing is queued; an admitted run holds
its place on the thread (the thread itself, or its turn in the thread's FIFO) until a worker
starts it, so queued `enqueue` runs execute in the order they were queued, and a run started
meanwhile in any process finds the thread busy. `interrupt` and `rollback` apply when a worker
starts the run (they stop the run on the thread then). If Redis lost the places (a restart
without persistence), a queued run is admitted again when a worker starts it: a `reject` run
whose thread is busy then ends `failed` with the `ThreadBusyError` message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any, Unpack

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .app import App
from .commands import Resume
from .coordination.lost import end_unstarted_run
from .coordination.redis import RedisRunRegistry
from .errors import TetherError, ThreadBusyError, UserError
from .handle import RunHandle
from .ids import new_id
from .run import RunOptions, RunRecord, StartOptions
from .serde import decode_value, encode_value
from .storage.run_queue import PostgresRunQueue, QueuedRun

__all__ = ["SHUTDOWN_GRACE", "Worker", "enqueue_run", "run_queue_of"]

log = logging.getLogger("tether.worker")

SHUTDOWN_GRACE = 5.0  # seconds a stopping worker waits for its stopped runs to save their output


def run_queue_of(app: App) -> PostgresRunQueue:
    """The run queue of `app`'s registry; `UserError` when the app has none."""
    registry = app.registry
    if isinstance(registry, RedisRunRegistry) and registry.run_queue is not None:
        return registry.run_queue
    raise UserError(
        f"app {app.name!r} has no run queue: build it with registry=RedisRunRegistry(..., "
        "run_queue=PostgresRunQueue(dsn)) and a PostgresCheckpointer on the same database, or "
        "serve it with --database-url and --redis-url"
    )


async def enqueue_run(
    app: App,
    input: Any = None,
    config: Mapping[str, Any] | None = None,
    **options: Unpack[StartOptions],
) -> RunRecord:
    """Queue a background run of `app` for a `tether worker`; returns its `pending` record.

    The arguments are those of `App.astart` (see `StartOptions`). The run can be read, joined and
    stopped at once from any process (`app.aget_run`, `app.ajoin`, `app.astop`). Raises
    `ThreadBusyError` when the strategy is `reject` and the thread is busy (nothing is queued or
    stored then); `UserError` for bad arguments, an input that cannot be stored as JSON, or an app
    without a run queue; `StorageError` when the database fails and
    `CoordinationUnavailableError` when Redis does (nothing stays queued then). Cancelled before it
    returns, the run may or may not have been queued.
    """
    queue = run_queue_of(app)
    resolved = RunOptions.resolve("enqueue_run", config, options, on_disconnect="continue")
    resolved = dataclasses.replace(resolved, thread_id=resolved.thread_id or new_id())
    payload = {"input": _encode_input(input), "options": _encode_options(resolved)}
    await app.engine.ensure_ready()
    assert resolved.thread_id is not None
    registry = app.registry
    assert isinstance(registry, RedisRunRegistry)  # run_queue_of
    record = RunRecord(
        run_id=new_id(),
        thread_id=resolved.thread_id,
        app=app.name,
        multitask_strategy=resolved.multitask_strategy,
        metadata=resolved.metadata,
    )
    stored = False

    async def admit() -> None:
        """In the queue row's transaction: the thread policy (409 here, not in the worker),
        then the record (readable and joinable everywhere before a worker can take the row)."""
        nonlocal stored
        await registry.admit_queued(record.run_id, record.thread_id, resolved.multitask_strategy)
        await app.checkpointer.commit(run=record.model_copy())
        stored = True

    try:
        await queue.put(QueuedRun(record.run_id, record.thread_id, app.name, payload), admit=admit)
    except BaseException as exc:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await registry.forget_queued(record.run_id, record.thread_id)
            if stored:  # the record exists, the row does not: the run ends here
                error = f"{type(exc).__name__}: {exc}" if isinstance(exc, Exception) else None
                await end_unstarted_run(
                    app.checkpointer,
                    record.run_id,
                    record.thread_id,
                    error=error or "queueing the run was cancelled",
                )
        raise
    return record


class Worker:
    """Takes queued runs of its apps and executes them, `concurrency` at a time.

    Args:
        apps: The app, or apps by name, this worker executes (the target `tether serve` serves).
            Every app needs a run queue (see `run_queue_of`); the first app's is used.
        concurrency: How many runs execute here at once.
        poll: Seconds between two looks at an empty queue.
    """

    def __init__(
        self, apps: App | Mapping[str, App], *, concurrency: int = 10, poll: float = 0.5
    ) -> None:
        served = [apps] if isinstance(apps, App) else list(apps.values())
        if not served:
            raise UserError("a worker needs at least one app")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise UserError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        if poll <= 0:
            raise UserError(f"poll must be a number of seconds > 0, not {poll!r}")
        self.queue = run_queue_of(served[0])
        for app in served[1:]:
            run_queue_of(app)
        self.apps: dict[str, App] = {app.name or "": app for app in served}
        self.concurrency = concurrency
        self.poll = poll
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._slots = anyio.Semaphore(concurrency)
        self._tg: TaskGroup | None = None
        self._running: dict[str, RunHandle] = {}  # the runs this worker took, until they end

    def __repr__(self) -> str:
        return f"Worker({sorted(self.apps)!r}, concurrency={self.concurrency!r})"

    def local_runs(self) -> list[RunHandle]:
        """The runs this worker took and that have not ended yet."""
        return list(self._running.values())

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Take and execute queued runs until cancelled; reconnects after database failures.

        Cancelled, it stops taking runs, stops the runs it took (`requested_by="shutdown"`,
        their partial output saved) and waits for them up to `SHUTDOWN_GRACE`
        seconds, shielded; then the cancellation propagates.
        """
        for app in self.apps.values():
            await app.engine.ensure_ready()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await self._take_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_local_runs()

    async def _take_forever(self) -> None:
        names = list(self.apps)
        while True:
            try:
                async with self.queue.connection() as conn:
                    while True:
                        await self._slots.acquire()
                        try:
                            took = await self.queue.take(conn, self._start, names)
                        except BaseException:
                            self._slots.release()
                            raise
                        if not took:
                            self._slots.release()
                            await anyio.sleep(self.poll)
            except TetherError as exc:  # the database or Redis is down: the run stays queued
                log.warning("worker %s could not take a run (retrying): %s", self.name, exc)
                await anyio.sleep(self.poll)

    async def _start(self, job: QueuedRun) -> None:
        """Start the taken run; it holds a slot until it ends. Inside the queue's transaction:
        raising leaves the run queued (Redis or storage down); a run that cannot start for good
        (a busy thread under `reject`, a bad payload) ends `failed` here instead."""
        app = self.apps[job.app or ""]
        try:
            value = _decode_input(job.payload["input"])
            options = _decode_options(job.payload["options"])
            handle = await app.engine.start(
                app._program(value, options), options, run_id=job.run_id
            )
        except (ThreadBusyError, UserError, KeyError, TypeError, ValueError) as exc:
            await end_unstarted_run(
                app.checkpointer, job.run_id, job.thread_id, error=f"{type(exc).__name__}: {exc}"
            )
            registry = app.registry
            if isinstance(registry, RedisRunRegistry):  # the place it held on its thread
                await registry.forget_queued(job.run_id, job.thread_id)
            self._slots.release()
            return
        assert self._tg is not None
        self._running[handle.run_id] = handle
        self._tg.start_soon(self._hold_slot, handle, name=f"tether-worker-{job.run_id}")

    async def _hold_slot(self, handle: RunHandle) -> None:
        try:
            await handle.wait()
        finally:
            self._running.pop(handle.run_id, None)
            self._slots.release()

    async def _stop_local_runs(self) -> None:
        handles = self.local_runs()
        for handle in handles:
            handle.stop(requested_by="shutdown", reason="the worker is shutting down")
        with anyio.move_on_after(SHUTDOWN_GRACE):
            for handle in handles:
                await handle.wait()


def _encode_input(value: Any) -> dict[str, Any]:
    if isinstance(value, Resume):
        return {"resume": True}
    return {"value": encode_value(value, where="input")}


def _decode_input(data: dict[str, Any]) -> Any:
    if data.get("resume"):
        return Resume()
    return decode_value(data["value"])


def _encode_options(options: RunOptions) -> dict[str, Any]:
    return {
        "thread_id": options.thread_id,
        "config": encode_value(options.config, where="config"),
        "multitask_strategy": options.multitask_strategy,
        "checkpoint_id": options.checkpoint_id,
        "metadata": encode_value(options.metadata, where="metadata"),
        "thread_metadata": encode_value(options.thread_metadata, where="thread_metadata"),
    }


def _decode_options(data: dict[str, Any]) -> RunOptions:
    return RunOptions(
        thread_id=data["thread_id"],
        config=decode_value(data["config"]),
        multitask_strategy=data["multitask_strategy"],
        on_disconnect="continue",
        checkpoint_id=data["checkpoint_id"],
        metadata=decode_value(data["metadata"]),
        thread_metadata=decode_value(data["thread_metadata"]),
    )
