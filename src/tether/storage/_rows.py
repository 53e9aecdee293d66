"""The row codec that the SQLite and Postgres backends share: how tether lays out its tables.

Tables (the same in both backends, prefixed `tether_` so they can share a schema with an app):
- `tether_threads`: one row per thread, with its metadata (typed JSON) and `head_id`, the newest
  checkpoint. `commit()` compares `head_id` with the new checkpoint's parent under a lock.
- `tether_checkpoints`: one row per checkpoint. `channels` holds the typed JSON of `values`, except
  that `values["messages"]` is stored as null when that channel is a list of `Message`s.
- `tether_messages`: those messages, one row per distinct message per thread, keyed by `ref`, a
  128-bit BLAKE2b hash of the message's typed JSON. A message row is written once and never changes.
- `tether_runs`: one row per run, the `RunRecord` as JSON, with `status` and `created_at` columns
  for listing.
- `tether_events`: the event log, in append order. A row holds one event (`event_json_bytes`), or a
  run of consecutive text deltas of one message (see "Coalesced deltas" below).

A checkpoint's `msgs` column lists the refs of its messages, either as a snapshot
`{"refs": [...]}` (`msgs_base` is NULL), or as a delta `{"keep": n, "add": [...]}`: the first `n`
refs of the snapshot stored in checkpoint `msgs_base`, then `add`. A step that appends messages or
replaces the last ones writes a delta of a few refs; once a delta would list more than
`SNAPSHOT_AFTER` refs, the row is a new snapshot. So a commit writes O(changed messages) bytes, a
read is two rows plus the message rows, and the refs stored per checkpoint stay bounded.

To know which messages changed without re-encoding the whole history, a backend keeps a
`HeadCache`: per thread, the `MessageHead` of the last checkpoint it wrote or read, which holds
that checkpoint's message objects and their refs. A new checkpoint's messages that are the very
same objects (compared by identity) reuse their refs; only the others are encoded and hashed. The
entry is used only when the new checkpoint's parent is that very checkpoint, and the commit's
compare-and-swap then proves that the parent, its snapshot and its message rows are still stored. A stale or missing entry only costs speed: the commit then
encodes every message, writes a snapshot and inserts the message rows it needs with
`ON CONFLICT DO NOTHING`.

Coalesced deltas. A streamed answer is mostly `message_delta` events that differ only in `seq`,
`ts` and `content`; encoding each through the event schema cost ~10x what the rest of the token
path costs. So `encode_events` stores up to `DELTAS_PER_ROW` consecutive text deltas (same run,
node, path, message and role, consecutive seqs, no tool-call fragments) as one row,
`{"deltas": {run_id, thread_id, node, message_id, role, seq}, "ts": [...], "content": [...]}`
(plus `path` in `deltas` for a child run's forwarded deltas; rows written before it was added
hold none, which is the run's own `()`), whose `seq` column is the seq of its *last* event. Event ids stay per token: `decode_event_rows`
expands the row back into the very same events. A read of `seq > after_seq` selects every row
that holds an event after `after_seq` (seqs in a row are consecutive, so the row's last seq is
past `after_seq` exactly when one of its events is) and drops the events up to `after_seq`, so
re-joining from any event id stays exact and gapless. The engine's commits come as `EventBatch`es
whose text spans say which deltas qualify (the run's handle records them as it logs tokens), so the
token path compares nothing; any other sequence of events is compared field by field.

Decoding never builds anything but JSON types, `Message`s, `RunRecord`s and events; a row that does
not decode raises `CorruptRecordError` naming its table and id.
"""

from __future__ import annotations

import hashlib
import json
import operator
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

import msgspec

from ..errors import CheckpointConflictError, CorruptRecordError, UserError
from ..events import Event, MessageDeltaEvent, event_from_json, event_json_bytes
from ..messages import Message
from ..run import RunRecord
from ..serde import decode_value, dumps, encode_value, loads
from .base import Checkpoint, ThreadInfo

__all__ = [
    "CHECKPOINT_COLUMNS",
    "CHECKPOINT_FROM",
    "HEAD_COLUMNS",
    "SNAPSHOT_AFTER",
    "CheckpointRow",
    "HeadCache",
    "MessageHead",
    "MessageRefs",
    "build_cached_checkpoint",
    "build_checkpoint",
    "conflict",
    "decode_event",
    "decode_event_rows",
    "decode_messages",
    "decode_run",
    "decode_thread",
    "duplicate_checkpoint",
    "encode_checkpoint",
    "encode_event",
    "encode_events",
    "encode_run",
    "encode_thread_metadata",
    "identical_prefix",
    "message_refs",
    "metadata_matches",
]

SNAPSHOT_AFTER = 32
DELTAS_PER_ROW = 256  # bounds what a re-join from the middle of a row decodes in vain
MESSAGES = "messages"


@dataclass(frozen=True, slots=True)
class MessageHead:
    """What this process knows about the `messages` channel of one stored checkpoint."""

    checkpoint_id: str  # the stored checkpoint these messages belong to
    snapshot_id: str  # the checkpoint whose row holds `snapshot_refs` (may be `checkpoint_id`)
    snapshot_refs: tuple[str, ...]  # the full ref list stored in that snapshot row
    keep: int  # refs[:keep] == snapshot_refs[:keep]
    messages: tuple[Message, ...]  # the channel, in order; held, so identity checks are sound
    refs: tuple[str, ...]  # refs[i] is the ref of messages[i]


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A checkpoint encoded for storage, with the message rows it needs."""

    checkpoint: Checkpoint  # the original: ids, step, source and created_at are stored as is
    next: str  # JSON list of node names
    metadata: str  # typed JSON
    channels: str  # typed JSON of `values`, with the messages channel set to null
    msgs_base: str | None  # the snapshot checkpoint a delta refers to; None for a snapshot
    msgs: str | None  # the snapshot or delta JSON; None when messages are stored in `channels`
    new_messages: tuple[tuple[str, str], ...]  # (ref, body) rows the parent may not have stored
    head: MessageHead | None  # the cache entry that is true once this row is committed


# The columns a backend selects to read a checkpoint, in this order; the last one is the `msgs` of
# the row's snapshot (a self-join on `msgs_base`).
CHECKPOINT_COLUMNS = (
    "c.checkpoint_id, c.parent_id, c.run_id, c.step, c.next, c.source, c.created_at, "
    "c.metadata, c.channels, c.msgs_base, c.msgs, s.msgs"
)
CHECKPOINT_FROM = (
    "tether_checkpoints c LEFT JOIN tether_checkpoints s "
    "ON s.thread_id = c.thread_id AND s.checkpoint_id = c.msgs_base"
)
# The first 9 of those, from `tether_checkpoints c` alone: what `build_cached_checkpoint` needs.
HEAD_COLUMNS = CHECKPOINT_COLUMNS[: CHECKPOINT_COLUMNS.index(", c.msgs_base")]


@dataclass(frozen=True, slots=True)
class MessageRefs:
    """The decoded ref list of one checkpoint row."""

    refs: list[str]  # the refs of values["messages"], in order
    snapshot_id: str  # the checkpoint whose row holds the full list `snapshot_refs`
    snapshot_refs: tuple[str, ...]
    keep: int  # refs[:keep] == snapshot_refs[:keep]


class HeadCache:
    """A bounded, thread-safe map from thread id to the `MessageHead` last written or read."""

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity  # at most this many threads are remembered (LRU)
        self._heads: OrderedDict[str, MessageHead] = OrderedDict()

    def get(self, thread_id: str) -> MessageHead | None:
        with self._lock:
            head = self._heads.get(thread_id)
            if head is not None:
                self._heads.move_to_end(thread_id)
            return head

    def put(self, thread_id: str, head: MessageHead | None) -> None:
        with self._lock:
            if head is None:
                self._heads.pop(thread_id, None)
                return
            self._heads[thread_id] = head
            self._heads.move_to_end(thread_id)
            while len(self._heads) > self._capacity:
                self._heads.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._heads.clear()


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _utf8(text: str, where: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise _surrogate(exc, where) from None


def _surrogate(exc: UnicodeEncodeError, where: str) -> UserError:
    return UserError(
        f"{where} holds the unpaired surrogate {exc.object[exc.start : exc.end]!r}, "
        "which cannot be stored as UTF-8; remove it or encode the data first"
    )


def encode_checkpoint(checkpoint: Checkpoint, known: MessageHead | None) -> CheckpointRow:
    """Encode `checkpoint`, reusing the refs of `known` if it describes the checkpoint's parent.

    Raises `UserError` for values that cannot be stored.
    """
    values = checkpoint.values
    metadata = dumps(checkpoint.metadata, where="checkpoint metadata")
    next_ = _json(list(checkpoint.next))
    messages = values.get(MESSAGES) if isinstance(values, dict) else None
    base = known if known is not None and known.checkpoint_id == checkpoint.parent_id else None
    found = _message_refs(messages, base) if isinstance(messages, list | tuple) else None
    if found is None:
        channels = dumps(values)
        _utf8(channels, "state")
        return CheckpointRow(checkpoint, next_, metadata, channels, None, None, (), None)
    refs, new, same = found
    assert isinstance(messages, list | tuple)  # for mypy: `found` implies it
    inline = dict(values)
    inline[MESSAGES] = None
    channels = dumps(inline)
    _utf8(channels, "state")

    msgs_base = msgs = None
    if base is not None:
        # `refs` and the parent's refs agree up to the identity prefix, and the parent's refs
        # agree with the snapshot up to `base.keep`; extend past that only while refs match.
        snap = base.snapshot_refs
        shared = min(same, base.keep)
        while shared < min(len(refs), len(snap)) and refs[shared] == snap[shared]:
            shared += 1
        if len(refs) - shared <= SNAPSHOT_AFTER:
            msgs_base = snapshot_id = base.snapshot_id
            snapshot_refs, keep = snap, shared
            msgs = _json({"keep": keep, "add": refs[keep:]})
    if msgs is None:  # no usable parent, or too far from its snapshot: a new snapshot
        snapshot_id, snapshot_refs, keep = checkpoint.checkpoint_id, refs, len(refs)
        msgs = _json({"refs": refs})
    head = MessageHead(
        checkpoint.checkpoint_id, snapshot_id, snapshot_refs, keep, tuple(messages), refs
    )
    return CheckpointRow(
        checkpoint, next_, metadata, channels, msgs_base, msgs, tuple(new.items()), head
    )


def _message_refs(
    messages: Sequence[Any], base: MessageHead | None
) -> tuple[tuple[str, ...], dict[str, str], int] | None:
    """The refs of `messages`, the `{ref: body}` rows to write, and how many leading messages are
    the parent's own objects; None if `messages` is not a non-empty list of `Message`s.

    Messages that are the very objects of the parent (`base`) keep their refs unencoded; a step
    usually shares all but its last few messages with its parent, so this costs one pointer
    comparison per message and an encoding per new message.
    """
    if not messages:
        return None
    shared = 0
    kept: tuple[str, ...] = ()
    by_id: dict[int, str] = {}
    if base is not None:
        old = base.messages
        shared = identical_prefix(messages, old)
        kept = base.refs[:shared]
        # An edit or a removal: the parent's later messages may sit further on. Only those are
        # looked up, so replacing the last message does not cost a map of the whole history.
        by_id = {id(m): r for m, r in zip(old[shared:], base.refs[shared:], strict=True)}
    added: list[str] = []
    new: dict[str, str] = {}
    for i in range(shared, len(messages)):
        message = messages[i]
        if not isinstance(message, Message):
            return None
        ref = by_id.get(id(message))
        if ref is None:
            where = f"state[{MESSAGES!r}][{i}]"
            body = dumps(message, where=where)
            ref = hashlib.blake2b(_utf8(body, where), digest_size=16).hexdigest()
            new[ref] = body
        added.append(ref)
    return kept + tuple(added), new, shared


def identical_prefix(messages: Sequence[Any], old: Sequence[Message]) -> int:
    """How many leading items of `messages` are the very objects of `old`, position by position.

    Compared by identity, which is sound because `Message` is immutable and `old` is held. This
    C-level pass (about 15 ns a message), and copying the list, are all that a step's commit does
    per message of the thread; everything else is per new or changed message.
    """
    same = list(map(operator.is_, messages, old))
    # `count(True)` matches by identity, the fast path when every item is shared
    return len(same) if same.count(True) == len(same) else same.index(False)


def checkpoint_row_name(thread_id: str, checkpoint_id: str) -> str:
    return f"tether_checkpoints row {thread_id!r}/{checkpoint_id!r}"


def _load_json(text: Any, row: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError) as exc:
        raise CorruptRecordError(f"{row} does not hold valid JSON: {exc}") from None


def _str_list(data: Any) -> bool:
    return isinstance(data, list) and all(isinstance(x, str) for x in data)


def _snapshot_refs(data: Any, row: str) -> list[str]:
    refs = data.get("refs") if isinstance(data, dict) else None
    if not _str_list(refs):
        raise CorruptRecordError(f"{row} holds the malformed message snapshot {data!r}")
    return list(refs)  # type: ignore[arg-type]  # checked by _str_list


def message_refs(thread_id: str, record: Sequence[Any]) -> MessageRefs | None:
    """The message refs of a checkpoint record (see `CHECKPOINT_COLUMNS`), or None."""
    checkpoint_id, msgs_base, msgs, snapshot = record[0], record[9], record[10], record[11]
    if msgs is None:
        return None
    row = checkpoint_row_name(thread_id, checkpoint_id)
    data = _load_json(msgs, row)
    if msgs_base is None:
        refs = _snapshot_refs(data, row)
        return MessageRefs(refs, checkpoint_id, tuple(refs), len(refs))
    if snapshot is None:
        raise CorruptRecordError(f"{row} refers to the missing message snapshot {msgs_base!r}")
    base = _snapshot_refs(_load_json(snapshot, row), checkpoint_row_name(thread_id, msgs_base))
    keep = data.get("keep") if isinstance(data, dict) else None
    add = data.get("add") if isinstance(data, dict) else None
    if not isinstance(keep, int) or not 0 <= keep <= len(base) or not _str_list(add):
        raise CorruptRecordError(f"{row} holds the malformed message delta {data!r}")
    return MessageRefs(base[:keep] + add, msgs_base, tuple(base), keep)  # type: ignore[operator]


def decode_messages(thread_id: str, rows: Sequence[Sequence[Any]]) -> dict[str, Message]:
    """Decode `(ref, body)` rows of `tether_messages`."""
    out: dict[str, Message] = {}
    for ref, body in rows:
        row = f"tether_messages row {thread_id!r}/{ref!r}"
        message = loads(body, row=row)
        if not isinstance(message, Message):
            raise CorruptRecordError(f"{row} holds {type(message).__name__}, not a message")
        out[ref] = message
    return out


def build_checkpoint(
    thread_id: str,
    record: Sequence[Any],
    refs: MessageRefs | None,
    messages: Mapping[str, Message],
) -> tuple[Checkpoint, MessageHead | None]:
    """Decode a checkpoint record, given its refs and the decoded messages they name."""
    checkpoint_id, parent_id, run_id, step, next_, source, created_at, metadata, channels = record[
        :9
    ]
    row = checkpoint_row_name(thread_id, checkpoint_id)
    values = loads(channels, row=row)
    meta = loads(metadata, row=row)
    nodes = _load_json(next_, row)
    if (refs is not None and not isinstance(values, dict)) or not isinstance(meta, dict):
        raise CorruptRecordError(f"{row} holds values or metadata that are not objects")
    if not _str_list(nodes):
        raise CorruptRecordError(f"{row} holds the malformed next nodes {nodes!r}")
    head = None
    if refs is not None:
        missing = [r for r in refs.refs if r not in messages]
        if missing:
            raise CorruptRecordError(f"{row} refers to the missing message rows {missing!r}")
        listed = [messages[r] for r in refs.refs]
        values[MESSAGES] = listed
        head = MessageHead(
            checkpoint_id,
            refs.snapshot_id,
            refs.snapshot_refs,
            refs.keep,
            tuple(listed),
            tuple(refs.refs),
        )
    checkpoint = Checkpoint(
        checkpoint_id=checkpoint_id,
        thread_id=thread_id,
        parent_id=parent_id,
        run_id=run_id,
        step=step,
        values=values,
        next=tuple(nodes),
        source=source,
        created_at=created_at,
        metadata=meta,
    )
    return checkpoint, head


def build_cached_checkpoint(thread_id: str, record: Sequence[Any], head: MessageHead) -> Checkpoint:
    """Decode the `HEAD_COLUMNS` of the stored checkpoint `head` describes, taking
    its messages from `head` instead of decoding their rows: a read whose cost does not grow with
    the thread's length. The caller has checked that `record` is that very checkpoint.
    """
    empty = MessageRefs([], head.snapshot_id, head.snapshot_refs, 0)
    checkpoint, _ = build_checkpoint(thread_id, (*record[:9], None, None, None), empty, {})
    checkpoint.values[MESSAGES] = list(head.messages)
    return checkpoint


def encode_run(run: RunRecord) -> str:
    """A run record as typed JSON text; its metadata is tagged like state."""
    data = run.model_dump(mode="json", exclude={"metadata"})
    data["metadata"] = encode_value(run.metadata, where=f"metadata of run {run.run_id!r}")
    text = _json(data)
    _utf8(text, f"run {run.run_id!r}")
    return text


def decode_run(run_id: str, text: Any) -> RunRecord:
    """Decode a `tether_runs.record`; raises `CorruptRecordError` naming the row."""
    row = f"tether_runs row {run_id!r}"
    data = _load_json(text, row)
    try:
        if not isinstance(data, dict):
            raise TypeError(f"a run record is an object, not {type(data).__name__}")
        data["metadata"] = decode_value(data.get("metadata", {}))
        return RunRecord.model_validate(data)
    except (ValueError, TypeError) as exc:
        raise CorruptRecordError(f"{row} does not hold a valid run record: {exc}") from None


def encode_event(event: Event) -> str:
    """An event as JSON text (`event_json_bytes`); raises `UserError` if its data is not JSON."""
    try:
        return event_json_bytes(event).decode()
    except UnicodeEncodeError as exc:
        raise _surrogate(exc, f"event {event.seq} of run {event.run_id!r}") from None
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"event {event!r} cannot be stored: {exc}; custom event data must be JSON types"
        ) from None


def decode_event(row_id: Any, run_id: str, text: Any) -> Event:
    """Decode a `tether_events.body` of one event; raises `CorruptRecordError` naming the row."""
    return _event_from_data(row_id, run_id, _load_json(text, _event_row_name(row_id, run_id)))


EventRow = tuple[str, str, int, str]  # (run_id, thread_id, seq, body) of `tether_events`
# Deltas share a row when these are equal (and their seqs consecutive); tool_calls is () then.
_SHARED = operator.attrgetter(
    "message_id", "node", "path", "run_id", "thread_id", "role", "tool_calls"
)
_SEQ = operator.attrgetter("seq")
_TS = operator.attrgetter("ts")
_CONTENT = operator.attrgetter("content")
_JSON = msgspec.json.Encoder()


def encode_events(events: Sequence[Event]) -> list[EventRow]:
    """The `tether_events` rows for `events`: one per event, except that consecutive text deltas
    of one message share a row (see the module docstring). Raises `UserError` for data that
    cannot be stored.

    The text spans of an `EventBatch` are taken as they are; elsewhere, deltas are compared.
    """
    rows: list[EventRow] = []
    done = 0
    for first, end in getattr(events, "text_spans", ()):
        if first < done or not _is_span(events, first, end):  # out of order, or not a span
            continue  # (the batch was not made as `EventBatch` says): compare those events
        _encode_compared(events, done, first, rows)
        for i in range(first, end, DELTAS_PER_ROW):
            _flush_deltas(events[i : min(end, i + DELTAS_PER_ROW)], rows)  # type: ignore[arg-type]
        done = end
    _encode_compared(events, done, len(events), rows)
    return rows


def _is_span(events: Sequence[Event], first: int, end: int) -> bool:
    """A cheap check of an `EventBatch` text span, on its two ends: text deltas of one message
    as far apart as their seqs. (The events between are taken on trust.)"""
    if not 0 <= first < end <= len(events):
        return False
    a, b = events[first], events[end - 1]
    return (
        type(a) is MessageDeltaEvent
        and type(b) is MessageDeltaEvent
        and not a.tool_calls
        and _SHARED(a) == _SHARED(b)
        and b.seq - a.seq == end - 1 - first
    )


def _encode_compared(events: Sequence[Event], i: int, n: int, rows: list[EventRow]) -> None:
    """Append the rows of `events[i:n]`, comparing deltas to find the ones that share a row."""
    while i < n:
        first = events[i]
        if type(first) is not MessageDeltaEvent or first.tool_calls:
            rows.append((first.run_id, first.thread_id, first.seq, encode_event(first)))
            i += 1
            continue
        j = i + _joinable(events[i : min(n, i + DELTAS_PER_ROW)])
        _flush_deltas(events[i:j], rows)  # type: ignore[arg-type]  # all MessageDeltaEvents
        i = j


def _joinable(window: Sequence[Event]) -> int:
    """How many leading events of `window` (which starts with a text delta) can share its row.

    The token hot path: each test is a C-level pass over the window (`map` and `list.count`),
    not Python code per event; only where a test fails does a Python loop find the place.
    """
    size = _equal_prefix(list(map(type, window)), MessageDeltaEvent)
    deltas = window[:size]
    size = _equal_prefix(list(map(_SHARED, deltas)), _SHARED(deltas[0]))
    seqs = list(map(_SEQ, deltas[:size]))
    return _equal_prefix(list(map(operator.sub, seqs, count(seqs[0]))), 0)


def _equal_prefix(values: list[Any], value: Any) -> int:
    """How many leading items of `values` equal `value`."""
    if values.count(value) == len(values):
        return len(values)
    return next(i for i, item in enumerate(values) if item != value)


def _flush_deltas(batch: Sequence[MessageDeltaEvent], rows: list[EventRow]) -> None:
    first = batch[0]
    if len(batch) == 1:
        rows.append((first.run_id, first.thread_id, first.seq, encode_event(first)))
        return
    head: dict[str, Any] = {
        "run_id": first.run_id,
        "thread_id": first.thread_id,
        "node": first.node,
        "message_id": first.message_id,
        "role": first.role,
        "seq": first.seq,
    }
    if first.path:
        head["path"] = first.path
    data = {"deltas": head, "ts": list(map(_TS, batch)), "content": list(map(_CONTENT, batch))}
    try:
        text = _JSON.encode(data).decode()  # msgspec: ~2x pydantic-core's `to_json` on these lists
    except UnicodeEncodeError as exc:  # an unpaired surrogate in a token
        raise UserError(
            f"events {first.seq}-{batch[-1].seq} of run {first.run_id!r} cannot be stored: {exc}; "
            "remove unpaired surrogates from streamed text"
        ) from None
    rows.append((first.run_id, first.thread_id, batch[-1].seq, text))


def decode_event_rows(
    run_id: str, rows: Sequence[Sequence[Any]], *, after_seq: int = -1
) -> list[Event]:
    """Decode `(id, body)` rows of `tether_events` into the events with `seq > after_seq`;
    raises `CorruptRecordError` naming the row.
    """
    out: list[Event] = []
    for row_id, body in rows:
        data = _load_json(body, _event_row_name(row_id, run_id))
        if isinstance(data, dict) and "deltas" in data:
            out += _expand_deltas(row_id, run_id, data, after_seq)
        else:
            out.append(_event_from_data(row_id, run_id, data))
    return out


def _event_row_name(row_id: Any, run_id: str) -> str:
    return f"tether_events row {row_id!r} (run {run_id!r})"


def _event_from_data(row_id: Any, run_id: str, data: Any) -> Event:
    try:
        return event_from_json(data)
    except ValueError as exc:
        raise CorruptRecordError(
            f"{_event_row_name(row_id, run_id)} does not hold a valid event: {exc}"
        ) from None


def _expand_deltas(
    row_id: Any, run_id: str, data: dict[str, Any], after_seq: int
) -> list[MessageDeltaEvent]:
    head, stamps, texts = data.get("deltas"), data.get("ts"), data.get("content")
    if not (
        isinstance(head, dict)
        and isinstance(stamps, list)
        and isinstance(texts, list)
        and all(isinstance(head.get(k), str) for k in ("run_id", "thread_id", "message_id", "role"))
        and isinstance(head.get("node"), str | None)
        and _str_list(head.get("path", []))
        and type(head.get("seq")) is int
        and len(stamps) == len(texts)
        and all(type(t) is float or type(t) is int for t in stamps)
        and all(type(t) is str for t in texts)
    ):
        raise CorruptRecordError(
            f"{_event_row_name(row_id, run_id)} holds malformed coalesced deltas {data!r}"
        )
    first: int = head["seq"]
    rid, tid, node, mid, role = (
        head[k] for k in ("run_id", "thread_id", "node", "message_id", "role")
    )
    path = tuple(head.get("path", ()))
    return [
        MessageDeltaEvent(
            run_id=rid,
            thread_id=tid,
            seq=first + i,
            ts=float(stamps[i]),
            node=node,
            path=path,
            message_id=mid,
            content=texts[i],
            role=role,
        )
        for i in range(max(0, after_seq + 1 - first), len(texts))
    ]


def encode_thread_metadata(metadata: dict[str, Any]) -> str:
    text = dumps(metadata, where="thread metadata")
    _utf8(text, "thread metadata")
    return text


def decode_thread(thread_id: str, created_at: float, metadata: Any) -> tuple[ThreadInfo, Any]:
    """Decode a `tether_threads` row; also returns the stored (tagged) metadata for filtering."""
    row = f"tether_threads row {thread_id!r}"
    raw = _load_json(metadata, row)
    try:
        decoded = decode_value(raw)
    except ValueError as exc:
        raise CorruptRecordError(f"{row} does not hold valid tether JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise CorruptRecordError(f"{row} holds metadata that is not an object: {decoded!r}")
    return ThreadInfo(thread_id=thread_id, created_at=created_at, metadata=decoded), raw


def metadata_matches(stored: Any, want: dict[str, Any]) -> bool:
    """The memory backend's filter: every item of `want` equals the stored (tagged) item."""
    return isinstance(stored, dict) and all(stored.get(k) == v for k, v in want.items())


def conflict(thread_id: str, head: str | None, parent: str | None) -> CheckpointConflictError:
    return CheckpointConflictError(
        f"thread {thread_id!r} moved to checkpoint {head!r} while this commit expected "
        f"{parent!r}; reload the state and retry"
    )


def duplicate_checkpoint(checkpoint: Checkpoint) -> UserError:
    return UserError(
        f"thread {checkpoint.thread_id!r} already has a checkpoint {checkpoint.checkpoint_id!r}; "
        "give every checkpoint a new id"
    )
