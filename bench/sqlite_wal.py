"""SQLite's WAL checkpoints in a background thread vs inside commits, in one process.

    python bench/sqlite_wal.py [--commits 3000] [--items 50000] [--rounds 5]

Two workloads, each run in three passes in one process: tether's way, SQLite's default, then
tether's way again. Tether's way is `storage/_wal.py`: a background thread checkpoints after about
every megabyte, and SQLite's own checkpoint in the commit stays on at 8 MiB. SQLite's default: every
commit that takes the log past 1,000 pages checkpoints inline, and there is no background thread.
- back-to-back small commits (one event each, as a chatty app makes): the slowest commit, the p99,
  and the size of the `-wal` file at the end;
- streamed runs (a one-node graph yielding `--items` tokens, as `bench/stream_throughput.py`): the
  median run time, as a ratio to the in-memory checkpointer in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import anyio
from _common import machine, percentile
from stream_throughput import engine

from tether import InMemoryCheckpointer
from tether.events import MessageDeltaEvent
from tether.storage import _wal
from tether.storage.sqlite import SqliteCheckpointer


@contextmanager
def sqlite_default() -> Iterator[None]:
    """SQLite's own behaviour: checkpoints inside commits at 1,000 pages, no background thread."""
    fallback, wrote = _wal.FALLBACK_PAGES, _wal.BackgroundCheckpoints.wrote
    _wal.FALLBACK_PAGES = 1000  # SQLite's default
    _wal.BackgroundCheckpoints.wrote = lambda self, nbytes: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        _wal.FALLBACK_PAGES = fallback
        _wal.BackgroundCheckpoints.wrote = wrote  # type: ignore[method-assign]


async def small_commits(path: str, commits: int) -> tuple[float, float, int]:
    """Slowest and p99 commit (seconds), and the log's size (bytes) after `commits` commits."""
    took = []
    async with SqliteCheckpointer(path) as store:
        for i in range(commits):
            event = MessageDeltaEvent(
                run_id=f"r{i}", thread_id="t", seq=0, ts=time.time(), message_id="m", content="x"
            )
            start = time.perf_counter()
            await store.commit(events=[event])
            took.append(time.perf_counter() - start)
        size = os.path.getsize(path + "-wal")
    return max(took), percentile(took, 99), size


async def streams(path: str, items: int, rounds: int) -> float:
    """Median SQLite run time over the median in-memory one, alternating."""
    memory, disk = [], []
    store, mem = SqliteCheckpointer(path), InMemoryCheckpointer()
    for _ in range(rounds):
        memory.append(await engine(items, mem))
        disk.append(await engine(items, store))
    await store.aclose()
    return statistics.median(disk) / statistics.median(memory)


async def main(commits: int, items: int, rounds: int) -> None:
    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("background", "sqlite default", "background"):
            with sqlite_default() if name == "sqlite default" else nullcontext():
                tag = f"{name.replace(' ', '-')}-{time.monotonic_ns()}"
                worst, p99, size = await small_commits(os.path.join(tmp, f"{tag}-s.db"), commits)
                ratio = await streams(os.path.join(tmp, f"{tag}-t.db"), items, rounds)
            print(
                f"{name:15} {commits:,} small commits: slowest {worst * 1e3:5.1f} ms, "
                f"p99 {p99 * 1e3:4.2f} ms, log {size / 2**20:4.1f} MiB; "
                f"streamed runs: SQLite / memory {ratio:.2f}x"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.commits, args.items, args.rounds)
