"""`InMemoryCheckpointer`: the contract in process memory, for tests and throwaway apps.

Values are kept encoded as typed JSON data, exactly as a database backend would store them, so the
memory backend accepts and rejects the same states as SQLite and Postgres, and a caller that mutates
a returned value cannot change what is stored.

The one exception is the `messages` channel, when it is a list of `Message`s: it is kept as
the messages themselves (`Message` is immutable, so sharing the objects is safe), in a
`_History`: "the first `keep` messages of another `_History`, then these". A step that appends or
replaces a few messages stores just those, so the history is held once however many checkpoints
share it, and a commit neither encodes nor copies it (BENCHMARKS.md row 7). What tells the commit
which messages are old is the channel's `MessageTrace` (see `tether.messages`):
- once a commit stores a `MessageList`, it stamps the list with its `_History`, and a read
  returns a `MessageList` stamped the same way; `add_messages` passes the stamp on to the list it
  builds, up to the first message it replaced;
- so the next commit of that list skips the stamped prefix without looking at it, and checks for
  storability only the messages after it that are not among the stamped history's own from that
  position on;
- any other channel (a plain list, a tuple, a `MessageList` changed in place since) is compared
  with the parent's messages by identity, one pointer comparison per message
  (`identical_prefix`).
A `_History` more than `_MAX_DEPTH` links from a complete tuple is stored complete (a copy of the
history once per `_MAX_DEPTH` steps), so a read walks a bounded chain; a read builds the whole tuple once per checkpoint (then keeps it) and copies it
into the list it returns: one pointer copy per message, the part of `get_state` that still grows
with the thread.

Residual, as in the SQL backends' `HeadCache`: a message whose `metadata` dict is mutated in
place after it was committed or read is not detected as changed (here, the stored message changes
with it). And a `MessageList` changed behind its methods without a change of length
(`list.__setitem__(lst, i, m)` on the base class) keeps its stamp: the commit would then store the
stamped messages at those positions, not the list's.

Run records are kept as a tuple of their field values (`_Row`), about a sixth of a `RunRecord`
model (whose field set alone is 0.7 KiB): one is kept per run, so this is most of what the store
adds to an idle run (BENCHMARKS.md row 5). Reads build a fresh record from the row, with deep
copies of its mutable values (`metadata`, `interrupt`), so a caller that mutates the record passed
to `commit` or a returned one cannot change what is stored.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import Any

from ..errors import CheckpointConflictError
from ..events import CustomEvent, Event
from ..messages import Message, MessageList, MessageTrace
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
        stored = stamp = None
        if checkpoint is not None:
            parent = None
            if checkpoint.parent_id is not None:
                with self._lock:
                    parent = self._checkpoints.get(checkpoint.thread_id, {}).get(
                        checkpoint.parent_id
                    )
            stored, stamp = _store(checkpoint, parent)
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
        if stamp is not None:
            stamp()


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
# How many links `_History.messages_from` may walk before it reaches a node with its messages in
# full: a commit that would go further stores its messages in full (an O(thread) copy, once per
# this many steps), so a read walks at most this far.
_MAX_DEPTH = 256


@dataclass(eq=False, slots=True)
class _History:
    """The messages of a stored checkpoint's `messages` channel, stored as a change of others.

    Its messages are `base`'s first `keep` messages, then `added`. Nothing in it changes after it
    is made, except `full`, filled in once when the whole tuple is first needed; so a node may be
    shared by any number of checkpoints and lists (`MessageList` origins), of any thread.
    """

    base: _History | None  # None: `added` is all of its messages (and `full` is `added`)
    keep: int  # how many leading messages of `base` come first; 0 when `base` is None
    added: tuple[Message, ...]  # the messages after those, every one checked storable
    depth: int  # links from here to a node whose `full` was set when it was made: <= _MAX_DEPTH
    full: tuple[Message, ...] | None  # all `length` messages, once built

    @property
    def length(self) -> int:
        return self.keep + len(self.added)

    @classmethod
    def whole(cls, messages: tuple[Message, ...]) -> _History:
        return cls(None, 0, messages, 0, messages)

    @classmethod
    def after(cls, base: _History, keep: int, added: tuple[Message, ...]) -> _History:
        """`base`'s first `keep` messages, then `added`."""
        if keep == 0:
            return cls.whole(added)
        if keep == base.length and not added:
            return base
        node = cls(base, keep, added, base.depth + 1, None)
        if node.depth > _MAX_DEPTH:
            return cls.whole(node.messages_from(0))
        return node

    def messages_from(self, start: int) -> tuple[Message, ...]:
        """Its messages from position `start` on; walks back only as far as they reach."""
        if self.full is not None:
            return self.full[start:]
        parts: list[tuple[Message, ...]] = []
        node, end = self, self.length  # still needed: node's messages [start, end)
        while end > start:
            if node.full is not None:
                parts.append(node.full[start:end])
                break
            if end > node.keep:
                parts.append(node.added[max(start, node.keep) - node.keep : end - node.keep])
                end = node.keep
            assert node.base is not None  # a node without a base has `full`
            node = node.base
        if not parts:
            return ()
        # The oldest part is usually all but the last few messages: copy it once.
        found = parts.pop()
        if parts:
            found += (
                parts[0]
                if len(parts) == 1
                else tuple(itertools.chain.from_iterable(reversed(parts)))
            )
        if start == 0:
            self.full = found
        return found


@dataclass(frozen=True, slots=True)
class _Stored:
    """A stored checkpoint."""

    # the checkpoint with `values` and `metadata` encoded as typed JSON data; its messages channel
    # is None when `messages` holds it
    checkpoint: Checkpoint
    # values["messages"] when it is a non-empty list of `Message`s, every one checked storable
    messages: _History | None


def _store(
    checkpoint: Checkpoint, parent: _Stored | None
) -> tuple[_Stored, Callable[[], None] | None]:
    """The stored form of `checkpoint`; raises `UserError` for values that cannot be stored.

    With it, what to call once it is stored, if its messages channel is a `MessageList`: that
    stamps the list with the stored messages, so the next step's `add_messages` passes them on as
    its result's origin and the next commit skips them.
    """
    values = checkpoint.values
    channel = values.get(_MESSAGES)
    listed = channel if isinstance(channel, MessageList) else None
    trace = None if listed is None else listed.trace
    messages = _history(channel, trace, None if parent is None else parent.messages)
    stamp = None
    if messages is not None:
        values = dict(values)
        values[_MESSAGES] = None
        if listed is not None and trace is not None:
            stamp = partial(listed.stamp, trace, messages)
    encoded = replace(
        checkpoint,
        values=encode_value(values),
        metadata=encode_value(checkpoint.metadata, where="checkpoint metadata"),
    )
    return _Stored(encoded, messages), stamp


def _history(channel: Any, trace: MessageTrace | None, old: _History | None) -> _History | None:
    """`channel` as a `_History` if it is a non-empty list of `Message`s (else None), after checking
    that its messages that are not stored already can be stored.

    `trace` is `channel`'s trace, read before its items. When its origin is a `_History`, the
    leading messages it shares with it are skipped without a look: a step that appends or replaces
    a few messages costs the same at any length. Otherwise the channel is compared with `old` (the
    parent's messages), one pointer comparison per message.
    """
    if not isinstance(channel, list | tuple) or not channel:
        return None
    base: _History | None
    origin, shared = (None, 0) if trace is None else trace.shares  # one read: a consistent pair
    if isinstance(origin, _History):
        base = origin
        tail = channel[shared:]
        # Read again after the items: a change that began before the slice has dropped the trace.
        if channel.trace is not trace:  # type: ignore[union-attr]  # a MessageList: it has a trace
            return _history(channel, None, old)
    else:
        base = old
        shared = identical_prefix(channel, () if old is None else old.messages_from(0))
        tail = channel[shared:]
    # After an edit or a removal, the base's later messages may sit further on.
    known = set() if base is None else set(map(id, base.messages_from(shared)))
    for i, message in enumerate(tail, start=shared):
        if not isinstance(message, Message):
            return None
        if id(message) not in known:
            encode_value(message, where=f"state[{_MESSAGES!r}][{i}]")
    if base is None:
        return _History.whole(tuple(tail))
    return _History.after(base, shared, tuple(tail))


def _decoded(stored: _Stored) -> Checkpoint:
    values = decode_value(stored.checkpoint.values)
    if stored.messages is not None:
        history = stored.messages
        values[_MESSAGES] = MessageList.traced(history.messages_from(0), history)
    return replace(
        stored.checkpoint, values=values, metadata=decode_value(stored.checkpoint.metadata)
    )
