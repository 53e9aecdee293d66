"""Stream throughput: events/s through the engine vs a bare async generator, in one process.

    python bench/stream_throughput.py [--items 100000] [--rounds 7]

The engine side is a one-node graph whose async-generator node yields `--items` text tokens, read
with `async for` over `app.astream(...)` (each token is a `message_delta` event; the run adds a
handful of other events). The baseline iterates a bare async generator that yields the same strings.
Both run on one event loop; the ratio of their medians is the engine's cost per event. Storage is in
memory and commits once per step, as with any backend.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import anyio
from _common import machine

from tether import InMemoryCheckpointer, StateGraph


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


async def engine(n: int) -> float:
    async def node(state: dict[str, Any]) -> Any:
        async for token in tokens(n):
            yield token

    g = StateGraph()
    g.add_node("node", node)
    g.set_entry_point("node")
    app = g.compile(InMemoryCheckpointer())
    start = time.perf_counter()
    count = 0
    async for event in app.astream("go"):
        count += event.type == "message_delta"
    assert count == n
    return time.perf_counter() - start


async def main(items: int, rounds: int) -> None:
    print(f"machine: {machine()}")
    base, eng = [], []
    for _ in range(rounds):
        base.append(await bare(items))
        eng.append(await engine(items))
    b, e = statistics.median(base), statistics.median(eng)
    print(f"bare async generator: {items / b:12,.0f} items/s  ({b / items * 1e6:.3f} µs/item)")
    print(f"tether astream:       {items / e:12,.0f} events/s ({e / items * 1e6:.3f} µs/event)")
    print(f"ratio (slower by):    {e / b:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    anyio.run(main, args.items, args.rounds)
