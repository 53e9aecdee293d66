"""Stop latency: the time from `stop()` to the consumer seeing `run_finished`.

    python bench/stop_latency.py [--runs 200] [--concurrent 1000] [--write]

Two node shapes: one that yields a token every 20 ms, and one blocked in a 5 s await. For each,
it measures one run at a time (`--runs` repetitions), then `--concurrent` runs streaming at once,
stopped one by one while the others keep running. The stop is `app.astop(run_id=..., wait=False)`
issued from another task, and the clock stops when the run's consumer task receives the terminal
event. Storage is in memory, so the numbers are the engine's own (a SQLite commit adds ~1 ms; see
`bench/checkpoint_cost.py`).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import date
from typing import Any

import anyio
from _common import machine, percentile, summary_ms, write_section

from tether import InMemoryCheckpointer, RunFinished, StateGraph
from tether.ids import new_id


def build(shape: str) -> Any:
    async def ticking(state: dict[str, Any]) -> Any:
        while True:
            await anyio.sleep(0.02)
            yield "tok "

    async def blocked(state: dict[str, Any]) -> Any:
        yield "started "
        await anyio.sleep(5)

    g = StateGraph()
    g.add_node("node", ticking if shape == "ticking" else blocked)
    g.set_entry_point("node")
    return g.compile(InMemoryCheckpointer())


async def measure(app: Any, concurrent: int, stops: int) -> list[float]:
    """Start `concurrent` runs; stop `stops` of them one by one; return the latencies."""
    seen: dict[str, float] = {}
    done: dict[str, anyio.Event] = {}

    async def consume(thread: str, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        stream = app.astream("go", thread_id=thread)
        started = False
        async for event in stream:
            if not started and event.type == "message_delta":
                started = True
                task_status.started(stream.run_id)
            if isinstance(event, RunFinished):
                seen[event.run_id] = time.perf_counter()
                done[event.run_id].set()

    latencies = []
    async with anyio.create_task_group() as tg:
        run_ids = []
        for _ in range(concurrent):
            run_id = await tg.start(consume, new_id())
            done[run_id] = anyio.Event()
            run_ids.append(run_id)
        order = random.sample(run_ids, min(stops, len(run_ids)))
        for run_id in order:
            await anyio.sleep(random.uniform(0, 0.02))  # land at a random phase of the tick
            start = time.perf_counter()
            await app.astop(run_id=run_id, wait=False)
            await done[run_id].wait()
            latencies.append(seen[run_id] - start)
        for run_id in run_ids:
            await app.astop(run_id=run_id, wait=False)
    return latencies


async def main(runs: int, concurrent: int, write: bool) -> None:
    load = os.getloadavg()[0]
    print(f"machine: {machine()}")
    rows = []
    for shape in ("ticking", "blocked"):
        app = build(shape)
        single = []
        for _ in range(runs):
            single += await measure(app, 1, 1)
        print(f"{shape:8s}  1 run        {summary_ms(single)}")
        many = await measure(app, concurrent, min(runs, concurrent))
        print(f"{shape:8s}  {concurrent} runs   {summary_ms(many)}")
        rows += [(shape, 1, single), (shape, concurrent, many)]
    if write:
        names = {"ticking": "ticking every 20 ms", "blocked": "blocked in a 5 s await"}
        table = "\n".join(
            f"| {names[shape]} | {n:,} | {statistics.median(v) * 1e3:.3f} ms | "
            f"{percentile(v, 99) * 1e3:.3f} ms | {max(v) * 1e3:.3f} ms |"
            for shape, n, v in rows
        )
        write_section(
            "bench/stop_latency.py",
            f"""<!-- bench/stop_latency.py -->
## Stop latency: `stop()` -> the consumer sees `run_finished` (`bench/stop_latency.py`)

- Date: {date.today()}. Command: `python bench/stop_latency.py --runs {runs} --concurrent {concurrent} --write`
- Machine: {machine()}; 1-minute load average {load:.1f} at the start
- The stop is `app.astop(run_id=..., wait=False)` from another task; the clock stops when the run's
  own consumer task receives the terminal event. In-memory storage. "ticking": a node that yields
  a token every 20 ms; "blocked": a node in a 5 s await. With {concurrent:,} runs, all stream at
  once and {min(runs, concurrent)} of them are stopped one by one at random moments while the
  others go on.

| Node | Concurrent runs | p50 | p99 | max |
|---|---:|---:|---:|---:|
{table}

Targets: p99 <= 2 ms for one run, <= 10 ms with 1,000 runs ticking (issue 12, row 4).
<!-- /bench/stop_latency.py -->
""",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    anyio.run(main, args.runs, args.concurrent, args.write)
