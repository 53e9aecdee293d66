"""`PostgresCheckpointer`: storage for many worker processes on many machines.

Needs the `postgres` extra (`pip install 'tether[postgres]'`: psycopg 3 and psycopg-pool).

Mechanism:
- psycopg 3 async connections from a `psycopg_pool.AsyncConnectionPool`. An async pool belongs to
  the event loop that opened it, and tether calls its checkpointer from more than one loop (the
  sync API runs a loop in a background thread), so there is one pool per running loop, opened at
  its first use there. `aclose()` closes them all: the current loop's directly, another running
  loop's through `run_coroutine_threadsafe`; a pool whose loop has ended is dropped.
- The tables are those of the SQLite backend (see `_rows` for the layout), prefixed `tether_`, in
  the first schema of the connection's `search_path`. Migrations are versioned in
  `tether_schema_version` and run at first use (or `setup()`), in one transaction that holds
  `pg_advisory_xact_lock`, so processes that start together migrate once.
- `commit()` is one transaction. It locks the thread's row (`SELECT ... FOR UPDATE`), compares
  its `head_id` with the checkpoint's parent, and only then writes the message rows, the
  checkpoint, the new head, the events and the run record. In pipeline mode, that is two round
  trips: BEGIN with the row lock, then every write with COMMIT.
  Of two writers with the same parent, the second one waits for the row lock, then sees the new
  head and raises `CheckpointConflictError`.
- The `messages` channel is stored as per-message rows plus a short ref list per checkpoint, so a
  step's commit does not grow with the thread's length (see `_rows`). Reading the head of a
  thread whose head is the checkpoint this process last wrote or read reads only the checkpoint
  row and reuses the cached messages, so `get_state` does not grow with the thread's length
  either.

Guarantees:
- Reads return exactly the committed values, like every backend.
- The pool checks an idle connection before handing it out (`_check_connection`, a round trip
  only when the server wrote to the idle socket, as it does when it terminates the backend), so
  connections killed while idle are replaced, not used.
- Reads, and the idempotent thread writes, are retried once when the database dropped their
  connection under them.
- `commit()` is retried once, on a fresh connection, when the database dropped the connection
  (SQLSTATE class 08, 57P0x, or a closed socket). The transaction was then rolled back by the
  server, unless the drop came while it was applying `COMMIT` itself; see Residuals.
- `commit()` runs shielded from cancellation once it started, with its own deadline (`timeout`):
  it either applies fully and returns, or raises and applies nothing. A cancelled caller sees the
  cancellation at its next await. If the deadline expires while the server is applying `COMMIT`,
  the outcome is unknown to this process (the error says so); the database is still consistent.
- Every other method can be cancelled at any await: psycopg interrupts the query, a transaction
  is rolled back, and the connection goes back to its pool (shielded), which discards it if it was
  left mid-query. A cancelled write (`put_thread`, `delete_thread`) is applied fully or not at all.
- Driver errors are raised as `StorageError` (or `UserError` for data Postgres refuses to store,
  such as a NUL character in an id), with the driver's error as `__cause__`.

Residuals:
- A connection dropped while the server applies `COMMIT` leaves the outcome unknown. The retry
  then either fails cleanly (`CheckpointConflictError`: the head already moved) or, for a commit
  without a checkpoint, may append its events a second time.
- Close the checkpointer (`aclose()`, or `async with`) before an event loop that used it ends.
  psycopg-pool treats the cancellation of a connection attempt that is in flight as a failed
  connect and retries it, so a loop that shuts down with an open pool may never finish.
- As in the SQLite backend, a `Message` whose `metadata` dict is mutated in place after it was
  committed or read is not detected as changed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import select
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
import anyio.lowlevel

from .._extras import require

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError:  # pragma: no cover - exercised in a venv without the extra (tests/packaging)
    require("tether.storage.postgres", "postgres")
    raise  # the extra is installed but broken: the original error says how

from ..errors import StorageError, TetherError, UserError
from ..events import Event
from ..failures import redact
from ..run import RunRecord
from ..serde import encode_value
from ._rows import (
    CHECKPOINT_COLUMNS,
    CHECKPOINT_FROM,
    HEAD_COLUMNS,
    CheckpointRow,
    HeadCache,
    MessageHead,
    build_cached_checkpoint,
    build_checkpoint,
    conflict,
    decode_event,
    decode_messages,
    decode_run,
    decode_thread,
    duplicate_checkpoint,
    encode_checkpoint,
    encode_event,
    encode_run,
    encode_thread_metadata,
    message_refs,
    metadata_matches,
)
from .base import Checkpoint, Checkpointer, ThreadInfo

__all__ = ["PostgresCheckpointer"]

_Conn = psycopg.AsyncConnection[Any]
P = ParamSpec("P")
R = TypeVar("R")

# Any fixed 64-bit number: every tether process migrating this database takes this lock.
_MIGRATION_LOCK = 0x7465746865720001

# MIGRATIONS[i] brings the schema from version i to i + 1; never edit a released entry.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # Ids sort as in Python (by code point), whatever the database's collation.
        """CREATE TABLE tether_threads (
            thread_id text COLLATE "C" PRIMARY KEY,
            created_at double precision NOT NULL,
            metadata text NOT NULL,
            metadata_jsonb jsonb GENERATED ALWAYS AS (metadata::jsonb) STORED,
            head_id text
        )""",
        "CREATE INDEX tether_threads_by_age ON tether_threads (created_at DESC, thread_id DESC)",
        "CREATE INDEX tether_threads_by_metadata ON tether_threads "
        "USING gin (metadata_jsonb jsonb_path_ops)",
        """CREATE TABLE tether_checkpoints (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            thread_id text NOT NULL,
            checkpoint_id text NOT NULL,
            parent_id text,
            run_id text,
            step bigint NOT NULL,
            next text NOT NULL,
            source text NOT NULL,
            created_at double precision NOT NULL,
            metadata text NOT NULL,
            channels text NOT NULL,
            msgs_base text,
            msgs text,
            UNIQUE (thread_id, checkpoint_id)
        )""",
        "CREATE INDEX tether_checkpoints_by_thread ON tether_checkpoints (thread_id, seq DESC)",
        """CREATE TABLE tether_messages (
            thread_id text NOT NULL,
            ref text NOT NULL,
            body text NOT NULL,
            PRIMARY KEY (thread_id, ref)
        )""",
        """CREATE TABLE tether_runs (
            run_id text COLLATE "C" PRIMARY KEY,
            thread_id text NOT NULL,
            status text NOT NULL,
            created_at double precision NOT NULL,
            record text NOT NULL
        )""",
        "CREATE INDEX tether_runs_by_thread ON tether_runs (thread_id, created_at DESC)",
        "CREATE INDEX tether_runs_by_age ON tether_runs (created_at DESC, run_id DESC)",
        """CREATE TABLE tether_events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id text NOT NULL,
            thread_id text NOT NULL,
            seq bigint NOT NULL,
            body text NOT NULL
        )""",
        "CREATE INDEX tether_events_by_run ON tether_events (run_id, seq)",
        "CREATE INDEX tether_events_by_thread ON tether_events (thread_id)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def _retry_if_dropped(
    method: Callable[Concatenate[PostgresCheckpointer, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[PostgresCheckpointer, P], Coroutine[Any, Any, R]]:
    """Run a read (or an idempotent write) once more when the database dropped its connection.

    The pool's check catches connections that died while idle; this catches one that dies under
    a statement (its backend terminated a moment before, or during, the call).
    """

    @functools.wraps(method)
    async def retrying(self: PostgresCheckpointer, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except StorageError as exc:
            if not _dropped(exc.__cause__):
                raise
        return await method(self, *args, **kwargs)

    return retrying


class PostgresCheckpointer(Checkpointer):
    """Stores threads, checkpoints, runs and events in Postgres. See the module docstring.

    Args:
        dsn: A libpq connection string or URL, e.g. `postgresql://user@host:5432/db`.
        min_size: Connections each pool keeps open.
        max_size: Connections each pool may open.
        timeout: Seconds to wait for a connection, and the deadline of a shielded `commit()`.
        cache_threads: How many threads' last checkpoints the write cache remembers.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        cache_threads: int = 256,
    ) -> None:
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self.commit_timeout = timeout
        self._state_lock = threading.Lock()  # guards `_pools` and `_migrated`
        # one pool per event loop that used this checkpointer; removed when closed
        self._pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool[_Conn]] = {}
        self._migrated = False  # the schema is known to be at SCHEMA_VERSION
        self._heads = HeadCache(cache_threads)

    def __repr__(self) -> str:
        return f"PostgresCheckpointer({redact(self.dsn)!r})"

    async def _pool(self) -> AsyncConnectionPool[_Conn]:
        loop = asyncio.get_running_loop()
        with self._state_lock:
            pool = self._pools.get(loop)
            if pool is None:
                for ended in [other for other in self._pools if other.is_closed()]:
                    del self._pools[ended]  # its tasks ended with its loop; nothing can close it
                pool = AsyncConnectionPool(
                    self.dsn,
                    open=False,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=self._timeout,
                    kwargs={"autocommit": True},  # transactions are explicit
                    check=_check_connection,
                    name="tether",
                )
                self._pools[loop] = pool
        if pool.closed:
            # Idempotent, so concurrent first uses on one loop are fine. Waiting for the first
            # connection fails fast when the server is down, and leaves no connect in flight.
            try:
                await pool.open(wait=True, timeout=self._timeout)
            except BaseException:
                # A pool that failed to open is closed for good: the next use makes a new one.
                with self._state_lock:
                    if self._pools.get(loop) is pool:
                        del self._pools[loop]
                raise
        return pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Conn]:
        """A pooled connection of the running loop, on a migrated schema; driver errors wrapped."""
        try:
            pool = await self._pool()
            conn = await pool.getconn()
        except psycopg.Error as exc:
            raise _translate(exc, self) from exc
        try:
            if not self._migrated:
                await self._migrate(conn)
            yield conn
        except psycopg.Error as exc:
            raise _translate(exc, self) from exc
        finally:
            # Return it even when cancelled; the pool rolls back or discards a busy connection.
            with anyio.CancelScope(shield=True):
                await pool.putconn(conn)

    async def _migrate(self, conn: _Conn) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS tether_schema_version "
                "(version integer PRIMARY KEY, applied_at double precision NOT NULL)"
            )
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM tether_schema_version")
            found = await cur.fetchone()
            version = int(found[0]) if found else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self!r} has tether schema version {version}, newer than this "
                    f"tether's {SCHEMA_VERSION}; upgrade tether to use it"
                )
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO tether_schema_version (version, applied_at) VALUES (%s, %s)",
                    (number, time.time()),
                )
        with self._state_lock:
            self._migrated = True

    async def setup(self) -> None:
        """Open this loop's pool and apply pending migrations. Idempotent.

        Cancelled: it stops at once (see the module docstring).
        """
        async with self._connection():
            pass

    async def aclose(self) -> None:
        """Close the pools of every loop that used this checkpointer. Idempotent.

        It runs shielded from cancellation, with `timeout` as its deadline. The next use opens a
        new pool.
        """
        with self._state_lock:
            pools, self._pools = self._pools, {}
        self._heads.clear()
        current = asyncio.get_running_loop()
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self._timeout
            for loop, pool in pools.items():
                if loop is current:
                    await pool.close()
                elif loop.is_running():
                    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(pool.close(), loop))
                # else its loop has ended, and the pool's tasks with it: nothing is left to await

    # threads

    @_retry_if_dropped
    async def put_thread(self, thread: ThreadInfo) -> None:
        """Create the thread, or replace its metadata (keeping `created_at`).

        Cancelled: it stops at once (see the module docstring).
        """
        metadata = encode_thread_metadata(thread.metadata)
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO tether_threads (thread_id, created_at, metadata) VALUES (%s, %s, %s) "
                "ON CONFLICT (thread_id) DO UPDATE SET metadata = EXCLUDED.metadata",
                (thread.thread_id, thread.created_at, metadata),
            )

    @_retry_if_dropped
    async def create_thread(self, thread: ThreadInfo) -> tuple[ThreadInfo, bool]:
        """Create the thread if its id is free; the stored thread, and whether it was created.

        A concurrent creator's `INSERT` waits for the first one's, then does nothing and reads
        its row. Cancelled: it stops at once (see the module docstring).
        """
        metadata = encode_thread_metadata(thread.metadata)
        async with self._connection() as conn:
            cur = await conn.execute(
                "INSERT INTO tether_threads (thread_id, created_at, metadata) VALUES (%s, %s, %s) "
                "ON CONFLICT (thread_id) DO NOTHING RETURNING created_at, metadata",
                (thread.thread_id, thread.created_at, metadata),
            )
            row = await cur.fetchone()
            created = row is not None
            if row is None:
                cur = await conn.execute(
                    "SELECT created_at, metadata FROM tether_threads WHERE thread_id = %s",
                    (thread.thread_id,),
                )
                row = await cur.fetchone()
        if row is None:  # deleted between the two statements: it is free again
            return await self.create_thread(thread)
        return decode_thread(thread.thread_id, row[0], row[1])[0], created

    @_retry_if_dropped
    async def get_thread(self, thread_id: str) -> ThreadInfo | None:
        """The thread, or `None`.

        Cancelled: it stops at once (see the module docstring).
        """
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT created_at, metadata FROM tether_threads WHERE thread_id = %s",
                (thread_id,),
            )
            row = await cur.fetchone()
        return None if row is None else decode_thread(thread_id, row[0], row[1])[0]

    @_retry_if_dropped
    async def list_threads(
        self, *, metadata: dict[str, Any] | None = None, limit: int = 100
    ) -> list[ThreadInfo]:
        """Threads whose metadata holds every item of `metadata`, newest first.

        Cancelled: it stops at once (see the module docstring).
        """
        want = encode_value(metadata or {}, where="metadata filter")
        # Equal JSON values contain each other, so `@>` narrows the rows (using the GIN index)
        # and `metadata_matches` applies the exact rule. A None item also matches a missing key.
        contain = {k: v for k, v in want.items() if v is not None}
        sql = "SELECT thread_id, created_at, metadata FROM tether_threads"
        params: list[Any] = []
        if contain:
            sql += " WHERE metadata_jsonb @> %s::jsonb"
            params.append(json.dumps(contain, ensure_ascii=False))
        sql += " ORDER BY created_at DESC, thread_id DESC LIMIT %s OFFSET %s"
        found: list[ThreadInfo] = []
        page, offset = max(limit, 1), 0
        async with self._connection() as conn:
            while len(found) < limit:
                cur = await conn.execute(sql, (*params, page, offset))
                rows = await cur.fetchall()
                for thread_id, created_at, text in rows:
                    thread, raw = decode_thread(thread_id, created_at, text)
                    if metadata_matches(raw, want) and len(found) < limit:
                        found.append(thread)
                if len(rows) < page:
                    break
                offset += page
        return found

    @_retry_if_dropped
    async def delete_thread(self, thread_id: str) -> bool:
        """Delete the thread with everything it holds; False if it did not exist.

        Cancelled: it stops at once (see the module docstring).
        """
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM tether_threads WHERE thread_id = %s", (thread_id,)
            )
            existed = cur.rowcount > 0
            await conn.execute(
                "DELETE FROM tether_events WHERE thread_id = %s OR run_id IN "
                "(SELECT run_id FROM tether_runs WHERE thread_id = %s)",
                (thread_id, thread_id),
            )
            await conn.execute("DELETE FROM tether_runs WHERE thread_id = %s", (thread_id,))
            await conn.execute("DELETE FROM tether_checkpoints WHERE thread_id = %s", (thread_id,))
            await conn.execute("DELETE FROM tether_messages WHERE thread_id = %s", (thread_id,))
        self._heads.put(thread_id, None)
        return existed

    # checkpoints

    @_retry_if_dropped
    async def _read_checkpoints(
        self, thread_id: str, where: str, params: Sequence[Any], *, retry: bool = True
    ) -> list[tuple[Checkpoint, MessageHead | None]]:
        async with self._connection() as conn:
            cur = await conn.execute(
                f"SELECT {CHECKPOINT_COLUMNS} FROM {CHECKPOINT_FROM} WHERE c.thread_id = %s {where}",
                (thread_id, *params),
            )
            records = await cur.fetchall()
            refs = [message_refs(thread_id, record) for record in records]
            wanted = sorted({r for found in refs if found is not None for r in found.refs})
            rows: list[Any] = []
            if wanted:
                cur = await conn.execute(
                    "SELECT ref, body FROM tether_messages WHERE thread_id = %s AND ref = ANY(%s)",
                    (thread_id, wanted),
                )
                rows = await cur.fetchall()
        if retry and len(rows) < len(wanted):
            # The two reads are separate statements: a delete_thread in between removes the
            # messages. Read again; if the checkpoints are still there, the rows are corrupt.
            return await self._read_checkpoints(thread_id, where, params, retry=False)
        messages = decode_messages(thread_id, rows)
        return [
            build_checkpoint(thread_id, record, found, messages)
            for record, found in zip(records, refs, strict=True)
        ]

    async def get_checkpoint(
        self, thread_id: str, checkpoint_id: str | None = None
    ) -> Checkpoint | None:
        """The checkpoint `checkpoint_id` of the thread, or its head when it is `None`.

        Cancelled: it stops at once (see the module docstring).
        """
        params: tuple[Any, ...] = ()
        if checkpoint_id is None:
            known = self._heads.get(thread_id)
            if known is not None:
                cached = await self._read_cached_head(thread_id, known)
                if cached is not None:
                    return cached
            where = "ORDER BY c.seq DESC LIMIT 1"
        else:
            where, params = "AND c.checkpoint_id = %s", (checkpoint_id,)
        found = await self._read_checkpoints(thread_id, where, params)
        if not found:
            return None
        checkpoint, head = found[0]
        if head is not None:
            self._heads.put(thread_id, head)
        return checkpoint

    @_retry_if_dropped
    async def _read_cached_head(self, thread_id: str, known: MessageHead) -> Checkpoint | None:
        """The thread's head if it is the checkpoint `known` describes, else None.

        The head is usually the checkpoint this process last wrote or read: then its messages are
        in the cache, and only the small checkpoint row is read, so the cost does not grow with
        the thread's length.
        """
        async with self._connection() as conn:
            cur = await conn.execute(
                f"SELECT {HEAD_COLUMNS} FROM tether_checkpoints c WHERE c.thread_id = %s "
                "ORDER BY c.seq DESC LIMIT 1",
                (thread_id,),
            )
            record = await cur.fetchone()
        if record is None or record[0] != known.checkpoint_id:
            return None
        return build_cached_checkpoint(thread_id, record, known)

    async def list_checkpoints(
        self, thread_id: str, *, limit: int | None = None
    ) -> list[Checkpoint]:
        """The thread's checkpoints, newest first.

        Cancelled: it stops at once (see the module docstring).
        """
        where, params = "ORDER BY c.seq DESC", tuple[Any, ...]()
        if limit is not None:
            where, params = where + " LIMIT %s", (max(limit, 0),)
        return [cp for cp, _ in await self._read_checkpoints(thread_id, where, params)]

    # runs

    @_retry_if_dropped
    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run record, or `None`.

        Cancelled: it stops at once (see the module docstring).
        """
        async with self._connection() as conn:
            cur = await conn.execute("SELECT record FROM tether_runs WHERE run_id = %s", (run_id,))
            row = await cur.fetchone()
        return None if row is None else decode_run(run_id, row[0])

    @_retry_if_dropped
    async def list_runs(
        self, thread_id: str | None = None, *, status: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Run records, newest first.

        Cancelled: it stops at once (see the module docstring).
        """
        where, params = [], []
        if thread_id is not None:
            where.append("thread_id = %s")
            params.append(thread_id)
        if status is not None:
            where.append("status = %s")
            params.append(status)
        sql = "SELECT run_id, record FROM tether_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT %s"
        async with self._connection() as conn:
            cur = await conn.execute(sql, (*params, max(limit, 0)))
            rows = await cur.fetchall()
        return [decode_run(run_id, record) for run_id, record in rows]

    # events

    @_retry_if_dropped
    async def read_events(self, run_id: str, *, after_seq: int = -1) -> list[Event]:
        """The run's events with `seq > after_seq`, in the order they were appended.

        Cancelled: it stops at once (see the module docstring).
        """
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT id, body FROM tether_events WHERE run_id = %s AND seq > %s ORDER BY id",
                (run_id, after_seq),
            )
            rows = await cur.fetchall()
        return [decode_event(row_id, run_id, body) for row_id, body in rows]

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
        Cancelled before it starts, it writes nothing. Once started it is shielded: the transaction
        finishes and `commit()` returns, and the caller sees the cancellation at its next await.
        """
        event_rows = [(e.run_id, e.thread_id, e.seq, encode_event(e)) for e in events]
        run_row = None
        if run is not None:
            run_row = (run.run_id, run.thread_id, run.status, run.created_at, encode_run(run))
        row = None
        if checkpoint is not None:
            row = encode_checkpoint(checkpoint, self._heads.get(checkpoint.thread_id))
        if row is None and not event_rows and run_row is None:
            return
        await anyio.lowlevel.checkpoint_if_cancelled()
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self._timeout
            for attempt in range(2):
                try:
                    async with self._connection() as conn:
                        try:
                            await _apply(conn, row, event_rows, run_row)
                        except psycopg.errors.UniqueViolation as exc:
                            if row is not None and exc.diag.table_name == "tether_checkpoints":
                                raise duplicate_checkpoint(row.checkpoint) from None
                            raise
                    break
                except StorageError as exc:
                    # One retry on a fresh connection when the database dropped this one.
                    if attempt or not _dropped(exc.__cause__):
                        raise
        if scope.cancelled_caught:
            raise StorageError(
                f"commit to {self!r} did not finish within {self._timeout}s, so whether it was "
                "applied is unknown; re-read the thread's head before writing again"
            )
        if row is not None:
            self._heads.put(row.checkpoint.thread_id, row.head)


async def _apply(
    conn: _Conn,
    row: CheckpointRow | None,
    event_rows: list[tuple[str, str, int, str]],
    run_row: tuple[str, str, str, float, str] | None,
) -> None:
    """The commit transaction, pipelined: two round trips, BEGIN + the head lock, and the rest."""
    async with conn.pipeline(), conn.transaction():
        if row is not None:
            await _swap_head(conn, row)  # waits for its result: the CAS decides what follows
            await _write_checkpoint(conn, row)
        if event_rows:
            await conn.cursor().executemany(
                "INSERT INTO tether_events (run_id, thread_id, seq, body) VALUES (%s, %s, %s, %s)",
                event_rows,
            )
        if run_row is not None:
            if row is None or run_row[1] != row.checkpoint.thread_id:
                await _ensure_thread(conn, run_row[1])
            await conn.execute(
                "INSERT INTO tether_runs (run_id, thread_id, status, created_at, record) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET "
                "thread_id = EXCLUDED.thread_id, status = EXCLUDED.status, "
                "created_at = EXCLUDED.created_at, record = EXCLUDED.record",
                run_row,
            )


async def _ensure_thread(conn: _Conn, thread_id: str) -> None:
    await conn.execute(
        "INSERT INTO tether_threads (thread_id, created_at, metadata) VALUES (%s, %s, '{}') "
        "ON CONFLICT (thread_id) DO NOTHING",
        (thread_id, time.time()),
    )


async def _swap_head(conn: _Conn, row: CheckpointRow) -> None:
    """Lock the thread's row and check that its head is the checkpoint's parent."""
    cp = row.checkpoint
    lock = "SELECT head_id FROM tether_threads WHERE thread_id = %s FOR UPDATE"
    cur = await conn.execute(lock, (cp.thread_id,))
    found = await cur.fetchone()
    if found is None and cp.parent_id is None:
        # Create it; a concurrent creator makes this wait, then do nothing, and the second
        # SELECT then waits for its row lock and sees its head.
        await _ensure_thread(conn, cp.thread_id)
        cur = await conn.execute(lock, (cp.thread_id,))
        found = await cur.fetchone()
    head = None if found is None else found[0]
    if head != cp.parent_id:
        raise conflict(cp.thread_id, head, cp.parent_id)


async def _write_checkpoint(conn: _Conn, row: CheckpointRow) -> None:
    cp = row.checkpoint
    if row.new_messages:
        await conn.cursor().executemany(
            "INSERT INTO tether_messages (thread_id, ref, body) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [(cp.thread_id, ref, body) for ref, body in row.new_messages],
        )
    await conn.execute(
        "INSERT INTO tether_checkpoints (thread_id, checkpoint_id, parent_id, run_id, step, next, "
        "source, created_at, metadata, channels, msgs_base, msgs) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
    await conn.execute(
        "UPDATE tether_threads SET head_id = %s WHERE thread_id = %s",
        (cp.checkpoint_id, cp.thread_id),
    )


async def _check_connection(conn: _Conn) -> None:
    """The pool's check before it hands out an idle connection; raises if it is dead.

    An idle connection has nothing to read, unless the server wrote to it: when a backend is
    terminated (a restart, `pg_terminate_backend`, a failover) the server sends an error and
    closes the socket. So a readable socket is confirmed with one round trip, and a quiet one
    costs nothing.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


def _dropped(exc: BaseException | None) -> bool:
    """Whether a driver error means the connection was lost (not that the statement failed)."""
    if not isinstance(exc, psycopg.OperationalError) or isinstance(exc, PoolTimeout):
        return False
    state = exc.sqlstate
    # No SQLSTATE: the socket closed under psycopg. 08: connection exceptions. 57P0x: the
    # backend was terminated (admin shutdown, crash shutdown, cannot connect now).
    return state is None or state.startswith("08") or state.startswith("57P0")


def _translate(exc: psycopg.Error, store: PostgresCheckpointer) -> TetherError:
    if isinstance(exc, psycopg.DataError):
        # e.g. a NUL character in an id, or NaN in thread metadata (which jsonb refuses)
        return UserError(
            f"Postgres refused to store the data: {exc}; use text without NUL and finite numbers"
        )
    return StorageError(f"{store!r} failed: {redact(str(exc))}")
