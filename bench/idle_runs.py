"""Many idle streaming runs in one process: memory per run, and stop latency among them.

    python bench/idle_runs.py [--runs 10000] [--stops 300] [--write]
    python bench/idle_runs.py --breakdown 1000   # where an idle run's memory goes, then exit

Each run is a one-node graph whose node streams one token and then waits (an LLM between two
tokens, a tool awaiting an answer): `yield "tok "; await anyio.sleep(3600)`. Every run has its own
consumer task iterating `app.astream(...)`, as a server has one per open stream. Storage is in
memory, so the figures are the engine's own.

- Memory per run: the process's resident set size after all `--runs` runs have streamed their
  first token, minus the RSS before the first one started (after `gc.collect()` both times),
  divided by `--runs`; the tracemalloc column counts Python allocations alone, on a 1,000-run
  sample (tracemalloc slows everything down, so it is a separate pass).
- `--breakdown N`: a tracemalloc snapshot diff over N idle runs, per run, grouped by the allocation
  site and the innermost tether (or bench) frame that led to it; nothing else is measured.
- Stop: `--stops` runs, picked at random, are stopped one at a time with
  `app.astop(thread_id=..., wait=False)` while the others stay open; the clock stops when the
  run's consumer receives `run_finished`. Then every remaining run is stopped at once, and the
  script checks that each consumer got exactly one `run_finished` with status `cancelled`.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import random
import statistics
import time
import tracemalloc
from datetime import date
from typing import Any

import anyio
from _common import machine, percentile, write_section

from tether import InMemoryCheckpointer, RunFinished, StateGraph
from tether.ids import new_id


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build() -> Any:
    async def idle(state: dict[str, Any]) -> Any:
        yield "tok "
        await anyio.sleep(3600)

    g = StateGraph()
    g.add_node("node", idle)
    g.set_entry_point("node")
    return g.compile(InMemoryCheckpointer())


async def session(runs: int, stops: int) -> dict[str, Any]:
    app = build()
    ended: dict[str, RunFinished] = {}
    done: dict[str, anyio.Event] = {}
    threads = [new_id() for _ in range(runs)]
    for thread in threads:
        done[thread] = anyio.Event()

    async def consume(thread: str, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        async for event in app.astream("go", thread_id=thread):
            if not started and event.type == "message_delta":
                started = True
                task_status.started()
            if isinstance(event, RunFinished):
                assert thread not in ended, "two terminal events"
                ended[thread] = event
                done[thread].set()

    # Warm up one run first, so imports and caches are not counted per run.
    async with anyio.create_task_group() as tg:
        warm = new_id()
        done[warm] = anyio.Event()
        await tg.start(consume, warm)
        await app.astop(thread_id=warm, wait=False)
    gc.collect()
    before = rss()
    latencies: list[float] = []
    start_all = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for thread in threads:
            await tg.start(consume, thread)
        opened = time.perf_counter() - start_all
        gc.collect()
        per_run = (rss() - before) / runs
        for thread in random.sample(threads, min(stops, runs)):
            await anyio.sleep(random.uniform(0, 0.002))
            t0 = time.perf_counter()
            await app.astop(thread_id=thread, wait=False)
            await done[thread].wait()
            latencies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for thread in threads:
            await app.astop(thread_id=thread, wait=False)
    stop_all = time.perf_counter() - t0
    cancelled = sum(ended[t].status == "cancelled" for t in threads)
    return {
        "per_run": per_run,
        "opened": opened,
        "latencies": latencies,
        "stop_all": stop_all,
        "cancelled": cancelled,
    }


async def traced(runs: int) -> float:
    """Python-allocated bytes per idle run (tracemalloc), on `runs` runs."""
    app = build()
    ready = 0

    async def consume(thread: str, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async for event in app.astream("go", thread_id=thread):
            if event.type == "message_delta":
                task_status.started()

    async with anyio.create_task_group() as tg:
        await tg.start(consume, new_id())  # warm-up
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        threads = [new_id() for _ in range(runs)]
        for thread in threads:
            await tg.start(consume, thread)
            ready += 1
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        tg.cancel_scope.cancel()
    return used / runs


async def breakdown(runs: int, top: int = 30) -> None:
    """Print where the Python memory of `runs` idle runs goes, per run, largest first."""
    app = build()

    async def consume(thread: str, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async for event in app.astream("go", thread_id=thread):
            if event.type == "message_delta":
                task_status.started()

    async with anyio.create_task_group() as tg:
        for _ in range(3):  # warm-up
            await tg.start(consume, new_id())
        gc.collect()
        tracemalloc.start(30)
        before = tracemalloc.take_snapshot()
        for _ in range(runs):
            await tg.start(consume, new_id())
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        tg.cancel_scope.cancel()
    sites: collections.Counter[tuple[str, str]] = collections.Counter()
    for stat in after.compare_to(before, "traceback"):
        frames = list(stat.traceback)[::-1]  # innermost first
        ours = next(
            (f for f in frames if "/tether/" in f.filename or "/bench/" in f.filename), None
        )
        where = "-" if ours is None else f"{ours.filename.rsplit('/', 1)[-1]}:{ours.lineno}"
        site = "/".join(frames[0].filename.split("/")[-2:]) + f":{frames[0].lineno}"
        sites[(where, site)] += stat.size_diff
    print(f"Python bytes per idle run: {sum(sites.values()) / runs:.0f}")
    print("bytes/run  innermost tether/bench frame  <- allocation site")
    for (where, site), size in sites.most_common(top):
        print(f"{size / runs:9.0f}  {where:28}  <- {site}")


async def main(runs: int, stops: int, write: bool) -> None:
    load = os.getloadavg()[0]
    r = await session(runs, stops)  # first: the RSS delta needs memory the process never had
    python_bytes = await traced(1000)
    lat = r["latencies"]
    p50, p99, mx = statistics.median(lat) * 1e3, percentile(lat, 99) * 1e3, max(lat) * 1e3
    print(f"machine: {machine()}; load {load:.1f}")
    print(f"runs: {runs:,}, opened in {r['opened']:.1f} s")
    print(
        f"memory per idle run: {r['per_run'] / 1024:.1f} KiB RSS, {python_bytes / 1024:.1f} KiB Python"
    )
    print(
        f"stop -> run_finished among {runs:,}: p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {mx:.2f} ms"
    )
    print(f"stop all the rest: {r['stop_all']:.2f} s; cancelled: {r['cancelled']:,} of {runs:,}")
    if write:
        write_section(
            "bench/idle_runs.py",
            f"""<!-- bench/idle_runs.py -->
## Idle streaming runs: memory per run, and stops among {runs:,} (`bench/idle_runs.py`)

- Date: {date.today()}. Command: `python bench/idle_runs.py --runs {runs} --stops {stops} --write`
- Machine: {machine()}; 1-minute load average {load:.1f} at the start (shared with other work)
- {runs:,} runs, each streamed one token and waits in an await, each with its own consumer task;
  in-memory storage. Opening them all took {r["opened"]:.1f} s.

| Measure | Value |
|---|---:|
| memory per idle streaming run (RSS delta / runs) | {r["per_run"] / 1024:.1f} KiB |
| memory per idle streaming run (Python allocations, tracemalloc, 1,000 runs) | {python_bytes / 1024:.1f} KiB |
| stop -> `run_finished`, {len(lat)} stops among {runs:,} open runs: p50 / p99 / max | {p50:.2f} / {p99:.2f} / {mx:.2f} ms |
| stopping all the other runs at once | {r["stop_all"]:.2f} s |
| runs that ended `cancelled` with one terminal event | {r["cancelled"]:,} of {runs:,} |
<!-- /bench/idle_runs.py -->
""",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--stops", type=int, default=300)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--breakdown", type=int, metavar="N", help="tracemalloc sites, N runs")
    args = parser.parse_args()
    if args.breakdown:
        anyio.run(breakdown, args.breakdown)
    else:
        anyio.run(main, args.runs, args.stops, args.write)
