"""`PostgresRunQueue`: the durable queue of background runs that `tether worker` processes execute.

Needs the `postgres` extra. It lives in the checkpointer's database (the same DSN), in its own
table `tether_run_queue`, created at first use under the same advisory lock as the checkpointer's
migrations, so processes that start together create it once.

Mechanism:
- `put()` inserts one row per queued run: its id, thread, app name and the JSON of its input and
  options (`QueuedRun`). In the same transaction, under a transaction-level advisory lock of the
  run's thread, an API process first admits the run to its thread in the run registry and writes
  its `pending` record (so it can be read and joined everywhere); a refusal (a busy thread under
  `reject`) rolls the insert back. The lock makes the admission order of one thread's runs the
  order of their rows.
- `take()` runs in one transaction: `SELECT ... ORDER BY seq FOR UPDATE SKIP LOCKED LIMIT 1`
  picks the oldest row no other worker holds, the caller starts the run (which registers it with
  the run registry), and only then the row is deleted and the transaction committed. So two
  workers never take the same run, and a worker that dies before committing leaves the row queued.
- `cancel()` deletes a row by run id (or the oldest of a thread). A row a worker is taking is
  locked: the delete waits for that worker's commit and then finds nothing, and by then the run
  is registered, so the caller's next look at the registry finds it live. That is what lets a stop
  never fall between "queued" and "running".

Every method opens its own connection (a queue call is rare next to a run's commits; a worker's
`take()` loop holds one from `connection()`, see `tether.worker`). Cancelled at an await, a method
rolls its transaction back (the row stays where it was) and closes its connection, shielded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgresRunQueue needs psycopg 3; install it with pip install 'tether[postgres]'"
    ) from exc

from ..errors import StorageError

__all__ = ["PostgresRunQueue", "QueuedRun"]

_Conn = psycopg.AsyncConnection[Any]

# The checkpointer's migration lock (storage/postgres.py): the table is created under it.
_MIGRATION_LOCK = 0x7465746865720001
# The first key of the per-thread lock `put()` admits runs under (the second: the thread's hash).
_THREAD_LOCK = 0x74657468

_CREATE = """CREATE TABLE IF NOT EXISTS tether_run_queue (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    run_id text COLLATE "C" PRIMARY KEY,
    thread_id text NOT NULL,
    app text,
    payload text NOT NULL,
    enqueued_at double precision NOT NULL DEFAULT extract(epoch FROM now())
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS tether_run_queue_by_seq ON tether_run_queue (seq)"
_COLUMNS = "run_id, thread_id, app, payload"


@dataclass(frozen=True, slots=True)
class QueuedRun:
    """One queued run. `payload` is JSON: its encoded input and options (see `tether.worker`)."""

    run_id: str
    thread_id: str
    app: str | None
    payload: dict[str, Any]


def _row(row: tuple[Any, ...]) -> QueuedRun:
    run_id, thread_id, app, payload = row
    return QueuedRun(run_id=run_id, thread_id=thread_id, app=app, payload=json.loads(payload))


class PostgresRunQueue:
    """The queue of background runs waiting for a `tether worker`, in one Postgres database.

    Args:
        dsn: The Postgres URL or conninfo (the checkpointer's).
        connect_timeout: Seconds a connection attempt may take.
    """

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self._connect_timeout = connect_timeout
        self._ready = False

    def __repr__(self) -> str:
        return "PostgresRunQueue(<dsn hidden>)"

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Conn]:
        """A new connection with the table in place, closed on exit even when cancelled (a
        worker's `take()` loop holds one). Raises `StorageError` when the database is
        unreachable."""
        conn = await self._connect()
        try:
            yield conn
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()

    async def _connect(self) -> _Conn:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, connect_timeout=max(1, int(self._connect_timeout))
            )
        except psycopg.Error as exc:
            raise StorageError(f"could not connect to the run queue's database: {exc}") from exc
        if not self._ready:
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    await conn.execute(_CREATE)
                    await conn.execute(_INDEX)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await conn.close()
                if isinstance(exc, psycopg.Error):
                    raise StorageError(f"could not create the run queue table: {exc}") from exc
                raise
            self._ready = True
        return conn

    async def put(
        self, run: QueuedRun, *, admit: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Queue `run`. Raises `StorageError` when the database fails (nothing was queued).

        `admit` is awaited in the insert's transaction, under a lock of the run's thread, before
        the row is written: whatever it raises (a busy thread) leaves nothing queued. Runs of one
        thread are thus admitted in the order of their rows, which is the order workers take
        them in.

        Cancellation: the run is queued fully or not at all.
        """
        async with self.connection() as conn:
            try:
                async with conn.transaction():
                    if admit is not None:
                        await conn.execute(
                            "SELECT pg_advisory_xact_lock(%s::int4, hashtext(%s))",
                            (_THREAD_LOCK, run.thread_id),
                        )
                        await admit()
                    await conn.execute(
                        f"INSERT INTO tether_run_queue ({_COLUMNS}) VALUES (%s, %s, %s, %s)",
                        (run.run_id, run.thread_id, run.app, json.dumps(run.payload)),
                    )
            except psycopg.Error as exc:
                raise StorageError(f"could not queue run {run.run_id!r}: {exc}") from exc

    async def take(
        self,
        conn: _Conn,
        start: Callable[[QueuedRun], Awaitable[None]],
        apps: Sequence[str],
    ) -> bool:
        """Take the oldest run of one of `apps` (by name; "" for an unnamed app) that no other
        worker holds, and `start` it; False when none is queued.

        The row is deleted in the same transaction, after `start` returned; if `start` raises, the
        transaction rolls back and the run stays queued. Raises `StorageError` when the database
        fails.

        Cancellation: shielded, so a run `start` started is never left queued as well; the
        cancellation is delivered once the take committed (or rolled back).
        """
        try:
            with anyio.CancelScope(shield=True):
                took = await self._take(conn, start, apps)
        except psycopg.Error as exc:
            raise StorageError(f"could not take a run from the queue: {exc}") from exc
        return took

    async def _take(
        self,
        conn: _Conn,
        start: Callable[[QueuedRun], Awaitable[None]],
        apps: Sequence[str],
    ) -> bool:
        async with conn.transaction():
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM tether_run_queue WHERE coalesce(app, '') = ANY(%s) "
                "ORDER BY seq FOR UPDATE SKIP LOCKED LIMIT 1",
                (list(apps),),
            )
            row = await cur.fetchone()
            if row is None:
                return False
            run = _row(row)
            await start(run)
            await conn.execute("DELETE FROM tether_run_queue WHERE run_id = %s", (run.run_id,))
        return True

    async def cancel(
        self, *, run_id: str | None = None, thread_id: str | None = None
    ) -> QueuedRun | None:
        """Remove the queued run with `run_id` (or the oldest queued run of `thread_id`).

        Returns it, or None when no such run is queued (a worker took it, or it never was). Waits
        while a worker is taking it. Raises `StorageError` when the database fails.

        Cancellation: the run is removed fully or not at all.
        """
        if run_id is None and thread_id is None:
            return None
        where = "run_id = %s" if run_id is not None else "thread_id = %s"
        if run_id is not None and thread_id is not None:
            where += " AND thread_id = %s"
        params = [p for p in (run_id, thread_id) if p is not None]
        async with self.connection() as conn:
            try:
                async with conn.transaction():
                    cur = await conn.execute(
                        "DELETE FROM tether_run_queue WHERE run_id = "
                        f"(SELECT run_id FROM tether_run_queue WHERE {where} ORDER BY seq LIMIT 1) "
                        f"RETURNING {_COLUMNS}",
                        params,
                    )
                    row = await cur.fetchone()
            except psycopg.Error as exc:
                raise StorageError(f"could not cancel a queued run: {exc}") from exc
        return None if row is None else _row(row)

    async def contains(self, run_id: str) -> bool:
        """Whether the run is queued (a worker that is taking it still counts). Cancellation only
        stops the read."""
        async with self.connection() as conn:
            try:
                cur = await conn.execute(
                    "SELECT 1 FROM tether_run_queue WHERE run_id = %s", (run_id,)
                )
                return await cur.fetchone() is not None
            except psycopg.Error as exc:
                raise StorageError(f"could not read the run queue: {exc}") from exc

    async def size(self) -> int:
        """How many runs are queued. Cancellation only stops the read."""
        async with self.connection() as conn:
            try:
                cur = await conn.execute("SELECT count(*) FROM tether_run_queue")
                row = await cur.fetchone()
            except psycopg.Error as exc:
                raise StorageError(f"could not read the run queue: {exc}") from exc
        return int(row[0]) if row else 0
