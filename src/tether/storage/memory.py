"""`InMemoryCheckpointer`: the contract in process memory, for tests and throwaway apps.

Values are kept encoded as typed JSON data, exactly as a database backend would store them, so the
memory backend accepts and rejects the same states as SQLite and Postgres, and a caller that mutates
a returned value cannot change what is stored.

The one exception is the `messages` channel, when it is a list of `Message`s: it is kept as a
tuple of the messages themselves (`_Stored.messages`). `Message` is immutable, so sharing the
objects is safe, and a step no longer encodes or decodes the whole history (BENCHMARKS.md row 7):
a commit checks for storability only the messages that are not the very objects of its parent
checkpoint (`identical_prefix`), and a read copies the tuple into a new list. What still grows
with the thread is a pointer comparison and a pointer copy per message. This is the rule the SQL
backends' `HeadCache` follows, with the same residual: a message whose `metadata` dict is mutated
in place after it was committed or read is not detected as changed (here, the stored message
changes with it).

Run records are kept as a tuple of their field values (`_Row`), about a sixth of a `RunRecord`
model (whose field set alone is 0.7 KiB): one is kept per run, so this is most of what the store
adds to an idle run (BENCHMARKS.md row 5). Reads build a fresh record from the row, with deep
copies of its mutable values (`metadata`, `interrupt`), so a caller that mutates the record passed
to `commit` or a returned one cannot change what is stored.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from operator import attrgetter
from typing import Any

from ..errors import CheckpointConflictError
from ..events import CustomEvent, Event
from ..messages import Message
from ..run import RunRecord
from ..serde import decode_value, encode_value
from ._rows import duplicate_checkpoint, identical_prefix
from .base import Checkpoint, Checkpointer, ThreadInfo

__all__ = ["InMemoryCheckpointer"]


class InMemoryCheckpointer(Checkpointer):
    """Keeps everything in dicts guarded by one lock; nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, ThreadInfo] = {}
        # thread_id -> {checkpoint_id: its stored form}, oldest first: the last one is the head
        self._checkpoints: dict[str, dict[str, _Stored]] = {}
        self._runs: dict[str, _Row] = {}  # run_id -> the record's field values (`_row`)
        self._events: dict[str, list[Event]] = {}

    async def put_thread(self, thread: ThreadInfo) -> None:
        with self._lock:
            old = self._threads.get(thread.thread_id)
            if old is not None:
                thread = replace(thread, created_at=old.created_at)
            self._threads[thread.thread_id] = replace(
                thread, metadata=encode_value(thread.metadata, where="thread metadata")
            )

    async def create_thread(self, thread: ThreadInfo) -> tuple[ThreadInfo, bool]:
        encoded = encode_value(thread.metadata, where="thread metadata")
        with self._lock:
            old = self._threads.get(thread.thread_id)
            if old is None:
                self._threads[thread.thread_id] = replace(thread, metadata=encoded)
        if old is None:
            return replace(thread, metadata=decode_value(encoded)), True
        return replace(old, metadata=decode_value(old.metadata)), False

    async def get_thread(self, thread_id: str) -> ThreadInfo | None:
        with self._lock:
            thread = self._threads.get(thread_id)
        return None if thread is None else replace(thread, metadata=decode_value(thread.metadata))

    async def list_threads(
        self, *, metadata: dict[str, Any] | None = None, limit: int = 100
    ) -> list[ThreadInfo]:
        want = encode_value(metadata or {})
        with self._lock:
            found = [
                t
                for t in self._threads.values()
                if all(t.metadata.get(k) == v for k, v in want.items())
            ]
        found.sort(key=lambda t: (t.created_at, t.thread_id), reverse=True)
        return [replace(t, metadata=decode_value(t.metadata)) for t in found[:limit]]

    async def delete_thread(self, thread_id: str) -> bool:
        with self._lock:
            existed = self._threads.pop(thread_id, None) is not None
            self._checkpoints.pop(thread_id, None)
            for run_id in [r[_RUN_ID] for r in self._runs.values() if r[_THREAD_ID] == thread_id]:
                del self._runs[run_id]
                self._events.pop(run_id, None)
        return existed

    async def get_checkpoint(
        self, thread_id: str, checkpoint_id: str | None = None
    ) -> Checkpoint | None:
        with self._lock:
            chain = self._checkpoints.get(thread_id, {})
            if checkpoint_id is None:
                found = next(reversed(chain.values()), None)
            else:
                found = chain.get(checkpoint_id)
        return None if found is None else _decoded(found)

    async def list_checkpoints(
        self, thread_id: str, *, limit: int | None = None
    ) -> list[Checkpoint]:
        with self._lock:
            chain = list(reversed(self._checkpoints.get(thread_id, {}).values()))
        return [_decoded(c) for c in chain[:limit]]

    async def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            run = self._runs.get(run_id)
        return None if run is None else _record(run)

    async def list_runs(
        self, thread_id: str | None = None, *, status: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if (thread_id is None or r[_THREAD_ID] == thread_id)
                and (status is None or r[_STATUS] == status)
            ]
        runs.sort(key=lambda r: (r[_CREATED_AT], r[_RUN_ID]), reverse=True)
        return [_record(r) for r in runs[:limit]]

    async def read_events(self, run_id: str, *, after_seq: int = -1) -> list[Event]:
        with self._lock:
            return [e for e in self._events.get(run_id, ()) if e.seq > after_seq]

    async def commit(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        events: Sequence[Event] = (),
        run: RunRecord | None = None,
    ) -> None:
        # Encode before taking the lock, so a value that cannot be stored changes nothing; the
        # databases refuse the same values.
        if run is not None:
            encode_value(run.metadata, where="run metadata")
        if CustomEvent in map(type, events):  # one C-level pass over a run's tokens
            for event in events:
                if isinstance(event, CustomEvent):
                    encode_value(event.data, where="custom event data")
        stored = None
        if checkpoint is not None:
            parent = None
            if checkpoint.parent_id is not None:
                with self._lock:
                    parent = self._checkpoints.get(checkpoint.thread_id, {}).get(
                        checkpoint.parent_id
                    )
            stored = _store(checkpoint, parent)
        with self._lock:
            if stored is not None:
                encoded = stored.checkpoint
                chain = self._checkpoints.setdefault(encoded.thread_id, {})
                last = next(reversed(chain.values()), None)
                head = None if last is None else last.checkpoint.checkpoint_id
                if encoded.parent_id != head:
                    raise CheckpointConflictError(
                        f"thread {encoded.thread_id!r} moved to checkpoint {head!r} while this "
                        f"commit expected {encoded.parent_id!r}; reload the state and retry"
                    )
                if encoded.checkpoint_id in chain:
                    raise duplicate_checkpoint(encoded)
                chain[encoded.checkpoint_id] = stored
                self._threads.setdefault(encoded.thread_id, ThreadInfo(thread_id=encoded.thread_id))
            for run_id, group in groupby(events, attrgetter("run_id")):
                self._events.setdefault(run_id, []).extend(group)
            if run is not None:
                self._threads.setdefault(run.thread_id, ThreadInfo(thread_id=run.thread_id))
                self._runs[run.run_id] = _row(run)


_Row = tuple[Any, ...]  # a run record's field values, in `RunRecord.model_fields` order
_FIELDS = tuple(RunRecord.model_fields)
_RUN_ID, _THREAD_ID, _STATUS, _CREATED_AT = (
    _FIELDS.index(name) for name in ("run_id", "thread_id", "status", "created_at")
)


def _row(run: RunRecord) -> _Row:
    """The stored form of `run`: its field values, mutable ones deep-copied."""
    return tuple(copy.deepcopy(getattr(run, name)) for name in _FIELDS)


def _record(row: _Row) -> RunRecord:
    """A fresh record from a stored row (already validated when it was stored)."""
    return RunRecord.model_construct(**dict(zip(_FIELDS, copy.deepcopy(row), strict=True)))


_MESSAGES = "messages"


@dataclass(frozen=True, slots=True)
class _Stored:
    """A stored checkpoint."""

    # the checkpoint with `values` and `metadata` encoded as typed JSON data; its messages channel
    # is None when `messages` holds it
    checkpoint: Checkpoint
    # values["messages"] when it is a non-empty list of `Message`s, every one checked storable
    messages: tuple[Message, ...] | None


def _store(checkpoint: Checkpoint, parent: _Stored | None) -> _Stored:
    """The stored form of `checkpoint`; raises `UserError` for values that cannot be stored.

    Messages that are the very objects of `parent`'s messages were checked when it was stored.
    """
    values = checkpoint.values
    messages = _messages(values.get(_MESSAGES), () if parent is None else parent.messages or ())
    if messages is not None:
        values = dict(values)
        values[_MESSAGES] = None
    encoded = replace(
        checkpoint,
        values=encode_value(values),
        metadata=encode_value(checkpoint.metadata, where="checkpoint metadata"),
    )
    return _Stored(encoded, messages)


def _messages(channel: Any, old: tuple[Message, ...]) -> tuple[Message, ...] | None:
    """`channel` as a tuple if it is a non-empty list of `Message`s (else None), after checking
    that the ones not in `old` can be stored."""
    if not isinstance(channel, list | tuple) or not channel:
        return None
    shared = identical_prefix(channel, old)
    # After an edit or a removal, the parent's later messages may sit further on.
    known = set(map(id, old[shared:]))
    for i in range(shared, len(channel)):
        message = channel[i]
        if not isinstance(message, Message):
            return None
        if id(message) not in known:
            encode_value(message, where=f"state[{_MESSAGES!r}][{i}]")
    # A step that leaves the channel as it was shares its parent's tuple: no copy to keep.
    return old if shared == len(old) == len(channel) else tuple(channel)


def _decoded(stored: _Stored) -> Checkpoint:
    values = decode_value(stored.checkpoint.values)
    if stored.messages is not None:
        values[_MESSAGES] = list(stored.messages)
    return replace(
        stored.checkpoint, values=values, metadata=decode_value(stored.checkpoint.metadata)
    )
