"""SQLite's write-ahead log is copied into the database file by a background thread
(`storage/_wal.py`), not inside a commit, and a failing copy loses nothing."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import types
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import anyio
import pytest

from tether.events import Event, MessageDeltaEvent
from tether.storage import _wal
from tether.storage.sqlite import SqliteCheckpointer


def _tokens(run_id: str, n: int) -> list[Event]:
    return [
        MessageDeltaEvent(
            run_id=run_id, thread_id="t", seq=i, ts=1.0 + i, message_id="m", content="x" * 200
        )
        for i in range(n)
    ]


def test_commits_leave_the_checkpoint_to_a_background_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wal, "EVERY_BYTES", 100_000)
    path = os.fspath(tmp_path / "t.db")

    async def main() -> None:
        async with SqliteCheckpointer(path) as store:
            fallback = await store._run(
                lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            )
            assert fallback == _wal.FALLBACK_PAGES  # a commit checkpoints only past 8 MiB
            before = os.path.getsize(path)
            await store.commit(events=_tokens("r1", 2_000))  # ~400 KB into the log
            assert store._wal is not None
            store._wal.wait()
            # The pages reached the database file, which no commit would have done by itself.
            assert os.path.getsize(path) > before + 300_000
            assert await store.read_events("r1") == _tokens("r1", 2_000)

    anyio.run(main)


def test_a_failing_background_checkpoint_is_logged_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_wal, "EVERY_BYTES", 1)

    def refuse(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("disk I/O error")

    # Fault injection: only the background thread's connection fails.
    monkeypatch.setattr(_wal, "sqlite3", types.SimpleNamespace(connect=refuse, Error=sqlite3.Error))
    path = os.fspath(tmp_path / "t.db")

    async def main() -> None:
        async with SqliteCheckpointer(path) as store:
            for run in ("r1", "r2"):
                await store.commit(events=_tokens(run, 50))
                assert store._wal is not None
                store._wal.wait()
            assert await store.read_events("r1") == _tokens("r1", 50)
            assert await store.read_events("r2") == _tokens("r2", 50)

    with caplog.at_level(logging.WARNING, logger="tether.storage._wal"):
        anyio.run(main)
    failures = [r for r in caplog.records if "background WAL checkpoint" in r.getMessage()]
    assert len(failures) == 2  # each commit started a new attempt after the failed one
    # Closing checkpointed the log into the file (SQLite does, on the last close).
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM tether_events").fetchone()[0] == 2


def test_many_small_commits_keep_the_log_small_and_copied_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small commit carries a few hundred bytes but appends whole pages to the log: counting
    # only the data, the background would hardly ever run and the log would grow to the fallback
    # bound with nearly everything still to copy. The checkpoints run between the commits here
    # (not in a thread), so how many start does not depend on the machine's speed.
    monkeypatch.setattr(_wal, "EVERY_BYTES", 128 * 1024)
    queued: list[Callable[[], None]] = []

    class Queued:
        """`threading.Thread` as `_wal` uses it: `start()` queues the target for the test."""

        def __init__(self, *, target: Callable[[], None], name: str, daemon: bool) -> None:
            self.target = target

        def start(self) -> None:
            queued.append(self.target)

        def join(self) -> None:
            assert not queued

    monkeypatch.setattr(
        _wal, "threading", types.SimpleNamespace(Thread=Queued, Lock=threading.Lock)
    )
    path = os.fspath(tmp_path / "t.db")
    commits, started = 600, 0  # each commit appends at least 2 pages of 4 KiB: ~5 MiB in all

    async def main() -> None:
        nonlocal started
        async with SqliteCheckpointer(path) as store:
            for i in range(commits):
                await store.commit(events=_tokens(f"r{i}", 1))
                while queued:
                    queued.pop()()
                    started += 1
            assert os.path.getsize(path + "-wal") < 2 << 20
            for run in ("r0", f"r{commits - 1}"):
                assert await store.read_events(run) == _tokens(run, 1)

    anyio.run(main)
    assert started >= commits * 2 * 4096 // (128 * 1024)  # at least one per 128 KiB of pages


def test_a_checkpoint_thread_that_cannot_start_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_wal, "EVERY_BYTES", 1)

    class Refused:
        def __init__(self, **kwargs: object) -> None:
            pass

        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(
        _wal, "threading", types.SimpleNamespace(Thread=Refused, Lock=threading.Lock)
    )
    path = os.fspath(tmp_path / "t.db")

    async def main() -> None:
        store = SqliteCheckpointer(path)
        for run in ("r1", "r2"):
            await store.commit(events=_tokens(run, 3))  # commits as if nothing happened
        assert await store.read_events("r2") == _tokens("r2", 3)
        await store.aclose()  # and the store still closes

    with caplog.at_level(logging.WARNING, logger="tether.storage._wal"):
        anyio.run(main)
    assert sum("could not start a WAL checkpoint" in r.getMessage() for r in caplog.records) == 2
