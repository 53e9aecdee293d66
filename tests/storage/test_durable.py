"""Durability of the database backends, without the engine.

What one process commits, a new process (`python -c`) reads back exactly: the thread, the
checkpoints, a stopped run's record and its events. A writer in another process moves the head,
and this process's next commit on the old head conflicts, even though its cache still knows the
old head. Migrations are versioned, run once when processes start together, and refuse a newer
schema.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from tests._services import require_postgres
from tests.storage.conformance import Backend, chain, checkpoint, events_for, run_record

from tether.errors import CheckpointConflictError, StorageError
from tether.events import event_from_json
from tether.ids import new_id
from tether.messages import Message, ToolCall
from tether.run import RunRecord
from tether.serde import decode_value
from tether.storage import Checkpoint, Checkpointer, SqliteCheckpointer, ThreadInfo

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]

# The child process prints what it reads as typed JSON; the parent decodes it and compares.
OPEN_STORE = """
import json, sys, anyio
from tether.events import event_to_json
from tether.messages import Message
from tether.serde import encode_value
from tether.storage import Checkpoint

def open_store(kind, location):
    if kind == "sqlite":
        from tether.storage.sqlite import SqliteCheckpointer
        return SqliteCheckpointer(location)
    from tether.storage.postgres import PostgresCheckpointer
    return PostgresCheckpointer(location)
"""

READER = (
    OPEN_STORE
    + """
async def main(kind, location, thread_id, run_id):
    async with open_store(kind, location) as store:
        thread = await store.get_thread(thread_id)
        history = await store.list_checkpoints(thread_id)
        run = await store.get_run(run_id)
        events = await store.read_events(run_id)
    print(json.dumps({
        "thread": [thread.thread_id, thread.created_at, encode_value(thread.metadata)],
        "checkpoints": [
            [cp.checkpoint_id, cp.parent_id, cp.run_id, cp.step, encode_value(cp.values),
             list(cp.next), cp.source, cp.created_at, encode_value(cp.metadata)]
            for cp in history
        ],
        "run": encode_value(run.model_dump()),
        "events": [event_to_json(e) for e in events],
    }))

anyio.run(main, *sys.argv[1:])
"""
)

WRITER = (
    OPEN_STORE
    + """
async def main(kind, location, thread_id):
    async with open_store(kind, location) as store:
        head = await store.get_checkpoint(thread_id)
        values = dict(head.values)
        values["messages"] = [*values["messages"], Message.assistant("from the other process")]
        cp = Checkpoint(checkpoint_id="from-child", thread_id=thread_id,
                        parent_id=head.checkpoint_id, run_id=None, step=head.step + 1,
                        values=values)
        await store.commit(checkpoint=cp)

anyio.run(main, *sys.argv[1:])
"""
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def durable(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return Backend.sqlite(request.getfixturevalue("sqlite_path"))
    return Backend.postgres(request.getfixturevalue("postgres_dsn"))


async def in_new_process(code: str, *args: str) -> str:
    with anyio.fail_after(60) as watchdog:
        done = await anyio.run_process([sys.executable, "-c", code, *args], cwd=ROOT, check=False)
    assert not watchdog.cancel_called
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def opened(backend: Backend) -> Checkpointer:
    store = backend.open()
    await store.setup()
    return store


async def close_all(backend: Backend) -> None:
    for store in backend.opened:
        await store.aclose()


async def test_new_process_reads_back_thread_checkpoints_stopped_run_and_events(
    durable: Backend,
) -> None:
    store = await opened(durable)
    try:
        tid = new_id()
        thread = ThreadInfo(thread_id=tid, created_at=1_700_000_000.5, metadata={"owner": "k1"})
        await store.put_thread(thread)
        question = Message.user("weather in Paris? 🌦")
        call = Message.assistant(
            "", tool_calls=(ToolCall(id="c1", name="weather", arguments='{"city":"Paris"}'),)
        )
        cps = await chain(
            store,
            tid,
            [
                {"messages": [question], "turn": 1},
                {"messages": [question, call], "turn": 1},
                {
                    "messages": [
                        question,
                        call,
                        Message.tool("cancelled", tool_call_id="c1", status="cancelled"),
                        Message.assistant("It is", status="stopped"),
                    ],
                    "turn": 1,
                },
            ],
        )
        run = run_record(
            tid,
            status="cancelled",
            started_at=1_700_000_001.0,
            finished_at=1_700_000_003.0,
            stop_requested_at=1_700_000_002.0,
            stopped_at=1_700_000_002.003,
            stop_mode="now",
            stop_reason="user pressed stop",
            stop_requested_by="user",
        )
        events = events_for(run, range(5))
        await store.commit(events=events, run=run)
    finally:
        await close_all(durable)

    assert durable.location is not None
    out = json.loads(await in_new_process(READER, durable.name, durable.location, tid, run.run_id))

    created_at, metadata = out["thread"][1], decode_value(out["thread"][2])
    assert (
        ThreadInfo(thread_id=out["thread"][0], created_at=created_at, metadata=metadata) == thread
    )
    read = [
        Checkpoint(
            checkpoint_id=c[0],
            thread_id=tid,
            parent_id=c[1],
            run_id=c[2],
            step=c[3],
            values=decode_value(c[4]),
            next=tuple(c[5]),
            source=c[6],
            created_at=c[7],
            metadata=decode_value(c[8]),
        )
        for c in out["checkpoints"]
    ]
    assert read == cps[::-1]
    assert RunRecord.model_validate(decode_value(out["run"])) == run
    assert [event_from_json(e) for e in out["events"]] == events


async def test_commit_on_a_head_moved_by_another_process_conflicts(durable: Backend) -> None:
    store = await opened(durable)
    try:
        tid = new_id()
        # This process writes (and so caches) the head...
        (head,) = await chain(store, tid, [{"messages": [Message.user("hi")]}])
        assert durable.location is not None
        # ...another process commits on it...
        await in_new_process(WRITER, durable.name, durable.location, tid)
        # ...so this process's commit on the same parent must lose.
        mine = checkpoint(tid, head.checkpoint_id, {"messages": [Message.user("mine")]}, step=1)
        with pytest.raises(CheckpointConflictError, match="from-child"):
            await store.commit(checkpoint=mine)
        theirs = await store.get_checkpoint(tid)
        assert theirs is not None
        assert theirs.checkpoint_id == "from-child"
        assert [m.content for m in theirs.values["messages"]] == ["hi", "from the other process"]
        # The next commit builds on what it read, and reads back exactly.
        values = {"messages": [*theirs.values["messages"], Message.user("again")]}
        nxt = checkpoint(tid, theirs.checkpoint_id, values, step=2)
        await store.commit(checkpoint=nxt)
        reopened = await opened(durable)
        assert await reopened.get_checkpoint(tid) == nxt
    finally:
        await close_all(durable)


def schema_versions(backend: Backend) -> list[int]:
    assert backend.location is not None
    if backend.name == "sqlite":
        with closing(sqlite3.connect(backend.location)) as conn:
            return [conn.execute("PRAGMA user_version").fetchone()[0]]
    import psycopg

    with psycopg.connect(backend.location) as conn:
        rows = conn.execute("SELECT version FROM tether_schema_version ORDER BY version")
        return [row[0] for row in rows.fetchall()]


async def test_processes_starting_together_migrate_once(durable: Backend) -> None:
    stores = [durable.open() for _ in range(4)]
    try:
        with anyio.fail_after(60) as watchdog:
            async with anyio.create_task_group() as tg:
                for store in stores:
                    tg.start_soon(store.setup)
        assert not watchdog.cancel_called
        every = [2] if durable.name == "sqlite" else [1]
        assert schema_versions(durable) == every
        # a second setup is a no-op
        await stores[0].setup()
        assert schema_versions(durable) == every
    finally:
        await close_all(durable)


async def test_a_version_1_sqlite_file_is_migrated_to_2_with_its_data(tmp_path: Path) -> None:
    # SQLite's version 2 changes no table: it only keeps a tether that cannot read coalesced delta
    # rows away from a file that has them. (Postgres stores one row per event: still version 1.)
    path = os.fspath(tmp_path / "v1.db")
    cp = checkpoint("t-v1", None, {"messages": [Message.user("kept")]})
    async with SqliteCheckpointer(path) as store:
        await store.commit(checkpoint=cp)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 1")
    async with SqliteCheckpointer(path) as store:
        assert await store.get_checkpoint("t-v1") == cp
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


async def test_newer_schema_is_refused(durable: Backend) -> None:
    store = await opened(durable)
    await store.aclose()
    if durable.name == "sqlite":
        durable.execute("PRAGMA user_version = 99")
    else:
        durable.execute("INSERT INTO tether_schema_version VALUES (99, 0)")
    newer = durable.open()
    try:
        with pytest.raises(StorageError, match="99"):
            await newer.setup()
        if isinstance(newer, SqliteCheckpointer):
            assert newer._wal is None  # the refused file left no checkpoint helper behind
    finally:
        await close_all(durable)


@pytest.mark.postgres
async def test_postgres_works_in_the_default_schema() -> None:
    from tether.storage.postgres import PostgresCheckpointer

    dsn = require_postgres()
    async with PostgresCheckpointer(dsn) as store:
        tid = new_id()
        (cp,) = await chain(store, tid, [{"messages": [Message.user("in public")]}])
        try:
            assert await store.get_checkpoint(tid) == cp
        finally:
            assert await store.delete_thread(tid) is True


async def test_sqlite_creates_parent_directories(tmp_path: Path) -> None:
    from tether.storage.sqlite import SqliteCheckpointer

    path = tmp_path / "a" / "b" / "c" / "tether.db"
    async with SqliteCheckpointer(path) as store:
        await store.put_thread(ThreadInfo(thread_id="t"))
    assert path.exists()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
