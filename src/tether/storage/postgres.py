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
  step's commit does not grow with the thread's length (see `_rows`).

Guarantees:
- Reads return exactly the committed values, like every backend.
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
- Close the checkpointer (`aclose()`, or `async with`) before an event loop that used it ends.
  psycopg-pool treats the cancellation of a connection attempt that is in flight as a failed
  connect and retries it, so a loop that shuts down with an open pool may never finish.
- As in the SQLite backend, a `Message` whose `metadata` dict is mutated in place after it was
  committed or read is not detected as changed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgresCheckpointer needs psycopg 3 and psycopg-pool; install them with "
        "pip install 'tether[postgres]'"
    ) from exc

from ..errors import StorageError, TetherError, UserError
from ..events import Event
from ..run import RunRecord
from ..serde import encode_value
from ._rows import (
    CHECKPOINT_COLUMNS,
    CHECKPOINT_FROM,
    CheckpointRow,
    HeadCache,
    MessageHead,
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
        return f"PostgresCheckpointer({self.dsn!r})"

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
                    f"{self.dsn!r} has tether schema version {version}, newer than this "
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

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run record, or `None`.

        Cancelled: it stops at once (see the module docstring).
        """
        async with self._connection() as conn:
            cur = await conn.execute("SELECT record FROM tether_runs WHERE run_id = %s", (run_id,))
            row = await cur.fetchone()
        return None if row is None else decode_run(run_id, row[0])

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
            async with self._connection() as conn:
                try:
                    await _apply(conn, row, event_rows, run_row)
                except psycopg.errors.UniqueViolation as exc:
                    if row is not None and exc.diag.table_name == "tether_checkpoints":
                        raise duplicate_checkpoint(row.checkpoint) from None
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


def _translate(exc: psycopg.Error, store: PostgresCheckpointer) -> TetherError:
    if isinstance(exc, psycopg.DataError):
        # e.g. a NUL character in an id, or NaN in thread metadata (which jsonb refuses)
        return UserError(
            f"Postgres refused to store the data: {exc}; use text without NUL and finite numbers"
        )
    return StorageError(f"{store!r} failed: {exc}")
