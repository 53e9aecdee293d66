"""The `Checkpointer` contract: what every storage backend keeps, and how it must behave.

A backend stores four things:
- threads, with metadata (`ThreadInfo`);
- checkpoints: the thread's state after each step, linked to their parent, the run that wrote them
  and the step number (`Checkpoint`);
- run records (`RunRecord`), including how a run was stopped;
- each run's event log, so a client can resume a stream after any `seq`.

Writes go through `commit()`, which applies a checkpoint, a batch of events and a run record in one
transaction. A checkpoint commits only if its `parent_id` is the thread's current head (the newest
checkpoint, or `None` for a thread without one); otherwise nothing is written and
`CheckpointConflictError` is raised, so of two concurrent writers exactly one wins.

Backends must be usable from any event loop and thread of the process (tether's sync API runs on a
background loop). Every method may be cancelled: a cancelled `commit()` is either fully applied or
not at all. Values are stored as typed JSON (`tether.serde`); a row that does not decode raises
`CorruptRecordError` naming the row.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from ..events import Event
from ..run import RunRecord

__all__ = ["Checkpoint", "Checkpointer", "EventBatch", "ThreadInfo"]


class EventBatch(list[Event]):
    """The events of a `commit()`, as the engine hands them over: a list, plus `text_spans`.

    Each text span is a `(first, end)` range of indexes into the list, in order and disjoint: two
    or more text deltas of one message, with consecutive seqs, that differ only in `seq`, `ts` and
    `content`. The run's handle records them as it logs the tokens (`RunHandle.text_spans`), so a
    backend can store each span as one row without comparing its events. A backend takes the
    events inside a span on trust (SQLite checks only its two ends), so build an `EventBatch`
    only from a handle's spans. Any other sequence of events works too: a backend that gets one
    finds such runs itself, or stores events one by one.
    """

    __slots__ = ("text_spans",)

    def __init__(self, events: Sequence[Event], text_spans: Sequence[tuple[int, int]]) -> None:
        super().__init__(events)
        self.text_spans = text_spans


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadInfo:
    """A conversation. `metadata` is free JSON (the server keeps the owner's key hash there)."""

    thread_id: str
    created_at: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The state of a thread after one step.

    `next` names the nodes that would run next (empty when the graph reached END); a run with no
    input continues from there. `source` says what wrote it: `input`, `step`, `stop` (a `now` stop
    committed partial output), `rollback`, `fork` or `update`.
    """

    checkpoint_id: str
    thread_id: str
    parent_id: str | None
    run_id: str | None
    step: int
    values: dict[str, Any]
    next: tuple[str, ...] = ()
    source: str = "step"
    created_at: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)


class Checkpointer(ABC):
    """Storage for threads, checkpoints, run records and event logs. See the module docstring."""

    # Seconds a `commit()` may take before the backend itself gives up. The engine waits at least
    # this long for a run's final commit, so the backend's own error is what gets reported.
    commit_timeout: float = 5.0

    async def setup(self) -> None:  # noqa: B027  # optional hook: most backends need none
        """Create tables or run migrations; called once before first use. Idempotent."""

    async def aclose(self) -> None:  # noqa: B027  # optional hook
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self:
        await self.setup()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # threads
    @abstractmethod
    async def put_thread(self, thread: ThreadInfo) -> None:
        """Create the thread, or replace its metadata if it exists."""

    @abstractmethod
    async def create_thread(self, thread: ThreadInfo) -> tuple[ThreadInfo, bool]:
        """Create the thread only if its id is free, atomically; never change an existing one.

        Returns the stored thread and whether this call created it. Of concurrent creators of one
        id, in any process, exactly one gets `True`; the others get its thread and `False`.
        """

    @abstractmethod
    async def get_thread(self, thread_id: str) -> ThreadInfo | None:
        """The thread, or `None`."""

    @abstractmethod
    async def list_threads(
        self, *, metadata: dict[str, Any] | None = None, limit: int = 100
    ) -> list[ThreadInfo]:
        """Threads whose metadata contains every item of `metadata`, newest first."""

    @abstractmethod
    async def delete_thread(self, thread_id: str) -> bool:
        """Delete the thread with its checkpoints, runs and events; False if it did not exist."""

    # checkpoints
    @abstractmethod
    async def get_checkpoint(
        self, thread_id: str, checkpoint_id: str | None = None
    ) -> Checkpoint | None:
        """The checkpoint `checkpoint_id` of the thread, or its head when it is `None`."""

    @abstractmethod
    async def list_checkpoints(
        self, thread_id: str, *, limit: int | None = None
    ) -> list[Checkpoint]:
        """The thread's checkpoints, newest first."""

    # runs
    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run record, or `None`."""

    @abstractmethod
    async def list_runs(
        self, thread_id: str | None = None, *, status: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Run records, newest first, of one thread (or all) and one status (or all)."""

    # events
    @abstractmethod
    async def read_events(self, run_id: str, *, after_seq: int = -1) -> list[Event]:
        """The logged events of the run with `seq > after_seq`, in order."""

    # the one write path
    @abstractmethod
    async def commit(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        events: Sequence[Event] = (),
        run: RunRecord | None = None,
    ) -> None:
        """Atomically store a checkpoint, append events and upsert a run record.

        Creates the checkpoint's thread if it does not exist. Raises `CheckpointConflictError`
        (and writes nothing) if `checkpoint.parent_id` is not the thread's head.
        """
