"""The storage conformance suite: one set of expectations for every `Checkpointer` backend.

Each test takes the `backend` and `checkpointer` fixtures (see `conftest.py`), which are
parametrized over memory, SQLite and Postgres; `test_conformance.py` collects them. A backend
passes when it behaves exactly like the others: the memory backend is the reference, and a test
that only a database can run (reopening, corrupt rows) says why it skips memory.
"""

from __future__ import annotations

import functools
import random
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from tether.errors import CheckpointConflictError, CorruptRecordError, UserError
from tether.events import (
    CheckpointSaved,
    CustomEvent,
    Event,
    MessageDeltaEvent,
    MessageEvent,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)
from tether.ids import new_id
from tether.messages import Message, ToolCall, ToolCallDelta
from tether.run import RunRecord
from tether.storage import Checkpoint, Checkpointer, InMemoryCheckpointer, ThreadInfo


@dataclass
class Backend:
    """One backend under test: how to open it, and how to reach its rows behind tether's back."""

    name: str  # "memory", "sqlite" or "postgres"
    location: str | None = None  # the SQLite file or the Postgres DSN; None for memory
    opened: list[Checkpointer] = field(default_factory=list)  # closed by the fixture

    @classmethod
    def memory(cls) -> Backend:
        return cls("memory")

    @classmethod
    def sqlite(cls, path: str) -> Backend:
        return cls("sqlite", path)

    @classmethod
    def postgres(cls, dsn: str) -> Backend:
        return cls("postgres", dsn)

    @property
    def durable(self) -> bool:
        return self.name != "memory"

    def open(self) -> Checkpointer:
        """A new checkpointer on the same data (for memory: the one instance)."""
        store: Checkpointer
        if self.name == "memory":
            if self.opened:
                return self.opened[0]
            store = InMemoryCheckpointer()
        elif self.name == "sqlite":
            from tether.storage.sqlite import SqliteCheckpointer

            assert self.location is not None
            store = SqliteCheckpointer(self.location)
        else:
            from tether.storage.postgres import PostgresCheckpointer

            assert self.location is not None
            store = PostgresCheckpointer(self.location)
        self.opened.append(store)
        return store

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL (with `?` placeholders) on the backend's database, bypassing tether."""
        if self.name == "sqlite":
            assert self.location is not None
            with closing(sqlite3.connect(self.location)) as conn, conn:
                return conn.execute(sql, params).fetchall()
        if self.name == "postgres":
            import psycopg

            assert self.location is not None
            with psycopg.connect(self.location, autocommit=True) as pg:
                cur = pg.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []
        raise AssertionError(f"the {self.name!r} backend has no SQL")


# helpers


def checkpoint(
    thread_id: str,
    parent_id: str | None,
    values: dict[str, Any],
    *,
    step: int = 0,
    run_id: str | None = None,
    next: tuple[str, ...] = (),
    source: str = "step",
    metadata: dict[str, Any] | None = None,
) -> Checkpoint:
    return Checkpoint(
        checkpoint_id=new_id(),
        thread_id=thread_id,
        parent_id=parent_id,
        run_id=run_id,
        step=step,
        values=values,
        next=next,
        source=source,
        metadata=metadata or {},
    )


def run_record(thread_id: str, **fields: Any) -> RunRecord:
    return RunRecord(run_id=new_id(), thread_id=thread_id, **fields)


def events_for(run: RunRecord, seqs: range) -> list[Event]:
    return [
        MessageDeltaEvent(
            run_id=run.run_id,
            thread_id=run.thread_id,
            seq=seq,
            ts=1_700_000_000.0 + seq,
            node="agent",
            message_id="m1",
            content=f"tok{seq} ",
        )
        for seq in seqs
    ]


def assistant_with_tools() -> Message:
    return Message.assistant(
        "let me check",
        tool_calls=(
            ToolCall(id="call_1", name="weather", arguments='{"city": "Paris"}'),
            ToolCall(id="call_2", name="time", arguments="{}"),
        ),
        metadata={"model": "scripted", "usage": {"tokens": 7}},
    )


async def chain(
    store: Checkpointer, thread_id: str, states: Sequence[dict[str, Any]]
) -> list[Checkpoint]:
    """Commit `states` as consecutive checkpoints of the thread; returns them, oldest first."""
    out: list[Checkpoint] = []
    for step, values in enumerate(states):
        cp = checkpoint(thread_id, out[-1].checkpoint_id if out else None, values, step=step)
        await store.commit(checkpoint=cp)
        out.append(cp)
    return out


def assert_same_checkpoint(got: Checkpoint | None, want: Checkpoint) -> None:
    assert got is not None
    assert got == want
    # dict equality ignores order; storage must also keep the channels' order
    assert list(got.values) == list(want.values)


def as_stored(values: dict[str, Any]) -> dict[str, Any]:
    """`values` as every backend returns it: tuples become lists."""

    def convert(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    converted: dict[str, Any] = convert(values)
    return converted


# threads


async def test_thread_roundtrips_metadata(checkpointer: Checkpointer) -> None:
    meta = {"owner": "key-hash", "tags": ["a", "b"], "n": 3, "nested": {"$ref": 1, "ok": None}}
    thread = ThreadInfo(thread_id=new_id(), created_at=1234.5, metadata=meta)
    await checkpointer.put_thread(thread)
    assert await checkpointer.get_thread(thread.thread_id) == thread


async def test_put_thread_replaces_metadata_and_keeps_created_at(
    checkpointer: Checkpointer,
) -> None:
    tid = new_id()
    await checkpointer.put_thread(ThreadInfo(thread_id=tid, created_at=10.0, metadata={"a": 1}))
    await checkpointer.put_thread(ThreadInfo(thread_id=tid, created_at=20.0, metadata={"b": 2}))
    assert await checkpointer.get_thread(tid) == ThreadInfo(
        thread_id=tid, created_at=10.0, metadata={"b": 2}
    )


async def test_create_thread_inserts_only_if_absent_and_never_changes_the_owner(
    checkpointer: Checkpointer,
) -> None:
    tid = new_id()
    first = ThreadInfo(thread_id=tid, created_at=10.0, metadata={"owner": "A"})
    assert await checkpointer.create_thread(first) == (first, True)
    second = ThreadInfo(thread_id=tid, created_at=20.0, metadata={"owner": "B"})
    assert await checkpointer.create_thread(second) == (first, False)
    assert await checkpointer.get_thread(tid) == first


async def test_concurrent_creators_of_one_id_exactly_one_wins(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    # Separate checkpointer instances (for a database: separate connections), all at once.
    stores = [checkpointer, *(backend.open() for _ in range(3))]
    for trial in range(10):
        tid = f"race-{trial}-{new_id()}"
        results: list[tuple[ThreadInfo, bool]] = []

        async def create(
            store: Checkpointer,
            owner: str,
            tid: str = tid,
            results: list[tuple[ThreadInfo, bool]] = results,
        ) -> None:
            info = ThreadInfo(thread_id=tid, metadata={"owner": owner})
            results.append(await store.create_thread(info))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i, store in enumerate(stores * 2):
                    tg.start_soon(create, store, f"key{i}")
        winners = [info for info, created in results if created]
        assert len(winners) == 1
        assert {info.metadata["owner"] for info, _ in results} == {winners[0].metadata["owner"]}
        stored = await checkpointer.get_thread(tid)
        assert stored is not None
        assert stored.metadata == winners[0].metadata


async def test_unknown_ids_read_as_empty(checkpointer: Checkpointer) -> None:
    assert await checkpointer.get_thread("nope") is None
    assert await checkpointer.get_checkpoint("nope") is None
    assert await checkpointer.get_checkpoint("nope", "nope") is None
    assert await checkpointer.list_checkpoints("nope") == []
    assert await checkpointer.get_run("nope") is None
    assert await checkpointer.list_runs("nope") == []
    assert await checkpointer.read_events("nope") == []
    assert await checkpointer.delete_thread("nope") is False


async def test_list_threads_newest_first_with_limit(checkpointer: Checkpointer) -> None:
    ids = [f"t{i}" for i in range(5)]
    for i, tid in enumerate(ids):
        await checkpointer.put_thread(ThreadInfo(thread_id=tid, created_at=100.0 + i))
    # equal created_at: the larger id comes first
    await checkpointer.put_thread(ThreadInfo(thread_id="t9", created_at=104.0))
    listed = await checkpointer.list_threads()
    assert [t.thread_id for t in listed] == ["t9", "t4", "t3", "t2", "t1", "t0"]
    assert [t.thread_id for t in await checkpointer.list_threads(limit=2)] == ["t9", "t4"]
    # ids compare by code point, as in Python, whatever the database's collation
    for tid in ("Z", "a", "_"):
        await checkpointer.put_thread(ThreadInfo(thread_id=tid, created_at=200.0))
    assert [t.thread_id for t in await checkpointer.list_threads(limit=3)] == ["a", "_", "Z"]


async def test_list_threads_filters_by_metadata(checkpointer: Checkpointer) -> None:
    metas: dict[str, dict[str, Any]] = {
        "a1": {"owner": "alice", "tier": 1},
        "b1": {"owner": "bob"},
        "a2": {"owner": "alice", "tags": ["x", "y"]},
        "n1": {"nested": {"k": 1, "j": 2}, "owner": "carol"},
        "e1": {},
    }
    for i, (tid, meta) in enumerate(metas.items()):
        await checkpointer.put_thread(ThreadInfo(thread_id=tid, created_at=float(i), metadata=meta))

    async def ids(metadata: dict[str, Any], limit: int = 100) -> list[str]:
        found = await checkpointer.list_threads(metadata=metadata, limit=limit)
        return [t.thread_id for t in found]

    assert await ids({"owner": "alice"}) == ["a2", "a1"]
    assert await ids({"owner": "alice"}, limit=1) == ["a2"]
    assert await ids({"owner": "alice", "tier": 1}) == ["a1"]
    assert await ids({"tags": ["x", "y"]}) == ["a2"]
    assert await ids({"tags": ["x"]}) == []  # items must be equal, not contained
    assert await ids({"nested": {"j": 2, "k": 1}}) == ["n1"]
    assert await ids({"nested": {"k": 1}}) == []
    assert await ids({"owner": "mallory"}) == []
    assert await ids({}) == ["e1", "n1", "a2", "b1", "a1"]


async def test_delete_thread_removes_everything_it_holds(checkpointer: Checkpointer) -> None:
    tid, other = new_id(), new_id()
    messages = [Message.user("hi"), Message.assistant("hello")]
    for thread_id in (tid, other):
        run = run_record(thread_id, status="completed")
        cps = await chain(
            checkpointer, thread_id, [{"messages": messages[:1]}, {"messages": messages}]
        )
        await checkpointer.commit(events=events_for(run, range(3)), run=run)
    tid_run = (await checkpointer.list_runs(tid))[0]

    assert await checkpointer.delete_thread(tid) is True
    assert await checkpointer.get_thread(tid) is None
    assert await checkpointer.get_checkpoint(tid) is None
    assert await checkpointer.list_checkpoints(tid) == []
    assert await checkpointer.get_run(tid_run.run_id) is None
    assert await checkpointer.list_runs(tid) == []
    assert await checkpointer.read_events(tid_run.run_id) == []
    assert await checkpointer.delete_thread(tid) is False
    # the other thread is untouched
    assert_same_checkpoint(await checkpointer.get_checkpoint(other), cps[-1])
    assert len(await checkpointer.list_runs(other)) == 1

    # the same thread id starts over from nothing, with the same message objects
    again = await chain(checkpointer, tid, [{"messages": messages}])
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), again[0])


async def test_commit_creates_missing_thread(checkpointer: Checkpointer) -> None:
    tid = new_id()
    await checkpointer.commit(checkpoint=checkpoint(tid, None, {"x": 1}))
    thread = await checkpointer.get_thread(tid)
    assert thread is not None
    assert thread.metadata == {}

    run_only = new_id()
    await checkpointer.commit(run=run_record(run_only))
    assert await checkpointer.get_thread(run_only) is not None


# checkpoints


async def test_checkpoint_chain_has_head_history_and_links(checkpointer: Checkpointer) -> None:
    tid, run_id = new_id(), new_id()
    first = checkpoint(tid, None, {"n": 0}, source="input", next=("agent",), run_id=run_id)
    second = checkpoint(
        tid,
        first.checkpoint_id,
        {"n": 1},
        step=1,
        run_id=run_id,
        next=("tools", "agent"),
        metadata={"writes": {"agent": 1}},
    )
    third = checkpoint(tid, second.checkpoint_id, {"n": 2}, step=2, source="stop", run_id=run_id)
    for cp in (first, second, third):
        await checkpointer.commit(checkpoint=cp)

    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), third)
    for cp in (first, second, third):
        assert_same_checkpoint(await checkpointer.get_checkpoint(tid, cp.checkpoint_id), cp)
    history = await checkpointer.list_checkpoints(tid)
    assert history == [third, second, first]
    assert [cp.parent_id for cp in history] == [second.checkpoint_id, first.checkpoint_id, None]
    assert await checkpointer.list_checkpoints(tid, limit=2) == [third, second]
    # a checkpoint id is looked up within its own thread only
    assert await checkpointer.get_checkpoint(new_id(), first.checkpoint_id) is None


async def test_first_checkpoint_must_have_no_parent(checkpointer: Checkpointer) -> None:
    tid = new_id()
    with pytest.raises(CheckpointConflictError):
        await checkpointer.commit(checkpoint=checkpoint(tid, "made-up", {"x": 1}))
    assert await checkpointer.get_checkpoint(tid) is None
    assert await checkpointer.get_thread(tid) is None


async def test_values_roundtrip_exactly(checkpointer: Checkpointer) -> None:
    tool_call = assistant_with_tools()
    values: dict[str, Any] = {
        "zeta": 1,  # channel order is kept, not sorted
        "messages": [
            Message.system("be brief"),
            Message.user("weather?", name="ann"),
            tool_call,
            Message.tool("sunny", tool_call_id="call_1"),
            Message.tool("cancelled", tool_call_id="call_2", status="cancelled"),
            Message.assistant("It is sun", status="stopped"),
        ],
        "alpha": {"$tagged": {"$message": "not a message"}, "list": [1, 2.5, True, None]},
        "tuple": (1, ("a", "b")),
        "big": 2**62,
        "neg": -0.0,
        "pending_message": Message.user("in another channel"),
        "empty": [],
    }
    cp = checkpoint(new_id(), None, values, metadata={"$source": "test", "k": [1]})
    await checkpointer.commit(checkpoint=cp)
    got = await checkpointer.get_checkpoint(cp.thread_id)
    assert_same_checkpoint(got, replace(cp, values=as_stored(values)))
    assert got is not None
    assert got.values["messages"][2].tool_calls == tool_call.tool_calls


async def test_messages_channel_that_is_not_a_message_list_roundtrips(
    checkpointer: Checkpointer,
) -> None:
    msg = Message.user("hi")
    states: list[dict[str, Any]] = [
        {"messages": ["plain", "strings"]},
        {"messages": [msg, "mixed"]},
        {"messages": []},
        {"messages": (msg, Message.assistant("tuple"))},
        {"messages": None},
        {"messages": {"not": "a list"}},
        {"other": 1},
    ]
    cps = await chain(checkpointer, new_id(), states)
    for cp in cps:
        got = await checkpointer.get_checkpoint(cp.thread_id, cp.checkpoint_id)
        assert_same_checkpoint(got, replace(cp, values=as_stored(cp.values)))


async def test_message_history_is_exact_after_many_edits(checkpointer: Checkpointer) -> None:
    """Appends, in-place replacements, removals, rollbacks and re-reads, checked step by step."""
    rng = random.Random(20240601)
    tid = new_id()
    messages: list[Message] = [Message.system("sys")]
    committed: list[Checkpoint] = []
    for step in range(120):
        op = rng.choice(
            ["append", "append", "append", "stream", "edit", "drop", "rollback", "reread"]
        )
        if op == "append" or not messages:
            messages = [*messages, Message.user(f"u{step} " + "x" * rng.randrange(50))]
        elif op == "stream":  # the last message grows, same id
            last = messages[-1]
            messages = [*messages[:-1], last.model_copy(update={"content": last.content + "+"})]
        elif op == "edit":
            i = rng.randrange(len(messages))
            changed = messages[i].model_copy(update={"metadata": {"edited": step}})
            messages = [*messages[:i], changed, *messages[i + 1 :]]
        elif op == "drop":
            del messages[rng.randrange(len(messages))]
            messages = list(messages)
        elif op == "rollback" and len(committed) > 3:
            old = await checkpointer.get_checkpoint(
                tid, committed[rng.randrange(len(committed) - 1)].checkpoint_id
            )
            assert old is not None
            messages = list(old.values["messages"]) if "messages" in old.values else []
        elif op == "reread" and committed:
            head = await checkpointer.get_checkpoint(tid)
            assert head is not None
            messages = list(head.values.get("messages", []))
        values: dict[str, Any] = {"step": step, "messages": list(messages)}
        cp = checkpoint(tid, committed[-1].checkpoint_id if committed else None, values, step=step)
        await checkpointer.commit(checkpoint=cp)
        committed.append(cp)

    history = await checkpointer.list_checkpoints(tid)
    assert history == list(reversed(committed))
    for cp in committed[::7]:
        assert_same_checkpoint(await checkpointer.get_checkpoint(tid, cp.checkpoint_id), cp)


async def test_a_step_stores_only_what_it_changed(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    """The history is stored once: a step adds its new messages and a short ref list."""
    if not backend.durable:
        pytest.skip("the memory backend has no rows to count")
    tid = new_id()
    messages = [Message.user(f"m{i} " + "x" * 200) for i in range(50)]
    (head,) = await chain(checkpointer, tid, [{"messages": messages}])
    for step in range(1, 81):
        if step % 4 == 0:  # a streamed answer replaced in place, as the engine does
            last = messages[-1].model_copy(update={"content": messages[-1].content + "!"})
            messages = [*messages[:-1], last]
        else:
            messages = [*messages, Message.assistant(f"a{step} " + "y" * 200)]
        cp = checkpoint(tid, head.checkpoint_id, {"messages": messages}, step=step)
        await checkpointer.commit(checkpoint=cp)
        head = cp
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), head)

    ((stored,),) = backend.execute(
        "SELECT count(*) FROM tether_messages WHERE thread_id = ?", (tid,)
    )
    assert stored == 50 + 80  # each new or changed message once; nothing rewritten
    rows = backend.execute(
        "SELECT msgs_base IS NULL, length(msgs) FROM tether_checkpoints WHERE thread_id = ?", (tid,)
    )
    snapshots = [size for is_snapshot, size in rows if is_snapshot]
    deltas = [size for is_snapshot, size in rows if not is_snapshot]
    assert len(snapshots) <= 1 + 80 // 32
    assert max(deltas) < 40 * 35  # at most 32 refs of 34 characters, plus the JSON around them


async def test_large_state_roundtrips(checkpointer: Checkpointer) -> None:
    chunk = "lorem ipsum dolor sit amet " * 40  # about 1 KB
    messages = [Message.user(f"{i} {chunk}") for i in range(1024)]  # about 1 MB
    tid = new_id()
    cps = await chain(
        checkpointer,
        tid,
        [
            {"messages": messages, "blob": chunk * 64},
            {"messages": [*messages, Message.assistant("ok")]},
        ],
    )
    for cp in cps:
        assert_same_checkpoint(await checkpointer.get_checkpoint(tid, cp.checkpoint_id), cp)


async def test_unicode_roundtrips(checkpointer: Checkpointer) -> None:
    text = "héllo 👋🏽 世界 مرحبا ǅ e\u0301 \U0001f9d1\u200d\U0001f4bb \t\n\"'\\ \u2028"
    tid = f"thread-{text[:12]}"
    thread = ThreadInfo(thread_id=tid, created_at=1.0, metadata={text: text, "k": [text]})
    await checkpointer.put_thread(thread)
    assert await checkpointer.get_thread(tid) == thread
    assert [t.thread_id for t in await checkpointer.list_threads(metadata={text: text})] == [tid]

    run = run_record(tid, metadata={"why": text}, stop_reason=text)
    message = Message.assistant(text, metadata={text: text})
    events: list[Event] = [
        MessageEvent(run_id=run.run_id, thread_id=tid, seq=0, ts=1.0, node=text, message=message),
        CustomEvent(run_id=run.run_id, thread_id=tid, seq=1, ts=1.0, data={text: [text]}),
    ]
    cp = checkpoint(tid, None, {text: text, "messages": [message]}, metadata={"note": text})
    await checkpointer.commit(checkpoint=cp, events=events, run=run)
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), cp)
    assert await checkpointer.read_events(run.run_id) == events
    assert await checkpointer.get_run(run.run_id) == run


async def test_mutating_returned_values_changes_nothing_stored(checkpointer: Checkpointer) -> None:
    hi = Message.user("hi")
    values: dict[str, Any] = {"messages": [hi], "data": {"list": [1, 2]}}
    cp = checkpoint(new_id(), None, values)
    await checkpointer.commit(checkpoint=cp)
    values["data"]["list"].append(3)  # the caller's own copy
    got = await checkpointer.get_checkpoint(cp.thread_id)
    assert got is not None
    assert got.values["data"] == {"list": [1, 2]}
    got.values["data"]["list"].append(4)
    got.values["messages"].append(Message.user("sneaky"))
    again = await checkpointer.get_checkpoint(cp.thread_id)
    assert again is not None
    assert again.values == {"messages": [hi], "data": {"list": [1, 2]}}


# runs


async def test_mutating_a_run_record_changes_nothing_stored(checkpointer: Checkpointer) -> None:
    run = run_record(new_id(), status="running", metadata={"tags": ["a"]})
    await checkpointer.commit(run=run)
    run.status = "completed"  # the caller's own record, changed after the commit
    run.metadata["tags"].append("b")
    got = await checkpointer.get_run(run.run_id)
    assert got is not None
    assert (got.status, got.metadata) == ("running", {"tags": ["a"]})
    got.metadata["tags"].append("c")
    [listed] = await checkpointer.list_runs(run.thread_id)
    listed.metadata["tags"].append("d")
    again = await checkpointer.get_run(run.run_id)
    assert again is not None
    assert (again.status, again.metadata) == ("running", {"tags": ["a"]})


async def test_runs_upsert_and_list_newest_first(checkpointer: Checkpointer) -> None:
    tid, other = new_id(), new_id()
    old = run_record(tid, created_at=1.0, status="completed")
    mid = run_record(tid, created_at=2.0, status="cancelled")
    new = run_record(tid, created_at=3.0, status="running")
    elsewhere = run_record(other, created_at=2.5, status="running")
    for run in (old, mid, new, elsewhere):
        await checkpointer.commit(run=run)

    assert await checkpointer.list_runs(tid) == [new, mid, old]
    assert await checkpointer.list_runs(tid, limit=2) == [new, mid]
    assert await checkpointer.list_runs(tid, status="cancelled") == [mid]
    assert await checkpointer.list_runs(status="running") == [new, elsewhere]
    assert await checkpointer.list_runs() == [new, elsewhere, mid, old]

    finished = new.model_copy(update={"status": "completed", "finished_at": 4.0})
    await checkpointer.commit(run=finished)  # upsert: same run id
    assert await checkpointer.get_run(new.run_id) == finished
    assert await checkpointer.list_runs(status="running") == [elsewhere]
    assert len(await checkpointer.list_runs(tid)) == 3


async def test_run_record_with_stop_fields_roundtrips(checkpointer: Checkpointer) -> None:
    run = run_record(
        new_id(),
        status="cancelled",
        app="chat",
        created_at=1_700_000_000.123456,
        started_at=1_700_000_000.5,
        finished_at=1_700_000_002.25,
        stop_requested_at=1_700_000_001.0,
        stopped_at=1_700_000_001.004,
        stop_mode="now",
        stop_reason="user pressed stop",
        stop_requested_by="user",
        multitask_strategy="interrupt",
        worker="host:1234:boot",
        heartbeat_at=1_700_000_001.5,
        metadata={"request": {"ip": "127.0.0.1"}, "msg": Message.user("kept as a message")},
    )
    await checkpointer.commit(run=run)
    assert await checkpointer.get_run(run.run_id) == run


# events


async def test_events_append_and_read_after_seq(checkpointer: Checkpointer) -> None:
    run = run_record(new_id())
    first, second = events_for(run, range(3)), events_for(run, range(3, 6))
    await checkpointer.commit(events=first, run=run)
    await checkpointer.commit(events=second)
    assert await checkpointer.read_events(run.run_id) == first + second
    assert await checkpointer.read_events(run.run_id, after_seq=2) == second
    assert await checkpointer.read_events(run.run_id, after_seq=4) == second[-1:]
    assert await checkpointer.read_events(run.run_id, after_seq=5) == []


async def test_all_event_types_roundtrip(checkpointer: Checkpointer) -> None:
    tid, rid = new_id(), new_id()
    base: dict[str, Any] = {"run_id": rid, "thread_id": tid, "ts": 1_700_000_000.25}
    events: list[Event] = [
        RunStarted(**base, seq=0),
        NodeStarted(**base, seq=1, node="agent", step=1),
        MessageDeltaEvent(
            **base,
            seq=2,
            node="agent",
            message_id="m1",
            content="let",
            tool_calls=(ToolCallDelta(index=0, id="call_1", name="weather", arguments='{"ci'),),
        ),
        MessageEvent(**base, seq=3, node="agent", message=assistant_with_tools()),
        ToolCallStarted(
            **base,
            seq=4,
            node="tools",
            tool_call_id="call_1",
            name="weather",
            arguments='{"city": "Paris"}',
        ),
        ToolCallFinished(
            **base,
            seq=5,
            node="tools",
            tool_call_id="call_1",
            name="weather",
            status="complete",
            content="sunny",
        ),
        ToolCallFinished(
            **base, seq=6, node="tools", tool_call_id="call_2", name="time", status="cancelled"
        ),
        CustomEvent(
            **base, seq=7, node="tools", data={"progress": [0.5, None, True], "$odd": "key"}
        ),
        CustomEvent(**base, seq=8, data="plain text"),
        NodeFinished(**base, seq=9, node="agent", step=1),
        CheckpointSaved(**base, seq=10, checkpoint_id=new_id(), step=1),
        RunFinished(**base, seq=11, status="cancelled", reason="user", error=None),
    ]
    await checkpointer.commit(events=events)
    got = await checkpointer.read_events(rid)
    assert got == events
    assert [type(e) for e in got] == [type(e) for e in events]


# the write path


async def test_conflicting_commit_writes_neither_events_nor_run(checkpointer: Checkpointer) -> None:
    tid = new_id()
    run = run_record(tid, status="running")
    first, second = await chain(checkpointer, tid, [{"n": 0}, {"n": 1}])
    await checkpointer.commit(run=run)
    stale = checkpoint(tid, first.checkpoint_id, {"n": 99}, step=2)
    changed = run.model_copy(update={"status": "completed"})
    with pytest.raises(CheckpointConflictError, match=second.checkpoint_id):
        await checkpointer.commit(checkpoint=stale, events=events_for(run, range(2)), run=changed)
    assert await checkpointer.get_checkpoint(tid, stale.checkpoint_id) is None
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), second)
    assert await checkpointer.read_events(run.run_id) == []
    assert await checkpointer.get_run(run.run_id) == run


async def test_concurrent_writers_on_one_thread_exactly_one_wins(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    tid = new_id()
    (base,) = await chain(checkpointer, tid, [{"messages": [Message.user("hi")]}])
    # Half the writers go through a second instance: another connection (pool) on the same data.
    stores = [checkpointer, backend.open()]
    outcomes: list[str] = []
    candidates: list[Checkpoint] = []

    async def write(i: int) -> None:
        run = run_record(tid)
        cp = checkpoint(
            tid, base.checkpoint_id, {"messages": [Message.user(f"writer {i}")]}, step=1
        )
        candidates.append(cp)
        try:
            await stores[i % 2].commit(checkpoint=cp, events=events_for(run, range(2)), run=run)
        except CheckpointConflictError:
            outcomes.append("conflict")
            assert await checkpointer.get_run(run.run_id) is None
            assert await checkpointer.read_events(run.run_id) == []
        else:
            outcomes.append(cp.checkpoint_id)

    with anyio.fail_after(30) as watchdog:
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(write, i)
    assert not watchdog.cancel_called
    winners = [o for o in outcomes if o != "conflict"]
    assert len(winners) == 1, outcomes
    assert outcomes.count("conflict") == 7
    (winner,) = [cp for cp in candidates if cp.checkpoint_id == winners[0]]
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), winner)
    assert await checkpointer.list_checkpoints(tid) == [winner, base]


async def test_cancelled_commit_is_all_or_nothing(checkpointer: Checkpointer) -> None:
    tid = new_id()
    (head,) = await chain(checkpointer, tid, [{"n": 0}])

    async def all_or_nothing(cp: Checkpoint, run: RunRecord) -> bool:
        stored_cp = await checkpointer.get_checkpoint(tid, cp.checkpoint_id)
        stored_run = await checkpointer.get_run(run.run_id)
        stored_events = await checkpointer.read_events(run.run_id)
        applied = stored_cp is not None
        assert (stored_run is not None) is applied
        assert len(stored_events) == (2 if applied else 0)
        return applied

    # cancelled before it starts
    run = run_record(tid)
    cp = checkpoint(tid, head.checkpoint_id, {"n": 1}, step=1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await checkpointer.commit(checkpoint=cp, events=events_for(run, range(2)), run=run)
    if await all_or_nothing(cp, run):
        head = cp

    # cancelled while it waits on the database
    run = run_record(tid)
    cp = checkpoint(tid, head.checkpoint_id, {"n": 2}, step=2)
    with anyio.fail_after(30) as watchdog:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(
                    checkpointer.commit, checkpoint=cp, events=events_for(run, range(2)), run=run
                )
            )
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert not watchdog.cancel_called
    if await all_or_nothing(cp, run):
        head = cp

    # the head is consistent: the next step commits on it
    nxt = checkpoint(tid, head.checkpoint_id, {"n": 3}, step=3)
    await checkpointer.commit(checkpoint=nxt)
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), nxt)


async def test_unstorable_values_raise_user_error_and_store_nothing(
    checkpointer: Checkpointer,
) -> None:
    tid = new_id()
    (head,) = await chain(checkpointer, tid, [{"n": 0}])
    run = run_record(tid)
    bad_states: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"x": object()}, {}),
        ({"x": {1: "int key"}}, {}),
        ({"x": {1, 2}}, {}),
        ({"x": 1}, {"when": object()}),  # checkpoint metadata
    ]
    for values, metadata in bad_states:
        cp = checkpoint(tid, head.checkpoint_id, values, metadata=metadata)
        with pytest.raises(UserError):
            await checkpointer.commit(checkpoint=cp, events=events_for(run, range(2)), run=run)
        assert await checkpointer.get_checkpoint(tid, cp.checkpoint_id) is None
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), head)
    assert await checkpointer.get_run(run.run_id) is None
    assert await checkpointer.read_events(run.run_id) == []

    with pytest.raises(UserError):
        await checkpointer.put_thread(ThreadInfo(thread_id=new_id(), metadata={"f": object()}))
    assert [t.thread_id for t in await checkpointer.list_threads()] == [tid]


async def test_unstorable_message_metadata_raises_user_error(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    tid = new_id()
    bad = Message.user("bad", metadata={"f": object()})
    for values in ({"messages": [Message.user("ok"), bad]}, {"pending": bad}):
        with pytest.raises(UserError):
            await checkpointer.commit(checkpoint=checkpoint(tid, None, values))
    assert await checkpointer.get_thread(tid) is None
    if backend.durable:  # the memory backend keeps run records as objects, unchecked
        with pytest.raises(UserError):
            await checkpointer.commit(run=run_record(tid, metadata={"m": bad}))
        assert await checkpointer.get_thread(tid) is None


async def test_usable_from_another_event_loop_and_thread(checkpointer: Checkpointer) -> None:
    """The sync API calls storage from a background loop: both loops must share the backend."""
    tid = new_id()
    (first,) = await chain(checkpointer, tid, [{"messages": [Message.user("from the test loop")]}])
    second = checkpoint(
        tid, first.checkpoint_id, {"messages": [Message.assistant("from the portal loop")]}, step=1
    )

    def in_another_loop() -> Checkpoint | None:
        with anyio.from_thread.start_blocking_portal() as portal:
            seen = portal.call(checkpointer.get_checkpoint, tid)
            assert seen == first
            portal.call(functools.partial(checkpointer.commit, checkpoint=second))
            got = portal.call(checkpointer.get_checkpoint, tid)
            # close from the test's loop while the portal's loop still runs
            anyio.from_thread.run(checkpointer.aclose)
            return got

    with anyio.fail_after(30) as watchdog:
        got = await anyio.to_thread.run_sync(in_another_loop)
    assert not watchdog.cancel_called
    assert_same_checkpoint(got, second)
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), second)


# durability and bad data


async def test_closed_checkpointer_reopens_with_everything(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    if not backend.durable:
        pytest.skip("the memory backend keeps nothing once closed")
    tid = new_id()
    thread = ThreadInfo(thread_id=tid, created_at=5.0, metadata={"owner": "o"})
    await checkpointer.put_thread(thread)
    run = run_record(tid, status="cancelled", stop_mode="now", stopped_at=9.0)
    events = events_for(run, range(4))
    cps = await chain(
        checkpointer, tid, [{"messages": [Message.user("a")]}, {"messages": [Message.user("b")]}]
    )
    await checkpointer.commit(events=events, run=run)
    await checkpointer.aclose()
    await checkpointer.aclose()  # idempotent

    reopened = backend.open()
    assert await reopened.get_thread(tid) == thread
    assert await reopened.list_checkpoints(tid) == cps[::-1]
    assert await reopened.get_run(run.run_id) == run
    assert await reopened.read_events(run.run_id) == events
    nxt = checkpoint(tid, cps[-1].checkpoint_id, {"messages": [Message.user("c")]}, step=2)
    await reopened.commit(checkpoint=nxt)
    assert_same_checkpoint(await reopened.get_checkpoint(tid), nxt)


async def test_corrupt_rows_raise_corrupt_record_error(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    if not backend.durable:
        pytest.skip("the memory backend keeps Python objects: it has no rows to corrupt")
    tid = new_id()
    run = run_record(tid)
    message = Message.user("hi")
    cps = await chain(
        checkpointer, tid, [{"messages": [message]}, {"messages": [message, Message.user("2")]}]
    )
    await checkpointer.commit(events=events_for(run, range(1)), run=run)

    backend.execute(
        "UPDATE tether_threads SET metadata = ? WHERE thread_id = ?", ('{"$bogus": 1}', tid)
    )
    with pytest.raises(CorruptRecordError, match=rf"tether_threads row '{tid}'"):
        await checkpointer.get_thread(tid)
    with pytest.raises(CorruptRecordError, match="tether_threads"):
        await checkpointer.list_threads()

    backend.execute(
        "UPDATE tether_runs SET record = ? WHERE run_id = ?", ('{"run_id": 5}', run.run_id)
    )
    with pytest.raises(CorruptRecordError, match=rf"tether_runs row '{run.run_id}'"):
        await checkpointer.get_run(run.run_id)
    with pytest.raises(CorruptRecordError, match="tether_runs"):
        await checkpointer.list_runs(tid)

    backend.execute(
        "UPDATE tether_events SET body = ? WHERE run_id = ?", ('{"type": "bogus"}', run.run_id)
    )
    with pytest.raises(CorruptRecordError, match=rf"tether_events row \d+ \(run '{run.run_id}'\)"):
        await checkpointer.read_events(run.run_id)

    first, second = cps
    backend.execute(
        "UPDATE tether_messages SET body = ? WHERE thread_id = ?",
        ('{"$message": {"role": "robot"}}', tid),
    )
    with pytest.raises(CorruptRecordError, match="tether_messages row"):
        await checkpointer.get_checkpoint(tid, first.checkpoint_id)

    backend.execute("DELETE FROM tether_messages WHERE thread_id = ?", (tid,))
    with pytest.raises(CorruptRecordError, match="missing message rows"):
        await checkpointer.get_checkpoint(tid, second.checkpoint_id)

    backend.execute(
        "UPDATE tether_checkpoints SET channels = ? WHERE checkpoint_id = ?",
        ("{not json", second.checkpoint_id),
    )
    with pytest.raises(
        CorruptRecordError, match=rf"tether_checkpoints row '{tid}'/'{second.checkpoint_id}'"
    ):
        await checkpointer.get_checkpoint(tid)
    with pytest.raises(CorruptRecordError, match="tether_checkpoints"):
        await checkpointer.list_checkpoints(tid)


# What `test_conformance.py` star-imports: the harness and every test above.
__all__ = ["Backend", *sorted(name for name in dict(globals()) if name.startswith("test_"))]
