"""Stream throughput: events/s through the engine vs a bare async generator, in one process.

    python bench/stream_throughput.py [--items 100000] [--rounds 7] [--write]

The engine side is a one-node graph whose async-generator node yields `--items` text tokens, read
with `async for` over `app.astream(...)` (each token is a `message_delta` event; the run adds a
handful of other events). The baseline iterates a bare async generator that yields the same strings.
Both run on one event loop; the ratio of their medians is the engine's cost per event. The engine
runs twice per round: on the in-memory checkpointer, and on the default SQLite one (one file for
the whole benchmark, as an app keeps one, WAL, `synchronous=NORMAL`: the event log is durable and
re-joinable); every run is a new thread. Storage commits
once per step, as with any backend, so the SQLite figure includes writing every event.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import date
from typing import Any

import anyio
from _common import machine, write_section

from tether import InMemoryCheckpointer, StateGraph
from tether.storage import Checkpointer
from tether.storage.sqlite import SqliteCheckpointer


async def tokens(n: int) -> Any:
    for _ in range(n):
        yield "tok "


async def bare(n: int) -> float:
    start = time.perf_counter()
    count = 0
    async for _ in tokens(n):
        count += 1
    assert count == n
    return time.perf_counter() - start


async def engine(n: int, store: Checkpointer, cpu: list[float] | None = None) -> float:
    async def node(state: dict[str, Any]) -> Any:
        async for token in tokens(n):
            yield token

    g = StateGraph()
    g.add_node("node", node)
    g.set_entry_point("node")
    app = g.compile(store)
    start, start_cpu = time.perf_counter(), time.process_time()
    count = 0
    async for event in app.astream("go"):
        count += event.type == "message_delta"
    assert count == n
    if cpu is not None:  # CPU time of the whole process, storage threads included
        cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


async def main(items: int, rounds: int, write: bool) -> None:
    load = os.getloadavg()[0]
    print(f"machine: {machine()}; load {load:.1f}")
    base, mem, disk, mem_cpu, disk_cpu = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        # One store each for the whole benchmark, as an app keeps one; every run is a new thread.
        memory, sqlite = InMemoryCheckpointer(), SqliteCheckpointer(os.path.join(tmp, "t.db"))
        for _ in range(rounds):
            base.append(await bare(items))
            mem.append(await engine(items, memory, mem_cpu))
            disk.append(await engine(items, sqlite, disk_cpu))
        await sqlite.aclose()
    b, m, d = statistics.median(base), statistics.median(mem), statistics.median(disk)
    print(f"bare async generator: {items / b:12,.0f} items/s  ({b / items * 1e6:.3f} µs/item)")
    print(f"tether astream, memory: {items / m:12,.0f} events/s ({m / items * 1e6:.3f} µs/event)")
    print(f"tether astream, SQLite: {items / d:12,.0f} events/s ({d / items * 1e6:.3f} µs/event)")
    cpu = statistics.median(disk_cpu) / statistics.median(mem_cpu)
    print(f"memory vs bare: {m / b:.1f}x; SQLite vs memory: {d / m:.2f}x (CPU time: {cpu:.2f}x)")
    if write:
        write_section(
            "bench/stream_throughput.py",
            f"""<!-- bench/stream_throughput.py -->
## Stream throughput: events/s through the engine vs a bare async generator, memory and SQLite (`bench/stream_throughput.py`)

- Date: {date.today()}. Command: `python bench/stream_throughput.py --items {items} --rounds {rounds} --write`
- Machine: {machine()}; 1-minute load average {load:.1f} at the start (shared with other work,
  so absolute figures are low; the ratios are measured in the same run, alternating)
- Engine: a one-node graph whose async-generator node yields text tokens, read with
  `async for event in app.astream(...)` (one `message_delta` event per token), on the in-memory
  checkpointer and on the default SQLite one (every event logged, durable and re-joinable).
  Baseline: a bare async generator yielding the same strings, iterated on the same loop.

| Stream | Items/s | µs per item | ratio |
|---|---:|---:|---:|
| bare async generator | {items / b:,.0f} | {b / items * 1e6:.3f} | 1 |
| tether `astream`, in-memory | {items / m:,.0f} | {m / items * 1e6:.3f} | {m / b:.1f}x the bare generator |
| tether `astream`, SQLite (default) | {items / d:,.0f} | {d / items * 1e6:.3f} | {d / m:.2f}x the in-memory one |

In process CPU time (less sensitive to the other work on the machine, storage threads included)
the SQLite run costs {cpu:.2f}x the in-memory one.
<!-- /bench/stream_throughput.py -->
""",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    anyio.run(main, args.items, args.rounds, args.write)
