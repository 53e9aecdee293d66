"""The run engine: executes one run of a program under the stop contract (S1–S8).

Design note. `Engine.start()` registers a run, admits it when its strategy is `reject` (so a busy
thread raises `ThreadBusyError` to the caller), and spawns `_execute` as a task of the loop's host
(`_host.py`); for the other strategies it waits until that task has begun, so that a run that
supersedes or queues behind the thread's owner has done so when `start()` returns. `_execute` owns
the run's single cancel scope:

1. The stop token is bound to the scope first, so a stop that arrived earlier (stop before start)
   cancels the scope before anything runs.
2. Inside the scope: the run waits for its thread (`RunRegistry.acquire`, under its multitask
   strategy; a `reject` run already has it), loads the base checkpoint, sends `run_started`, and
   awaits `Program.execute()`.
   A `now`/`rollback` stop cancels the scope wherever the program is: in a model stream, a tool,
   a node, or between steps. An `after_step` stop lets the program end at its next step boundary,
   and escalates to `now` when its grace runs out.
3. Then the run ends (`_finish`), an error boundary in three parts:
   - deciding the outcome: after `now`, the program's `stopped_state()` (the last checkpoint plus
     the stopped step's partial output, transcript repaired, partial messages marked `stopped`);
     after `rollback`, the state from before the run. User code that raises here (a reducer) makes
     the run `failed`, and the last good checkpoint stays the head. The token then refuses
     further stops and events (S3).
   - persisting, shielded, under `commit_deadline` (at least `COMMIT_DEADLINE`, and longer than
     the backend's own `commit_timeout`): the checkpoint, the run record (S7) and the remaining
     events plus exactly one `run_finished` (S1), in one transaction. If that fails, the run ends
     `failed` (`storage_failed`) and its record goes to a pending-repair list that a retry task
     and `ensure_ready()` flush once storage answers again.
   - closing in memory, in a `finally` that always runs: the thread is released, the one
     `run_finished` appended, the result set, and every waiter woken (S5).

A first-party stop ends the run normally as `cancelled`. Outside cancellation (the loop shutting
down, the host cancelled) is recorded as `cancelled` with `requested_by="shutdown"` and then
propagates unchanged: it is the only exception that leaves a run, so one run's failure never
reaches the host or another run. A failure in user code ends the run as `failed` with
the error recorded.

Residual race: if the program finishes in the same instant a stop arrives, the run ends `completed`
although `stop()` returned True; the record still shows when the stop was requested.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from ._host import current_host
from .context import RunContext
from .coordination.base import RunRegistry
from .errors import (
    NotFoundError,
    RunCancelledError,
    RunError,
    RunFailedError,
    StorageError,
    UserError,
)
from .events import (
    CheckpointSaved,
    Event,
    MessageEvent,
    RunFinished,
    RunStarted,
    TerminalStatus,
    ToolCallFinished,
    replace,
)
from .failures import public_error
from .handle import RunHandle
from .ids import new_id
from .messages import Message
from .run import RunOptions, RunRecord, check_strategy
from .storage.base import Checkpoint, Checkpointer, EventBatch, ThreadInfo
from .transcript import repair_transcript

__all__ = ["COMMIT_DEADLINE", "Engine", "Execution", "Outcome", "Program", "StoppedState"]

log = logging.getLogger("tether")

COMMIT_DEADLINE = 5.0  # seconds the shielded commit of a finished run may take, at least
REPAIR_FIRST_DELAY = 0.5  # seconds before the first retry of a failed final commit
REPAIR_MAX_DELAY = 30.0  # the longest wait between two retries
WORKER_HOST = socket.gethostname()
WORKER_ID = f"{WORKER_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How `Program.execute()` ended without being cancelled."""

    status: Literal["completed", "interrupted", "cancelled"]  # cancelled: an after_step stop
    values: dict[str, Any] = field(default_factory=dict)
    interrupt: dict[str, Any] | None = None  # an `interrupt()` pause: its payload (JSON)


@dataclass(frozen=True, slots=True)
class StoppedState:
    """What a `now` stop commits: the state values, and the messages the stop closed."""

    values: dict[str, Any]
    closed: Sequence[Message] = ()  # partial (stopped) messages and synthetic cancelled results


class Program(ABC):
    """The body of one run. An app makes a fresh program for each run."""

    @abstractmethod
    async def execute(self, ex: Execution) -> Outcome:
        """Run to the end. Cancelled at any await by a `now` stop; must then just unwind."""

    def make_handle(self, record: RunRecord) -> RunHandle:
        """The handle of this program's run; a program may return a `RunHandle` subclass."""
        return RunHandle(record)

    def stopped_state(self, ex: Execution) -> StoppedState | None:
        """After a `now` stop: the state to commit, or None to keep the last checkpoint.

        Called in the engine's shielded commit, after the program was cancelled; must not block.
        """
        return None


class Execution:
    """The engine's services for one running program."""

    def __init__(self, engine: Engine, handle: RunHandle, options: RunOptions) -> None:
        self.engine = engine
        self.handle = handle
        self.options = options  # the run's options, whole, as the App resolved them
        # The config user code sees: the user's, plus the run's ids.
        self.config = {**options.config, "thread_id": handle.thread_id, "run_id": handle.run_id}
        # The checkpoint the run started from (the thread head, or the one forked from).
        self.base: Checkpoint | None = None
        # The thread's head as this run last saw it: the parent of its next checkpoint.
        self.head_id: str | None = None
        # How many of handle.events are already in the event log.
        self.flushed = 0
        # True once the run won its thread and sent run_started.
        self.started = False
        # The values and step of the newest checkpoint this run committed (None: none yet).
        self.values: dict[str, Any] | None = None
        self.step = -1

    @property
    def checkpointer(self) -> Checkpointer:
        return self.engine.checkpointer

    @property
    def stop_after_step(self) -> bool:
        """Whether an `after_step` stop waits for the current step to end."""
        return self.handle.token.mode == "after_step"

    def context(
        self, node: str | None = None, step: int | None = None, *, resume: bool = False
    ) -> RunContext:
        """A `RunContext` for user code of this run (`resume`: the run continues a stopped
        answer)."""
        token = self.handle.token
        return RunContext(
            run_id=self.handle.run_id,
            thread_id=self.handle.thread_id,
            node=node,
            step=step,
            config=self.config,
            resume=resume,
            _handle=self.handle,
            _loop=token.loop,
        )

    def unflushed(self) -> EventBatch:
        """The events not yet committed, which from now on count as committed."""
        events = self.unflushed_with()
        self.flushed = len(self.handle.events)
        return events

    def unflushed_with(self, *final: Event) -> EventBatch:
        """The events not yet committed, then `final`, for a commit (`flushed` does not move)."""
        handle, start = self.handle, self.flushed
        stop = len(handle.events)
        batch = EventBatch(handle.events[start:stop], handle.text_spans(start, stop))
        batch.extend(final)
        return batch

    async def commit(
        self,
        values: dict[str, Any],
        *,
        step: int,
        next: Sequence[str] = (),
        source: str = "step",
        metadata: dict[str, Any] | None = None,
    ) -> Checkpoint:
        """Commit a checkpoint (with the events so far) and send a `checkpoint` event.

        Cancelled mid-way, the commit is either fully applied or not at all.
        """
        cp = Checkpoint(
            checkpoint_id=new_id(),
            thread_id=self.handle.thread_id,
            parent_id=self.head_id,
            run_id=self.handle.run_id,
            step=step,
            values=values,
            next=tuple(next),
            source=source,
            metadata=metadata or {},
        )
        mark = self.flushed
        try:
            await self.checkpointer.commit(checkpoint=cp, events=self.unflushed())
        except BaseException:
            self.flushed = mark
            raise
        self.head_id = cp.checkpoint_id
        self.values, self.step = values, step
        self.handle.emit(CheckpointSaved, checkpoint_id=cp.checkpoint_id, step=step)
        return cp


class Engine:
    """Starts runs and keeps the stop contract for them. One per app."""

    def __init__(
        self, *, checkpointer: Checkpointer, registry: RunRegistry, app_name: str | None = None
    ) -> None:
        self.checkpointer = checkpointer
        self.registry = registry
        registry.attach(checkpointer)
        self.app_name = app_name
        self._ready = False
        self._ready_lock = anyio.Lock()
        # Seconds the shielded final commit of a run may take: at least the backend's own timeout,
        # so that the backend gives up first and says why.
        self.commit_deadline = max(COMMIT_DEADLINE, checkpointer.commit_timeout + 1.0)
        # Runs whose final commit failed, by run id: the record and the events still to store.
        # Emptied by `_flush_repairs` once storage takes them (never left `running`).
        self._repairs: dict[str, tuple[RunRecord, list[Event]]] = {}
        # True while a `_repair_loop` task is running (at most one per engine).
        self._repairing = False
        # Wraps each run's program in its tracing spans (`tether.tracing.instrument`); None: off.
        self.trace: Callable[[Program], Program] | None = None

    async def ensure_ready(self) -> None:
        """Set up storage and recover runs lost by dead workers (once)."""
        if self._ready:
            if self._repairs:
                await self._flush_repairs()
            return
        async with self._ready_lock:
            if not self._ready:
                await self.checkpointer.setup()
                await self.recover_lost_runs()
                self._ready = True

    async def start(
        self, program: Program, options: RunOptions, *, run_id: str | None = None
    ) -> RunHandle:
        """Register a run of `program` and start it in the background; returns its handle.

        The handle is the program's own type (`Program.make_handle`). Raises `ThreadBusyError` at
        once when the thread is busy and the strategy is `reject`. `run_id` is given by a worker
        that executes a queued run (its id was handed out when it was queued); else a new one.

        Cancellation: cancelling this call before it returns cancels nothing that started.
        """
        strategy = check_strategy(options.multitask_strategy)
        await self.ensure_ready()
        if self.trace is not None:
            program = self.trace(program)
        record = RunRecord.live(
            run_id=run_id or new_id(),
            thread_id=options.thread_id or new_id(),
            app=self.app_name,
            multitask_strategy=strategy,
            metadata=options.metadata,
        )
        handle = program.make_handle(record)
        ex = Execution(self, handle, options)
        await self.registry.register(handle)
        try:
            host = await current_host()
            if strategy == "reject":  # admitted here, so a busy thread raises to the caller
                await self.registry.acquire(handle, strategy)
        except BaseException:
            await self.registry.release(handle)
            raise
        # From here on the run is started: it releases its thread itself. Any other strategy
        # starts waiting for its thread (and supersedes or queues behind its owner) before this
        # call returns: its task runs up to its first real wait, which comes after `begun` is
        # set. Shielded (the wait is one loop turn), so that a caller cancelled meanwhile still
        # gets the handle of the run that started.
        begun = None if strategy == "reject" else anyio.Event()
        task = host.spawn_run(self._execute(ex, program, begun), handle.run_id)
        if begun is not None:
            # A task cancelled before its first step (the loop shutting down) never sets `begun`.
            task.add_done_callback(lambda _: begun.set())
            with anyio.CancelScope(shield=True):
                await begun.wait()
        return handle

    async def _execute(self, ex: Execution, program: Program, begun: anyio.Event | None) -> None:
        """The body of one run, in its own task (`Host.spawn_run`); see the module docstring.

        `begun` is None for a run admitted by `start()`, else set when this starts, before it
        waits for its thread.

        Cancellation: only the host's (the loop shutting down) reaches it, and leaves it after
        the run was recorded `cancelled` by `shutdown`.
        """
        handle = ex.handle
        strategy = ex.options.multitask_strategy
        acquired = begun is None
        if begun is not None:
            begun.set()
        scope = anyio.CancelScope()
        handle.token.bind(scope)
        outcome: Outcome | None = None
        failure: BaseException | None = None
        shutdown = False
        try:
            with scope:
                if not acquired:
                    await self.registry.acquire(handle, strategy)
                await self._begin(ex)
                if not scope.cancel_called:
                    outcome = await program.execute(ex)
        except anyio.get_cancelled_exc_class():
            # Not our scope's cancellation (that one never escapes `with scope`): shutdown. It is
            # the one exception that leaves the run, after the run was ended below.
            shutdown = True
            raise
        except Exception as exc:
            failure = exc
        finally:
            await self._finish(ex, program, outcome, failure, shutdown=shutdown)

    async def _begin(self, ex: Execution) -> None:
        handle = ex.handle
        checkpoint_id = ex.options.checkpoint_id
        head = await self.checkpointer.get_checkpoint(handle.thread_id)
        ex.head_id = head.checkpoint_id if head else None
        ex.base = head
        ex.step = head.step if head else -1
        if checkpoint_id is not None and (head is None or head.checkpoint_id != checkpoint_id):
            ex.base = await self.checkpointer.get_checkpoint(handle.thread_id, checkpoint_id)
            if ex.base is None:
                raise NotFoundError(
                    f"thread {handle.thread_id!r} has no checkpoint {checkpoint_id!r}; "
                    "list them with get_state_history()"
                )
        if head is None and await self.checkpointer.get_thread(handle.thread_id) is None:
            await self.checkpointer.put_thread(
                ThreadInfo(thread_id=handle.thread_id, metadata=ex.options.thread_metadata)
            )
        handle.token.begun = True
        record = handle.record
        record.status = "running"
        record.started_at = time.time()
        record.worker = WORKER_ID
        record.heartbeat_at = record.started_at
        handle.emit(RunStarted)
        ex.started = True
        await self.checkpointer.commit(run=record.model_copy(), events=ex.unflushed())

    async def _finish(
        self,
        ex: Execution,
        program: Program,
        outcome: Outcome | None,
        failure: BaseException | None,
        *,
        shutdown: bool,
    ) -> None:
        """End the run: an error boundary in three parts (see docs/stop-contract.md).

        1. Decide the outcome. User code that fails here (a reducer in `stopped_state()`, the
           transcript repair) makes the run `failed`; the last good checkpoint stays the head.
        2. Persist it, shielded, under `commit_deadline`. If that fails, the run still ends
           `failed` in memory, and the stored record is repaired later (`_repair_soon`).
        3. Close in memory, in a `finally` that always runs: release the thread, append exactly
           one `run_finished`, set the result, wake every waiter.

        Cancellation: runs shielded; the caller's cancellation is delivered after it returned.
        """
        final: RunFinished | None = None
        try:
            with anyio.CancelScope(shield=True):
                final, checkpoint, failure = self._decide(ex, program, outcome, failure, shutdown)
                if not await self._persist(ex, checkpoint, final):
                    failure = StorageError(
                        f"the end of run {ex.handle.run_id!r} (status {final.status!r}) could "
                        f"not be stored within {self.commit_deadline}s; its record is repaired "
                        "when storage answers again"
                    )
                    final = self._failed_final(ex, final, failure)
                    await self._repair_soon()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close(ex, outcome, failure, final)

    def _decide(
        self,
        ex: Execution,
        program: Program,
        outcome: Outcome | None,
        failure: BaseException | None,
        shutdown: bool,
    ) -> tuple[RunFinished, Checkpoint | None, BaseException | None]:
        """The run's terminal event, the checkpoint a stop commits, and the failure, if any.

        Never raises for user code: a failure while building the stopped state fails the run.
        """
        token, record = ex.handle.token, ex.handle.record
        reason: str | None = None
        if shutdown:
            status: TerminalStatus = "cancelled"
            reason = "shutdown"
        elif failure is not None:
            status = "failed"
        elif outcome is None or outcome.status == "cancelled":
            status = "cancelled"
        else:
            status = outcome.status
        req = token.request
        if status == "cancelled":
            reason = reason or (req.reason if req else None)
            record.stop_mode = token.mode or "now"
            record.stop_requested_by = (
                "shutdown" if shutdown else (req.requested_by if req else None)
            )
            record.stopped_at = time.time()
        if req is not None:
            record.stop_requested_at = req.requested_at
            record.stop_reason = req.reason
            record.stop_mode = record.stop_mode or req.mode
            record.stop_requested_by = record.stop_requested_by or req.requested_by
        checkpoint: Checkpoint | None = None
        if status == "cancelled" and ex.started:
            try:
                checkpoint = self._stop_checkpoint(ex, program, token.mode or "now")
            except Exception as exc:  # user code (a reducer) failed while the run was stopped
                exc.add_note(f"while ending stopped run {ex.handle.run_id!r}")
                status, failure, reason = "failed", exc, "stop_failed"
        ex.handle.finish_events()  # from here on: no stop is accepted, no event is sent
        error = None if failure is None else public_error(failure)
        interrupt = outcome.interrupt if outcome is not None and status == "interrupted" else None
        record.interrupt = interrupt
        record.status = status
        record.error = error
        record.finished_at = time.time()
        final = RunFinished(
            run_id=ex.handle.run_id,
            thread_id=ex.handle.thread_id,
            seq=len(ex.handle.events),
            ts=record.finished_at,
            status=status,
            reason=reason,
            error=error,
            interrupt=interrupt,
        )
        return final, checkpoint, failure

    async def _persist(
        self, ex: Execution, checkpoint: Checkpoint | None, final: RunFinished
    ) -> bool:
        """Commit the stop's checkpoint, the remaining events, `final` and the run record, under
        `commit_deadline`. Returns False (and logs why) when storage failed or was too slow."""
        events = ex.unflushed_with(final)
        with anyio.move_on_after(self.commit_deadline) as deadline:
            try:
                await self.checkpointer.commit(
                    checkpoint=checkpoint, events=events, run=ex.handle.record.model_copy()
                )
            except Exception:
                log.exception("could not store the end of run %s", ex.handle.run_id)
                return False
            ex.flushed = len(ex.handle.events)
            await self._flush_repairs()
            return True
        if deadline.cancelled_caught:
            log.error(
                "storing the end of run %s took longer than %ss",
                ex.handle.run_id,
                self.commit_deadline,
            )
        return False

    def _failed_final(
        self, ex: Execution, final: RunFinished, failure: BaseException
    ) -> RunFinished:
        """`final`, turned into a failure because storing the run's end failed; queues a repair."""
        record = ex.handle.record
        record.status = "failed"
        record.error = error = public_error(failure)
        failed = replace(final, status="failed", reason="storage_failed", error=error)
        self._repairs[record.run_id] = (
            record.model_copy(),
            [*ex.handle.events[ex.flushed :], failed],
        )
        return failed

    async def _repair_soon(self) -> None:
        """Make sure a task retries the pending repairs until storage takes them."""
        if not self._repairing:
            self._repairing = True
            host = await current_host()
            host.tg.start_soon(self._repair_loop, name="tether-repair")

    async def _repair_loop(self) -> None:
        delay = REPAIR_FIRST_DELAY
        try:
            while True:
                await self._flush_repairs()
                if not self._repairs:
                    return
                await anyio.sleep(delay)
                delay = min(delay * 2, REPAIR_MAX_DELAY)
        finally:
            self._repairing = False

    async def _flush_repairs(self) -> None:
        """Store the ends of runs whose final commit failed, as far as storage takes them now.

        A repair writes what the failed commit did not: the events after the last stored one
        (ending with `run_finished`), and the run record (`failed`). When the event log still
        refuses, the record alone is stored, so that no record stays `running`; the events are
        retried later.

        Cancellation: stops between two runs; a repair is either stored or still pending.
        """
        for run_id, (record, events) in list(self._repairs.items()):
            try:
                with anyio.fail_after(self.commit_deadline):
                    logged = await self.checkpointer.read_events(run_id)
                    if not (logged and isinstance(logged[-1], RunFinished)):
                        last = logged[-1].seq if logged else -1
                        await self.checkpointer.commit(
                            events=[e for e in events if e.seq > last], run=record
                        )
            except Exception:
                log.warning("run %s: its end is still not stored; retrying", run_id, exc_info=True)
                await self._store_record(record)
                return
            self._repairs.pop(run_id, None)

    async def _store_record(self, record: RunRecord) -> None:
        """Store just the ended run record, when its events cannot be stored yet."""
        try:
            with anyio.fail_after(self.commit_deadline):
                stored = await self.checkpointer.get_run(record.run_id)
                if stored is None or stored.is_active:
                    await self.checkpointer.commit(run=record)
        except Exception:
            log.warning("run %s: its record is not stored either", record.run_id, exc_info=True)

    async def _close(
        self,
        ex: Execution,
        outcome: Outcome | None,
        failure: BaseException | None,
        final: RunFinished | None,
    ) -> None:
        """Close the run in memory; always runs, whatever happened before (part 3)."""
        handle = ex.handle
        try:
            await self.registry.release(handle)
        finally:
            if final is None:  # deciding the outcome itself broke: a bug, but the run must end
                handle.finish_events()
                handle.record.status = "failed"
                final = RunFinished(
                    run_id=handle.run_id,
                    thread_id=handle.thread_id,
                    seq=len(handle.events),
                    ts=time.time(),
                    status="failed",
                    reason="internal_error",
                )
            handle.events.append(final)  # after `finish_events()`: no text span is open
            handle.values = (
                outcome.values if outcome is not None and final.status != "failed" else None
            )
            handle.error = _result_error(final.status, failure, handle.run_id, final.reason)
            handle._finish()

    def _stop_checkpoint(self, ex: Execution, program: Program, mode: str) -> Checkpoint | None:
        """The checkpoint a stop commits, or None when the last checkpoint already is right.

        `rollback` restores the state from before the run. `now` commits the program's stopped
        state. Every stop leaves a repaired transcript: tool calls without results get synthetic
        cancelled results (an `after_step` stop can end right after a model turn that asked for
        tools), announced by `tool_call_finished` and `message` events.
        """
        handle = ex.handle
        base_step = ex.base.step if ex.base else -1
        closed: list[Message] = []
        if mode == "rollback":
            if ex.head_id == (ex.base.checkpoint_id if ex.base else None):
                return None  # the run wrote nothing
            values = ex.base.values if ex.base else {}
            source, step = "rollback", base_step
        else:
            stopped = program.stopped_state(ex) if mode == "now" else None
            if stopped is not None:
                values, closed = stopped.values, list(stopped.closed)
            elif ex.values is not None:
                values = ex.values
            else:
                return None
            messages = values.get("messages")
            if isinstance(messages, list):
                repaired = repair_transcript(messages)
                known = {m.id for m in messages}
                closed += [m for m in repaired if m.id not in known]  # synthetic tool results
                values = {**values, "messages": repaired}
            if stopped is None and not closed:
                return None
            source, step = "stop", ex.step + 1
        cp = Checkpoint(
            checkpoint_id=new_id(),
            thread_id=handle.thread_id,
            parent_id=ex.head_id,
            run_id=handle.run_id,
            step=step,
            values=values,
            # A rollback restores the base whole: a run paused by interrupt() stays paused.
            next=ex.base.next if mode == "rollback" and ex.base else (),
            source=source,
            metadata=dict(ex.base.metadata) if mode == "rollback" and ex.base else {},
        )
        # Only now, when nothing of user code can fail any more, the events go out.
        for message in closed:
            if message.role == "tool" and message.tool_call_id is not None:
                handle.emit(
                    ToolCallFinished,
                    tool_call_id=message.tool_call_id,
                    name=message.name or "",
                    status="cancelled",
                    content=message.content,
                )
            handle.emit(MessageEvent, message=message)
        handle.emit(CheckpointSaved, checkpoint_id=cp.checkpoint_id, step=step)
        return cp

    async def recover_lost_runs(self) -> list[str]:
        """Mark runs of dead workers on this host `failed` with reason `worker_lost`.

        Their threads stay at their last checkpoint. Returns the recovered run ids.
        """
        lost = []
        for status in ("running", "pending"):
            for record in await self.checkpointer.list_runs(status=status, limit=10_000):
                if not _worker_is_dead(record.worker):
                    continue
                events = await self.checkpointer.read_events(record.run_id)
                record.status = "failed"
                record.error = "worker_lost: the process running this run died"
                record.finished_at = time.time()
                final = RunFinished(
                    run_id=record.run_id,
                    thread_id=record.thread_id,
                    seq=events[-1].seq + 1 if events else 0,
                    ts=record.finished_at,
                    status="failed",
                    reason="worker_lost",
                    error=record.error,
                )
                await self.checkpointer.commit(events=[final], run=record)
                lost.append(record.run_id)
        return lost


def _worker_is_dead(worker: str | None) -> bool:
    if worker is None or worker == WORKER_ID:
        return False
    host, _, rest = worker.partition(":")
    pid_text, _, _nonce = rest.partition(":")
    if host != WORKER_HOST or not pid_text.isdigit():
        return False  # another machine: its lease (Redis) decides
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # our pid, but another process incarnation (nonce differs)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _result_error(
    status: TerminalStatus, failure: BaseException | None, run_id: str, reason: str | None
) -> BaseException | None:
    if status == "cancelled":
        return RunCancelledError(
            f"run {run_id!r} was stopped ({reason or 'no reason given'})", run_id=run_id
        )
    if failure is None:
        if status == "failed":
            return RunFailedError(f"run {run_id!r} failed ({reason})", run_id=run_id)
        return None
    if isinstance(failure, RunError | UserError):
        return failure
    err = RunFailedError(
        f"run {run_id!r} failed: {type(failure).__name__}: {failure}", run_id=run_id
    )
    err.__cause__ = failure
    return err
