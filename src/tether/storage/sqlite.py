"""`SqliteCheckpointer`: the embedded default backend, on the standard library's `sqlite3`.

Mechanism:
- One connection per checkpointer, in WAL mode, guarded by a `threading.Lock`. Every method runs
  its blocking work in a worker thread (`anyio.to_thread.run_sync`), so the checkpointer can be
  used from any event loop and any thread without blocking a loop.
- `commit()` is one `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock, reads the thread's
  head, and writes the checkpoint, the events and the run record only if that head is the
  checkpoint's parent. Other processes that open the same file wait on the same lock
  (`busy_timeout`), so the compare-and-swap holds across processes too.
- The `messages` channel is not rewritten every step (the layout is in `_rows`): each message is
  stored once per thread, keyed by a hash of its typed JSON, and a checkpoint row holds the other
  channels plus a short list of message refs relative to a periodic snapshot. An in-process cache
  remembers the messages of the last checkpoint written or read per thread, so a step encodes and
  writes only the messages it added or changed: its cost does not grow with the thread's length.
  Reading the head of a thread whose head is in that cache reads only the checkpoint row and
  reuses the cached messages, so `get_state` does not grow with the thread's length either.
- The event log stores consecutive text deltas of one message in one row (`_rows.encode_events`),
  so a streamed answer costs one short JSON array per `DELTAS_PER_ROW` tokens instead of one
  schema-driven encoding and one row per token; event ids and re-join stay per token. The text
  spans of an `EventBatch` are taken without comparing their events.
- WAL checkpoints run in a background thread (`_wal.BackgroundCheckpoints`), not in the commit
  that crosses SQLite's threshold: the copy and its fsyncs no longer stall a commit.
- The schema is versioned with `PRAGMA user_version`; migrations run at first use (or `setup()`)
  inside a write transaction, so two processes opening a new file do not race.

Guarantees:
- Reads return exactly the committed values (the same ones the memory backend returns; tuples
  come back as lists in every backend).
- Cancellation: a method cancelled before its worker thread starts raises at once and does
  nothing. Once the thread runs, SQLite cannot be interrupted safely, so the call completes and
  returns its result, and the caller sees the cancellation at its next await. So a commit is all
  or nothing, also when cancelled, and when `commit()` returns the checkpoint is stored.
- Durability is `synchronous=NORMAL` by default: a committed step survives a crash of the process,
  and a power loss may lose the last commits but never corrupts the file. Pass
  `synchronous="FULL"` to fsync every commit.

Residual: `Message` is immutable, and the cache relies on that. A message whose `metadata` dict is
mutated in place after it was committed or read is not detected as changed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio.to_thread

from ..errors import StorageError, UserError
from ..events import Event
from ..run import RunRecord
from ..serde import encode_value
from ._rows import (
    CHECKPOINT_COLUMNS,
    CHECKPOINT_FROM,
    HEAD_COLUMNS,
    CheckpointRow,
    EventRow,
    HeadCache,
    MessageHead,
    build_cached_checkpoint,
    build_checkpoint,
    conflict,
    decode_event_rows,
    decode_messages,
    decode_run,
    decode_thread,
    duplicate_checkpoint,
    encode_checkpoint,
    encode_events,
    encode_run,
    encode_thread_metadata,
    message_refs,
    metadata_matches,
)
from ._wal import BackgroundCheckpoints
from .base import Checkpoint, Checkpointer, ThreadInfo

__all__ = ["SqliteCheckpointer"]

_T = TypeVar("_T")

# MIGRATIONS[i] brings the schema from version i to i + 1; never edit a released entry.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE tether_threads (
            thread_id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            metadata TEXT NOT NULL,
            head_id TEXT
        )""",
        "CREATE INDEX tether_threads_by_age ON tether_threads (created_at DESC, thread_id DESC)",
        """CREATE TABLE tether_checkpoints (
            seq INTEGER PRIMARY KEY,
            thread_id TEXT NOT NULL,
            checkpoint_id TEXT NOT NULL,
            parent_id TEXT,
            run_id TEXT,
            step INTEGER NOT NULL,
            next TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            metadata TEXT NOT NULL,
            channels TEXT NOT NULL,
            msgs_base TEXT,
            msgs TEXT,
            UNIQUE (thread_id, checkpoint_id)
        )""",
        "CREATE INDEX tether_checkpoints_by_thread ON tether_checkpoints (thread_id, seq DESC)",
        """CREATE TABLE tether_messages (
            thread_id TEXT NOT NULL,
            ref TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (thread_id, ref)
        ) WITHOUT ROWID""",
        """CREATE TABLE tether_runs (
            run_id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            record TEXT NOT NULL
        )""",
        "CREATE INDEX tether_runs_by_thread ON tether_runs (thread_id, created_at DESC)",
        "CREATE INDEX tether_runs_by_age ON tether_runs (created_at DESC, run_id DESC)",
        """CREATE TABLE tether_events (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX tether_events_by_run ON tether_events (run_id, seq)",
        "CREATE INDEX tether_events_by_thread ON tether_events (thread_id)",
    ),
    # 2: no table changes. Rows holding a run of text deltas (`_rows.encode_events`) began under
    # version 1, and the tethers from before them misread such rows; from here on the number
    # keeps those tethers out of a file that may hold them.
    (),
)
SCHEMA_VERSION = len(MIGRATIONS)
_CHUNK = 500  # bound parameters per `IN (...)` list, well below SQLite's limit


@contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "DEFERRED") -> Iterator[None]:
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _enable_wal(conn: sqlite3.Connection, deadline: float) -> bool:
    # Switching a new file to WAL needs it to itself, and SQLite answers "database is locked"
    # at once instead of calling the busy handler; so retry until `busy_timeout` runs out.
    # Returns False where WAL does not apply (an in-memory database).
    while True:
        try:
            return bool(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    with _transaction(conn, "IMMEDIATE"):  # re-read under the write lock: another process may win
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{path!r} has tether schema version {version}, newer than this tether's "
                f"{SCHEMA_VERSION}; upgrade tether to open it"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class SqliteCheckpointer(Checkpointer):
    """Stores threads, checkpoints, runs and events in one SQLite file. See the module docstring.

    Args:
        path: The database file; its parent directories are created. `":memory:"` works too.
        synchronous: `"NORMAL"` (a commit survives a process crash) or `"FULL"` (it also
            survives a power loss, at the cost of an fsync per commit).
        busy_timeout: Seconds to wait for another process's write lock before failing.
        cache_threads: How many threads' last checkpoints the write cache remembers.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        cache_threads: int = 256,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise UserError(f"synchronous={synchronous!r}; use 'NORMAL' or 'FULL'")
        self.path = os.fspath(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self.commit_timeout = busy_timeout
        self._lock = threading.Lock()  # held for every use of `_conn`
        self._conn: sqlite3.Connection | None = None  # open from first use until `aclose()`
        self._heads = HeadCache(cache_threads)
        self._wal: BackgroundCheckpoints | None = None  # for a file in WAL mode, once open

    def __repr__(self) -> str:
        return f"SqliteCheckpointer({self.path!r})"

    def _connection(self) -> sqlite3.Connection:
        # Called with `_lock` held.
        if self._conn is None:
            uri = self.path.startswith("file:")
            if self.path != ":memory:" and not uri:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,  # `_lock` serializes the threads that use it
                uri=uri,
            )
            wal = None
            try:
                if _enable_wal(conn, time.monotonic() + self._busy_timeout):
                    wal = BackgroundCheckpoints(
                        conn, self.path, uri=uri, busy_timeout=self._busy_timeout
                    )
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                _migrate(conn, self.path)
            except BaseException:
                conn.close()
                raise
            self._conn, self._wal = conn, wal
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        def locked() -> _T:
            with self._lock:
                try:
                    return work(self._connection())
                except sqlite3.Error as exc:
                    raise StorageError(f"SQLite database {self.path!r} failed: {exc}") from exc

        return await anyio.to_thread.run_sync(locked)

    async def setup(self) -> None:
        """Open the file and apply pending migrations. Idempotent.

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        await self._run(lambda conn: None)

    async def aclose(self) -> None:
        """Close the connection; the next use opens it again. Idempotent.

        Cancelled: see the module docstring (it completes once its thread runs).
        """

        def close() -> None:
            with self._lock:
                if self._wal is not None:
                    self._wal.wait()
                    self._wal = None
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                self._heads.clear()

        await anyio.to_thread.run_sync(close)

    # threads

    async def put_thread(self, thread: ThreadInfo) -> None:
        """Create the thread, or replace its metadata (keeping `created_at`).

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        metadata = encode_thread_metadata(thread.metadata)

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO tether_threads (thread_id, created_at, metadata) VALUES (?, ?, ?) "
                "ON CONFLICT (thread_id) DO UPDATE SET metadata = excluded.metadata",
                (thread.thread_id, thread.created_at, metadata),
            )

        await self._run(put)

    async def create_thread(self, thread: ThreadInfo) -> tuple[ThreadInfo, bool]:
        """Create the thread if its id is free; the stored thread, and whether it was created.

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        metadata = encode_thread_metadata(thread.metadata)

        def create(conn: sqlite3.Connection) -> tuple[Any, Any, bool]:
            # One statement decides, so two connections (or processes) cannot both create it.
            cur = conn.execute(
                "INSERT INTO tether_threads (thread_id, created_at, metadata) VALUES (?, ?, ?) "
                "ON CONFLICT (thread_id) DO NOTHING",
                (thread.thread_id, thread.created_at, metadata),
            )
            created = cur.rowcount > 0
            row = conn.execute(
                "SELECT created_at, metadata FROM tether_threads WHERE thread_id = ?",
                (thread.thread_id,),
            ).fetchone()
            return row[0], row[1], created

        created_at, text, created = await self._run(create)
        return decode_thread(thread.thread_id, created_at, text)[0], created

    async def get_thread(self, thread_id: str) -> ThreadInfo | None:
        """The thread, or `None`.

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT created_at, metadata FROM tether_threads WHERE thread_id = ?",
                (thread_id,),
            ).fetchone()
        )
        return None if row is None else decode_thread(thread_id, row[0], row[1])[0]

    async def list_threads(
        self, *, metadata: dict[str, Any] | None = None, limit: int = 100
    ) -> list[ThreadInfo]:
        """Threads whose metadata holds every item of `metadata`, newest first.

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        want = encode_value(metadata or {}, where="metadata filter")
        # Narrow by text values in SQL; `metadata_matches` then applies the exact rule.
        where, params = [], []
        for key, value in want.items():
            if isinstance(value, str):
                where.append(
                    "(NOT json_valid(metadata) OR EXISTS (SELECT 1 FROM json_each(metadata) j "
                    "WHERE j.key = ? AND j.type = 'text' AND j.value = ?))"
                )
                params += [key, value]
        sql = "SELECT thread_id, created_at, metadata FROM tether_threads"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, thread_id DESC"

        def select(conn: sqlite3.Connection) -> list[ThreadInfo]:
            found: list[ThreadInfo] = []
            if limit <= 0:
                return found
            for thread_id, created_at, text in conn.execute(sql, params):
                thread, raw = decode_thread(thread_id, created_at, text)
                if metadata_matches(raw, want):
                    found.append(thread)
                    if len(found) >= limit:
                        break
            return found

        return await self._run(select)

    async def delete_thread(self, thread_id: str) -> bool:
        """Delete the thread with everything it holds; False if it did not exist.

        Cancelled: see the module docstring (it completes once its thread runs).
        """

        def delete(conn: sqlite3.Connection) -> bool:
            with _transaction(conn, "IMMEDIATE"):
                cur = conn.execute("DELETE FROM tether_threads WHERE thread_id = ?", (thread_id,))
                existed = cur.rowcount > 0
                conn.execute(
                    "DELETE FROM tether_events WHERE thread_id = ? OR run_id IN "
                    "(SELECT run_id FROM tether_runs WHERE thread_id = ?)",
                    (thread_id, thread_id),
                )
                for table in ("tether_runs", "tether_checkpoints", "tether_messages"):
                    conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))
            self._heads.put(thread_id, None)
            return existed

        return await self._run(delete)

    # checkpoints

    def _read_checkpoints(
        self, conn: sqlite3.Connection, thread_id: str, where: str, params: Sequence[Any]
    ) -> list[tuple[Checkpoint, MessageHead | None]]:
        with _transaction(conn):  # one snapshot for the rows and their messages
            records = conn.execute(
                f"SELECT {CHECKPOINT_COLUMNS} FROM {CHECKPOINT_FROM} WHERE c.thread_id = ? {where}",
                (thread_id, *params),
            ).fetchall()
            refs = [message_refs(thread_id, record) for record in records]
            wanted = sorted({r for found in refs if found is not None for r in found.refs})
            rows: list[Any] = []
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                rows += conn.execute(
                    "SELECT ref, body FROM tether_messages WHERE thread_id = ? AND ref IN "
                    f"({','.join('?' * len(chunk))})",
                    (thread_id, *chunk),
                ).fetchall()
        messages = decode_messages(thread_id, rows)
        return [
            build_checkpoint(thread_id, record, found, messages)
            for record, found in zip(records, refs, strict=True)
        ]

    async def get_checkpoint(
        self, thread_id: str, checkpoint_id: str | None = None
    ) -> Checkpoint | None:
        """The checkpoint `checkpoint_id` of the thread, or its head when it is `None`.

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        params: tuple[Any, ...] = ()
        if checkpoint_id is None:
            where = "ORDER BY c.seq DESC LIMIT 1"
        else:
            where, params = "AND c.checkpoint_id = ?", (checkpoint_id,)

        def read(conn: sqlite3.Connection) -> Checkpoint | None:
            known = self._heads.get(thread_id) if checkpoint_id is None else None
            if known is not None:
                # The head is usually the checkpoint this process last wrote or read: then its
                # messages are in the cache, and only the small checkpoint row is read.
                record = conn.execute(
                    f"SELECT {HEAD_COLUMNS} FROM tether_checkpoints c WHERE c.thread_id = ? "
                    "ORDER BY c.seq DESC LIMIT 1",
                    (thread_id,),
                ).fetchone()
                if record is not None and record[0] == known.checkpoint_id:
                    return build_cached_checkpoint(thread_id, record, known)
            found = self._read_checkpoints(conn, thread_id, where, params)
            if not found:
                return None
            checkpoint, head = found[0]
            if head is not None:
                self._heads.put(thread_id, head)
            return checkpoint

        return await self._run(read)

    async def list_checkpoints(
        self, thread_id: str, *, limit: int | None = None
    ) -> list[Checkpoint]:
        """The thread's checkpoints, newest first.

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        where, params = "ORDER BY c.seq DESC", tuple[Any, ...]()
        if limit is not None:
            where, params = where + " LIMIT ?", (max(limit, 0),)
        found = await self._run(lambda conn: self._read_checkpoints(conn, thread_id, where, params))
        return [checkpoint for checkpoint, _ in found]

    # runs

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run record, or `None`.

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT record FROM tether_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        )
        return None if row is None else decode_run(run_id, row[0])

    async def list_runs(
        self, thread_id: str | None = None, *, status: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Run records, newest first.

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        where, params = [], []
        if thread_id is not None:
            where.append("thread_id = ?")
            params.append(thread_id)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT run_id, record FROM tether_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        rows = await self._run(lambda conn: conn.execute(sql, (*params, max(limit, 0))).fetchall())
        return [decode_run(run_id, record) for run_id, record in rows]

    # events

    async def read_events(self, run_id: str, *, after_seq: int = -1) -> list[Event]:
        """The run's events with `seq > after_seq`, in the order they were appended.

        Cancelled: see the module docstring (it completes once its thread runs).
        """
        # A row's `seq` is that of its last event, so this selects every row holding an event
        # after `after_seq`; `decode_event_rows` drops the ones up to it.
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT id, body FROM tether_events WHERE run_id = ? AND seq > ? ORDER BY id",
                (run_id, after_seq),
            ).fetchall()
        )
        return decode_event_rows(run_id, rows, after_seq=after_seq)

    # the one write path

    async def commit(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        events: Sequence[Event] = (),
        run: RunRecord | None = None,
    ) -> None:
        """Atomically store a checkpoint, append events and upsert a run record.

        Raises `CheckpointConflictError` (writing nothing) if `checkpoint.parent_id` is not the
        thread's head, and `UserError` (writing nothing) for values that cannot be stored.
        Cancelled before its worker thread starts, it writes nothing; after, the transaction
        finishes and `commit()` returns, and the caller sees the cancellation at its next await.
        """
        event_rows = encode_events(events)
        run_row = None
        if run is not None:
            run_row = (run.run_id, run.thread_id, run.status, run.created_at, encode_run(run))
        if checkpoint is None and not event_rows and run_row is None:
            return

        def write(conn: sqlite3.Connection) -> None:
            row = None
            if checkpoint is not None:
                row = encode_checkpoint(checkpoint, self._heads.get(checkpoint.thread_id))
            try:
                with _transaction(conn, "IMMEDIATE"):
                    if row is not None:
                        _write_checkpoint(conn, row)
                    if event_rows:
                        conn.executemany(
                            "INSERT INTO tether_events (run_id, thread_id, seq, body) "
                            "VALUES (?, ?, ?, ?)",
                            event_rows,
                        )
                    if run_row is not None:
                        if row is None or run_row[1] != row.checkpoint.thread_id:
                            _ensure_thread(conn, run_row[1])
                        conn.execute(
                            "INSERT INTO tether_runs (run_id, thread_id, status, created_at, record)"
                            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                            "thread_id = excluded.thread_id, status = excluded.status, "
                            "created_at = excluded.created_at, record = excluded.record",
                            run_row,
                        )
            except sqlite3.IntegrityError as exc:
                if row is not None and "tether_checkpoints" in str(exc):
                    raise duplicate_checkpoint(row.checkpoint) from None
                raise
            if row is not None:
                self._heads.put(row.checkpoint.thread_id, row.head)
            if self._wal is not None:
                self._wal.wrote(_size(event_rows, row))

        await self._run(write)


def _size(event_rows: list[EventRow], row: CheckpointRow | None) -> int:
    """About how many bytes a commit wrote to the log."""
    size = sum(len(body) for *_, body in event_rows)
    if row is not None:
        size += len(row.channels) + len(row.msgs or "") + len(row.metadata)
        size += sum(len(body) for _, body in row.new_messages)
    return size


def _ensure_thread(conn: sqlite3.Connection, thread_id: str) -> None:
    conn.execute(
        "INSERT INTO tether_threads (thread_id, created_at, metadata) VALUES (?, ?, '{}') "
        "ON CONFLICT (thread_id) DO NOTHING",
        (thread_id, time.time()),
    )


def _write_checkpoint(conn: sqlite3.Connection, row: CheckpointRow) -> None:
    # Called inside a `BEGIN IMMEDIATE` transaction: no other writer can move the head meanwhile.
    cp = row.checkpoint
    found = conn.execute(
        "SELECT head_id FROM tether_threads WHERE thread_id = ?", (cp.thread_id,)
    ).fetchone()
    head = None if found is None else found[0]
    if head != cp.parent_id:
        raise conflict(cp.thread_id, head, cp.parent_id)
    if found is None:
        _ensure_thread(conn, cp.thread_id)
    if row.new_messages:
        conn.executemany(
            "INSERT INTO tether_messages (thread_id, ref, body) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(cp.thread_id, ref, body) for ref, body in row.new_messages],
        )
    conn.execute(
        "INSERT INTO tether_checkpoints (thread_id, checkpoint_id, parent_id, run_id, step, next, "
        "source, created_at, metadata, channels, msgs_base, msgs) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            cp.thread_id,
            cp.checkpoint_id,
            cp.parent_id,
            cp.run_id,
            cp.step,
            row.next,
            cp.source,
            cp.created_at,
            row.metadata,
            row.channels,
            row.msgs_base,
            row.msgs,
        ),
    )
    conn.execute(
        "UPDATE tether_threads SET head_id = ? WHERE thread_id = ?",
        (cp.checkpoint_id, cp.thread_id),
    )
