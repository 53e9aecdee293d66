"""Benchmark a flow's runtime stream against the graph engine's stream, in one process.

Each round streams `--items` items end to end, from the first iteration to the run's end:
1. graph: a `StateGraph` node, an async generator, yields `"tok "` `--items` times; each becomes a
   `message_delta` event (folded into one assistant message), read with `app.astream()`;
2. flow, runtime stream: a flow handler calls `data.put_into_stream("tok ")` `--items` times; each
   becomes a `custom` event, read with `flow.aget_runtime_stream()` (items only);
3. flow, typed events: the same flow read with `flow.astream()` (every event);
4. flow, sync runtime stream: `flow.get_runtime_stream()` iterated in a plain `for` loop in another
   thread, as seed 003 does; the run executes on tether's background loop.

Both producers give the loop one turn every 32 items, as the graph engine does for generators.
Rounds alternate between the four, so drift hits all alike; the report gives the medians, in
items per second, and the ratios flow / graph (the target is >= 0.5: within 2x of the graph).
Storage is in memory for all.

Usage (from the repository root):

    python bench/flow_throughput.py                # 20,000 items, 15 rounds
    python bench/flow_throughput.py --items 50000 --rounds 25
    python bench/flow_throughput.py --write        # also updates BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from _common import command_line, write_section

from tether import InMemoryCheckpointer, RunFinished, StateGraph
from tether.flow import Flow, FlowData

SECTION = "bench/flow_throughput.py"
YIELD_EVERY = 32  # items between two turns of the loop, as in graph/nodes.py


def build_graph(items: int) -> Any:
    async def talk(state: dict[str, Any]) -> AsyncIterator[str]:
        for _ in range(items):
            yield "tok "

    graph = StateGraph()
    graph.add_node("talk", talk)
    graph.set_entry_point("talk")
    return graph.compile(checkpointer=InMemoryCheckpointer())


def build_flow(items: int) -> Flow:
    async def talk(data: FlowData) -> None:
        for i in range(items):
            data.put_into_stream("tok ")
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await anyio.lowlevel.checkpoint()

    flow = Flow(checkpointer=InMemoryCheckpointer())
    flow.to(talk)
    return flow


async def time_graph(items: int) -> float:
    app = build_graph(items)
    count = 0
    start = time.perf_counter()
    async for event in app.astream("go"):
        count += event.type == "message_delta"
        if isinstance(event, RunFinished):
            assert event.status == "completed", event
    elapsed = time.perf_counter() - start
    assert count == items, count
    return elapsed


async def time_flow_runtime_stream(items: int) -> float:
    flow = build_flow(items)
    count = 0
    start = time.perf_counter()
    stream = flow.aget_runtime_stream("go")
    async for _ in stream:
        count += 1
    elapsed = time.perf_counter() - start
    assert count == items, count
    assert stream.finished is not None
    assert stream.finished.status == "completed"
    return elapsed


async def time_flow_events(items: int) -> float:
    flow = build_flow(items)
    count = 0
    start = time.perf_counter()
    async for event in flow.astream("go"):
        count += event.type == "custom"
        if isinstance(event, RunFinished):
            assert event.status == "completed", event
    elapsed = time.perf_counter() - start
    assert count == items, count
    return elapsed


def _sync_runtime_stream(items: int) -> float:
    flow = build_flow(items)
    count = 0
    start = time.perf_counter()
    stream = flow.get_runtime_stream("go")
    for _ in stream:
        count += 1
    elapsed = time.perf_counter() - start
    assert count == items, count
    return elapsed


async def time_flow_sync_runtime_stream(items: int) -> float:
    # Seed 003's way: a plain `for` loop in a thread; the run executes on tether's loop thread.
    return await anyio.to_thread.run_sync(_sync_runtime_stream, items)


CASES: dict[str, Callable[[int], Awaitable[float]]] = {
    "graph": time_graph,
    "flow_runtime_stream": time_flow_runtime_stream,
    "flow_events": time_flow_events,
    "flow_sync_runtime_stream": time_flow_sync_runtime_stream,
}


async def run(items: int, rounds: int) -> dict[str, list[float]]:
    for case in CASES.values():  # warm up imports, the host task group, caches
        await case(min(items, 1000))
    rates: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, case in CASES.items():
            rates[name].append(items / await case(items))
    return rates


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc), {cpu}, Python {platform.python_version()}"


def report(rates: dict[str, list[float]], items: int, rounds: int, command: str) -> str:
    med = {name: statistics.median(values) for name, values in rates.items()}
    graph = med["graph"]
    date = datetime.date.today().isoformat()
    return f"""<!-- {SECTION} -->
## Flow runtime stream vs graph stream: items per second (`{SECTION}`)

- Machine: {machine()}
- Date: {date}
- Command: `{command}`
- Setup: {items:,} items per run, {rounds} rounds (alternating), medians; in-memory storage;
  one process (the sync case runs on tether's background loop); time from the first iteration to
  the end of the stream.

| Stream | Median items/s | vs graph |
|---|---:|---:|
| graph: async-generator node, `astream()` (`message_delta` events) | {graph:,.0f} | 1.00 |
| flow: `put_into_stream`, `aget_runtime_stream()` (items) | {med["flow_runtime_stream"]:,.0f} | {med["flow_runtime_stream"] / graph:.2f} |
| flow: `put_into_stream`, `astream()` (`custom` events) | {med["flow_events"]:,.0f} | {med["flow_events"] / graph:.2f} |
| flow: `put_into_stream`, sync `get_runtime_stream()` from another thread | {med["flow_sync_runtime_stream"]:,.0f} | {med["flow_sync_runtime_stream"] / graph:.2f} |

Target: a flow's runtime stream within 2x of the graph engine (ratio >= 0.50).
<!-- /{SECTION} -->
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    rates = anyio.run(run, args.items, args.rounds)
    text = report(rates, args.items, args.rounds, command_line())
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
