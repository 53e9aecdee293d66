"""Copying SQLite's write-ahead log back into the database file, off the commit path.

In WAL mode a commit appends pages to the `-wal` file, and a *checkpoint* later copies them into the
database file, with an fsync of each. By default SQLite checkpoints inside the commit that takes
the log past 1,000 pages (4 MiB), so every few megabytes one commit stalls for the copy and the
fsyncs (on a streamed answer, about a third of what storing its events costs).

`BackgroundCheckpoints` turns that off for the committing connection and runs the same checkpoint
(`PASSIVE`: it never blocks a writer or a reader) on its own connection in a background thread,
once the commits since the last one appended about a megabyte (`EVERY_BYTES`: their data, plus a
few pages each, since a small commit still appends whole pages). What is durable when does not
change: a commit is in the log when it returns, whoever copies it later. A checkpoint that fails,
or a thread that cannot start, is logged and tried again after the next megabyte: commits are not
affected.

The log starts over from its beginning only when a commit finds it wholly copied, which a stream
of commits that never pauses does not allow (each checkpoint ends behind the latest commit). So
SQLite's own checkpoint in the commit path stays on, at `FALLBACK_PAGES`, as the bound on the log's
size: by the time it runs, the background has copied all but the last megabyte or so, so that
commit stalls for little more than the fsyncs. It is also the bound if the background falls
behind (a reader holding an old snapshot, a slow disk).
"""

from __future__ import annotations

import logging
import sqlite3
import threading

__all__ = ["BackgroundCheckpoints"]

_log = logging.getLogger(__name__)

EVERY_BYTES = 1 << 20  # appended to the log between two background checkpoints
FALLBACK_PAGES = 2_000  # the commit path checkpoints itself past this many pages (8 MiB)
PAGES_PER_COMMIT = 4  # what any commit appends besides its data (b-tree leaves, index pages)


class BackgroundCheckpoints:
    """Checkpoints one database file's WAL in a background thread; see the module docstring."""

    def __init__(
        self, conn: sqlite3.Connection, path: str, *, uri: bool, busy_timeout: float
    ) -> None:
        """Take over `conn`'s checkpoints (it keeps its own only past `FALLBACK_PAGES`)."""
        conn.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
        self._path, self._uri, self._busy_timeout = path, uri, busy_timeout
        self._overhead = PAGES_PER_COMMIT * conn.execute("PRAGMA page_size").fetchone()[0]
        self._written = 0  # bytes appended to the log since the last checkpoint (an estimate)
        self._lock = threading.Lock()  # guards `_written` and `_thread`
        self._thread: threading.Thread | None = None

    def wrote(self, nbytes: int) -> None:
        """Count a commit of `nbytes` of data (plus the pages every commit appends); start a
        checkpoint if enough has accumulated and none is running. Never blocks."""
        with self._lock:
            self._written += nbytes + self._overhead
            if self._written < EVERY_BYTES or self._thread is not None:
                return
            self._written = 0
            thread = threading.Thread(
                target=self._checkpoint, name="tether-sqlite-wal", daemon=True
            )
            try:
                thread.start()
            except RuntimeError as exc:  # no thread left, or the interpreter is shutting down
                _log.warning("could not start a WAL checkpoint of %r: %s", self._path, exc)
                return
            self._thread = thread

    def wait(self) -> None:
        """Wait for a running checkpoint to end (before the file is closed)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _checkpoint(self) -> None:
        try:
            conn = sqlite3.connect(
                self._path, timeout=self._busy_timeout, isolation_level=None, uri=self._uri
            )
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error as exc:  # the next one retries; commits are not affected
            _log.warning("background WAL checkpoint of %r failed: %s", self._path, exc)
        finally:
            with self._lock:
                self._thread = None
