"""`App`: the run API that graphs, agents and flows share.

Every method is written once, async; its sync twin (`stream`, `invoke`, `stop`, …) is generated
from it (`_twin.py`) and runs it on tether's background loop (`_portal.py`). Runs started through
the sync API execute on that loop; runs started through the async API execute on the caller's
loop. `stop()` works from any thread.

The calls that start a run take one shared bundle of keyword options, `StartOptions` (and
`StreamOptions` for the streaming ones, in `run.py`), resolved once into a `RunOptions`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Unpack

from . import _portal
from ._twin import SyncStreamTwin, SyncTwin
from .coordination.base import RunRegistry, StopResult
from .engine import Engine, Program
from .errors import CheckpointConflictError, NotFoundError, ThreadBusyError, UserError
from .events import Event
from .handle import RunHandle, RunStream, SyncRunStream
from .ids import new_id
from .run import RunOptions, RunRecord, StartOptions, StreamOptions, thread_id_of
from .stop import StopRequest, check_mode
from .storage.base import Checkpoint, Checkpointer, ThreadInfo
from .tracing import instrument, otel_available
from .transcript import repair_transcript

__all__ = ["App", "RunOptions", "StateSnapshot"]


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """A thread's state at one checkpoint. `next` names the nodes that would run next."""

    thread_id: str
    values: dict[str, Any]
    next: tuple[str, ...] = ()
    checkpoint_id: str | None = None
    parent_id: str | None = None
    run_id: str | None = None
    step: int = -1
    source: str | None = None
    created_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class App:
    """Runs, stops and inspects runs of one program kind on threads. Subclasses make programs."""

    def __init__(
        self,
        *,
        checkpointer: Checkpointer | None = None,
        registry: RunRegistry | None = None,
        name: str | None = None,
    ) -> None:
        if checkpointer is None:
            from .storage.default import default_checkpointer

            checkpointer = default_checkpointer()
        self.name = name
        self.checkpointer = checkpointer
        if registry is None:
            from .coordination.default import default_registry

            registry = default_registry()
        self.registry = registry
        self.engine = Engine(checkpointer=checkpointer, registry=self.registry, app_name=name)
        if otel_available():  # every app traces through the global provider (`tether.tracing`)
            instrument(self)

    def _use_portal(self) -> None:
        """Before a sync twin uses tether's background loop: close the storage there at exit."""
        _portal.close_at_exit(self.checkpointer, self.checkpointer.aclose)

    # subclasses
    def _program(self, input: Any, options: RunOptions) -> Program:
        raise NotImplementedError

    def _empty_values(self) -> dict[str, Any]:
        return {}

    def _apply_update(self, values: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
        """The state after `update_state` wrote `update` over `values`."""
        return {**values, **update}

    # starting runs
    async def _start(self, input: Any, options: RunOptions) -> RunHandle:
        return await self.engine.start(self._program(input, options), options)

    async def astart(
        self,
        input: Any = None,
        config: Mapping[str, Any] | None = None,
        **options: Unpack[StartOptions],
    ) -> RunHandle:
        """Start a run in the background and return its handle at once.

        Args:
            input: The run's input; `None` continues the thread from its last checkpoint.
            config: A config mapping, e.g. `{"thread_id": ..., "recursion_limit": ...}`.
            **options: `thread_id`, `multitask_strategy`, `checkpoint_id`, `metadata`,
                `thread_metadata` (see `StartOptions`).

        Raises:
            ThreadBusyError: the thread is busy and `multitask_strategy="reject"`.
            TypeError, UserError: an unknown keyword, or a bad argument (naming it).

        Cancelling this call before it returns cancels nothing that started.
        """
        return await self._start(
            input, RunOptions.resolve("astart", config, options, on_disconnect="continue")
        )

    start = SyncTwin(astart)

    def astream(
        self,
        input: Any = None,
        config: Mapping[str, Any] | None = None,
        **options: Unpack[StreamOptions],
    ) -> RunStream:
        """Start a run and iterate its typed events; the last is `run_finished`.

        Takes the arguments of `astart`, and `on_disconnect` (see `StreamOptions`). The run starts
        on the first iteration. If the consumer stops iterating early (closes the stream, drops
        it, or is cancelled), the run is stopped with `requested_by="disconnect"` unless
        `on_disconnect="continue"`. Bad arguments raise here, before any iteration.
        """
        resolved = RunOptions.resolve("astream", config, options, on_disconnect=None)
        return RunStream(
            start=lambda: self._start(input, resolved),
            on_disconnect=resolved.on_disconnect,
        )

    stream = SyncStreamTwin(astream, SyncRunStream[Event])

    async def ainvoke(
        self,
        input: Any = None,
        config: Mapping[str, Any] | None = None,
        **options: Unpack[StartOptions],
    ) -> dict[str, Any]:
        """Run to the end and return the final state values. Takes the arguments of `astart`.

        Raises `RunCancelledError` if the run was stopped, `RunFailedError` if user code raised.
        If this call is cancelled, the run is stopped (`requested_by="disconnect"`).
        """
        handle = await self._start(
            input, RunOptions.resolve("ainvoke", config, options, on_disconnect="cancel")
        )
        try:
            return await handle.result()
        except BaseException:
            if not handle.done:
                handle.request_stop(requested_by="disconnect", reason="the caller was cancelled")
            raise

    invoke = SyncTwin(ainvoke)

    def ajoin(self, run_id: str, *, after_seq: int = -1) -> RunStream:
        """Re-join a run's event stream after `after_seq`: live if it is active here, else from
        its event log. Use it directly in `async for`, or `await` it first to resolve the run.
        Closing it never stops the run.

        Raises:
            NotFoundError: no run has that id (when awaited, or on the first iteration).
            TypeError: `run_id` is not a string.
        """
        _check_type("run_id", run_id, str)
        _check_type("after_seq", after_seq, int)

        async def find() -> RunHandle | RunStream | list[Event]:
            handle = self.registry.local(run_id)
            if handle is not None:
                return handle
            await self.engine.ensure_ready()
            remote = await self.registry.join(run_id, after_seq)  # active in another process
            if remote is not None:
                return remote
            events = await self.checkpointer.read_events(run_id)
            if not events and await self.checkpointer.get_run(run_id) is None:
                raise NotFoundError(f"no run {run_id!r}; list a thread's runs with list_runs()")
            return events

        return RunStream(join=find, after_seq=after_seq, on_disconnect="continue")

    join = SyncStreamTwin(ajoin, SyncRunStream[Event])

    # stopping runs
    async def arequest_stop(
        self,
        config: Mapping[str, Any] | None = None,
        /,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        mode: str = "now",
        reason: str | None = None,
        grace: float | None = None,
        requested_by: str = "user",
        wait: bool = True,
    ) -> StopResult:
        """`astop`, answering with the registry's `StopResult`: which run accepted the stop (its
        `run_id`, and its `handle` when it executes in this process). The server uses this.

        Cancellation: cancelling the wait leaves the stop requested.
        """
        req, run_id, thread_id = _stop_request(
            config, thread_id, run_id, mode, reason, grace, requested_by
        )
        result = await self.registry.request_stop(req, run_id=run_id, thread_id=thread_id)
        if wait and result.handle is not None:
            await result.handle.wait()
        elif wait and result.run_id is not None:  # the run executes in another process
            await self.registry.wait_released(result.run_id)
        if not result.accepted:
            paused = await self._cancel_interrupt(req, run_id=run_id, thread_id=thread_id)
            if paused is not None:
                return StopResult(accepted=True, run_id=paused)
        return result

    async def _cancel_interrupt(
        self, req: StopRequest, *, run_id: str | None, thread_id: str | None
    ) -> str | None:
        """A stop of a run paused by `interrupt()` (waiting for a person, e.g. a tool approval).

        The run's record turns `cancelled` with the stop recorded (its event stream already ended
        `interrupted` when it paused); the thread's head moves to a checkpoint where every pending
        tool call is answered `cancelled` and nothing is left to resume (with `rollback`: the state
        from before the run), so the thread continues with a new message. Returns the run's id, or
        None if nothing was paused there.

        Cancellation: the write is atomic; cancelled, the run stays paused.
        """
        await self.engine.ensure_ready()
        if run_id is not None:
            asked = await self.checkpointer.get_run(run_id)
            if asked is None:
                return None
            thread_id = asked.thread_id
        if thread_id is None:
            return None
        head = await self.checkpointer.get_checkpoint(thread_id)
        pause = head.metadata.get("interrupt") if head is not None else None
        if head is None or not isinstance(pause, dict) or not isinstance(pause.get("run_id"), str):
            return None
        if run_id is not None and run_id != pause["run_id"]:
            return None
        record = await self.checkpointer.get_run(pause["run_id"])
        if record is None or record.status != "interrupted":
            return None
        values = dict(head.values)
        if req.mode == "rollback":  # the state from before the paused run
            base: Checkpoint | None = head
            for inside in (False, True):  # back to the paused run's checkpoints, then past them
                while base is not None and (base.run_id == record.run_id) is inside:
                    parent = base.parent_id
                    base = (
                        await self.checkpointer.get_checkpoint(thread_id, parent)
                        if parent
                        else None
                    )
            values = dict(base.values) if base is not None else self._empty_values()
        if isinstance(values.get("messages"), list):
            values["messages"] = repair_transcript(values["messages"])
        checkpoint = Checkpoint(
            checkpoint_id=new_id(),
            thread_id=record.thread_id,
            parent_id=head.checkpoint_id,
            run_id=record.run_id,
            step=head.step,
            values=values,
            source="stop",
            metadata={"interrupt_cancelled": pause.get("id")},
        )
        now = time.time()
        stopped = record.model_copy(
            update={
                "status": "cancelled",
                "stop_mode": req.mode,
                "stop_reason": req.reason,
                "stop_requested_by": req.requested_by,
                "stop_requested_at": now,
                "stopped_at": now,
            }
        )
        try:
            await self.checkpointer.commit(checkpoint=checkpoint, run=stopped)
        except CheckpointConflictError:
            return None  # a new run moved the thread on first: nothing is paused any more
        return record.run_id

    async def astop(
        self,
        config: Mapping[str, Any] | None = None,
        /,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        mode: str = "now",
        reason: str | None = None,
        grace: float | None = None,
        requested_by: str = "user",
        wait: bool = True,
    ) -> bool:
        """Stop the active run with `run_id`, or the active run of `thread_id` (or `config`).

        Returns True if a run was active and accepted the stop, False otherwise (unknown or
        finished runs); never raises for those. With `wait=True` it returns once the run has ended
        and its thread accepts a new run. Idempotent; the first reason wins. Cancelling the wait
        leaves the stop requested.

        Raises:
            UserError: neither a thread id nor a run id was given, or a bad mode or grace.
            TypeError: `config` is not a mapping (pass `thread_id=...` by keyword).
        """
        result = await self.arequest_stop(
            config,
            thread_id=thread_id,
            run_id=run_id,
            mode=mode,
            reason=reason,
            grace=grace,
            requested_by=requested_by,
            wait=wait,
        )
        return result.accepted

    stop = SyncTwin(astop, in_a_loop={"wait": False})

    async def acancel_run(
        self,
        run: str | Mapping[str, Any] | None = None,
        /,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        mode: str = "now",
        reason: str | None = None,
        grace: float | None = None,
        requested_by: str = "user",
        wait: bool = True,
    ) -> bool:
        """Agno's call, `agent.cancel_run(run_id)`: `astop` with the run id as its first argument.

        The first argument may also be a config mapping, as for `astop`. Returns whether an active
        run accepted the stop. Cancelling the wait leaves the stop requested.
        """
        config: Mapping[str, Any] | None = None
        if isinstance(run, str):
            run_id = run
        elif run is not None and not isinstance(run, Mapping):
            raise TypeError(
                f"cancel_run() takes a run id (a string) or a config mapping, not {run!r}"
            )
        else:
            config = run
        return await self.astop(
            config,
            thread_id=thread_id,
            run_id=run_id,
            mode=mode,
            reason=reason,
            grace=grace,
            requested_by=requested_by,
            wait=wait,
        )

    cancel_run = SyncTwin(acancel_run, in_a_loop={"wait": False})

    # inspecting
    async def aget_state(
        self, thread_id: str, *, checkpoint_id: str | None = None
    ) -> StateSnapshot:
        """The thread's state at its head (or at `checkpoint_id`); empty for a new thread."""
        _check_type("thread_id", thread_id, str)
        await self.engine.ensure_ready()
        cp = await self.checkpointer.get_checkpoint(thread_id, checkpoint_id)
        if cp is None:
            if checkpoint_id is not None:
                raise NotFoundError(f"thread {thread_id!r} has no checkpoint {checkpoint_id!r}")
            return StateSnapshot(thread_id=thread_id, values=self._empty_values())
        return _snapshot(cp)

    get_state = SyncTwin(aget_state)

    async def aget_state_history(
        self, thread_id: str, *, limit: int | None = None
    ) -> list[StateSnapshot]:
        """The thread's checkpoints, newest first."""
        _check_type("thread_id", thread_id, str)
        await self.engine.ensure_ready()
        return [
            _snapshot(cp) for cp in await self.checkpointer.list_checkpoints(thread_id, limit=limit)
        ]

    get_state_history = SyncTwin(aget_state_history)

    async def aget_run(self, run_id: str) -> RunRecord | None:
        """The run record (live when the run is active here), or None."""
        _check_type("run_id", run_id, str)
        handle = self.registry.local(run_id)
        if handle is not None:
            return handle.snapshot()
        await self.engine.ensure_ready()
        return await self.checkpointer.get_run(run_id)

    get_run = SyncTwin(aget_run)

    async def alist_runs(self, thread_id: str, *, limit: int = 100) -> list[RunRecord]:
        """The thread's runs, newest first."""
        _check_type("thread_id", thread_id, str)
        await self.engine.ensure_ready()
        runs = await self.checkpointer.list_runs(thread_id, limit=limit)
        return [_live(self.registry, r) for r in runs]

    list_runs = SyncTwin(alist_runs)

    # threads
    async def alist_threads(
        self, *, metadata: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[ThreadInfo]:
        """Threads whose metadata contains every item of `metadata`, newest first."""
        if metadata is not None:
            _check_type("metadata", metadata, Mapping)
        _check_type("limit", limit, int)
        await self.engine.ensure_ready()
        return await self.checkpointer.list_threads(
            metadata=dict(metadata) if metadata else None, limit=limit
        )

    list_threads = SyncTwin(alist_threads)

    async def adelete_thread(self, thread_id: str) -> bool:
        """Stop the thread's active run (waiting for it), then delete the thread with its
        checkpoints, runs and events. Returns False if there was no such thread.

        Cancellation: the stop stays requested; the thread is deleted only once the run ended.
        """
        _check_type("thread_id", thread_id, str)
        await self.astop(thread_id=thread_id, reason="the thread was deleted")
        await self.engine.ensure_ready()
        return await self.checkpointer.delete_thread(thread_id)

    delete_thread = SyncTwin(adelete_thread)

    async def aupdate_state(self, thread_id: str, values: Mapping[str, Any]) -> StateSnapshot:
        """Write `values` into the thread's state as a new checkpoint (source `"update"`), the way
        a node's update is applied (a graph's reducers run), and return the new state.

        Raises:
            ThreadBusyError: a run is active on the thread; stop it first.
            UserError: `values` does not fit the state (e.g. an unknown key of a graph's schema).

        Cancellation: the checkpoint is either written or not.
        """
        _check_type("thread_id", thread_id, str)
        _check_type("values", values, Mapping)
        active = self.registry.active_on(thread_id)
        if active is not None:
            raise ThreadBusyError(thread_id, active.run_id)
        await self.engine.ensure_ready()
        head = await self.checkpointer.get_checkpoint(thread_id)
        current = head.values if head is not None else self._empty_values()
        if head is None and await self.checkpointer.get_thread(thread_id) is None:
            await self.checkpointer.put_thread(ThreadInfo(thread_id=thread_id))
        cp = Checkpoint(
            checkpoint_id=new_id(),
            thread_id=thread_id,
            parent_id=head.checkpoint_id if head is not None else None,
            run_id=None,
            step=(head.step if head is not None else -1) + 1,
            values=self._apply_update(current, dict(values)),
            source="update",
        )
        await self.checkpointer.commit(checkpoint=cp)
        return _snapshot(cp)

    update_state = SyncTwin(aupdate_state)


def _check_type(name: str, value: Any, expected: type | tuple[type, ...]) -> None:
    """Raise a `TypeError` naming the argument when `value` is not of the `expected` type."""
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is int):
        names = " or ".join(
            t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,))
        )
        raise TypeError(f"{name} must be {names}, not {value!r}")


def _snapshot(cp: Checkpoint) -> StateSnapshot:
    return StateSnapshot(
        thread_id=cp.thread_id,
        values=cp.values,
        next=cp.next,
        checkpoint_id=cp.checkpoint_id,
        parent_id=cp.parent_id,
        run_id=cp.run_id,
        step=cp.step,
        source=cp.source,
        created_at=cp.created_at,
        metadata=cp.metadata,
    )


def _live(registry: RunRegistry, record: RunRecord) -> RunRecord:
    handle = registry.local(record.run_id)
    return handle.snapshot() if handle is not None else record


def _stop_request(
    config: Mapping[str, Any] | None,
    thread_id: str | None,
    run_id: str | None,
    mode: str,
    reason: str | None,
    grace: float | None,
    requested_by: str,
) -> tuple[StopRequest, str | None, str | None]:
    """Check the arguments of a stop; returns the request and the run and thread ids."""
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(
            f"stop() takes a config mapping such as {{'thread_id': ...}} as its positional "
            f"argument, not {config!r}; pass ids by keyword: stop(thread_id=...) or stop(run_id=...)"
        )
    thread_id = thread_id or thread_id_of(config)
    if run_id is None and config:
        run_id = config.get("run_id")
    for name, value in (("thread_id", thread_id), ("run_id", run_id), ("reason", reason)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string, not {value!r}")
    if thread_id is None and run_id is None:
        raise UserError("stop() needs thread_id=..., run_id=..., or a config with 'thread_id'")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int | float)):
        raise TypeError(f"grace must be a number of seconds or None, not {grace!r}")
    req = StopRequest(mode=check_mode(mode), reason=reason, grace=grace, requested_by=requested_by)
    return req, run_id, thread_id
