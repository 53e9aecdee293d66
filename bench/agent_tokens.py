"""Agent token path vs graph token path: the cost of one model delta becoming a `message_delta`.

    python bench/agent_tokens.py [--items 50000] [--rounds 7] [--write]

Agent path: an `Agent` whose model streams `--items` `TextDelta("tok ")` from a tight async
generator (no I/O), read with `async for` over `agent.astream(...)`. Graph path: a one-node graph
whose async-generator node yields the same strings. Baseline: a bare async generator. All three
run on one loop with in-memory storage, alternating, medians of `--rounds`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import anyio
from _common import machine, write_section

from tether import Agent, InMemoryCheckpointer, StateGraph
from tether.messages import Message
from tether.models.base import Model, ModelDelta, ModelSettings, TextDelta, ToolSpec


class FastModel(Model):
    """Streams `items` text deltas as fast as the consumer takes them."""

    name = "fast"

    def __init__(self, items: int) -> None:
        self.items = items

    @asynccontextmanager
    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[AsyncIterator[ModelDelta]]:
        async def deltas() -> AsyncIterator[ModelDelta]:
            delta = TextDelta("tok ")
            for _ in range(self.items):
                yield delta

        yield deltas()


async def bare(n: int) -> float:
    async def tokens() -> Any:
        for _ in range(n):
            yield "tok "

    start = time.perf_counter()
    async for _ in tokens():
        pass
    return time.perf_counter() - start


async def graph(n: int) -> float:
    async def node(state: dict[str, Any]) -> Any:
        for _ in range(n):
            yield "tok "

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


async def agent(n: int) -> float:
    app = Agent(FastModel(n), checkpointer=InMemoryCheckpointer())
    start = time.perf_counter()
    count = 0
    async for event in app.astream("go"):
        count += event.type == "message_delta"
    assert count == n, count
    return time.perf_counter() - start


async def main(items: int, rounds: int, write: bool) -> None:
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {"bare": [], "graph": [], "agent": []}
    for _ in range(rounds):
        times["bare"].append(await bare(items))
        times["graph"].append(await graph(items))
        times["agent"].append(await agent(items))
    med = {k: statistics.median(v) for k, v in times.items()}
    us = {k: v / items * 1e6 for k, v in med.items()}
    ratio = med["agent"] / med["graph"]
    print(f"machine: {machine()}; load {load:.1f}")
    for k in med:
        print(f"{k:6} {items / med[k]:12,.0f} tokens/s  {us[k]:.3f} µs/token")
    print(f"agent / graph: {ratio:.2f}x")
    if write:
        write_section(
            "bench/agent_tokens.py",
            f"""<!-- bench/agent_tokens.py -->
## Agent token path vs graph token path (`bench/agent_tokens.py`)

- Date: {date.today()}. Command: `python bench/agent_tokens.py --items {items} --rounds {rounds} --write`
- Machine: {machine()}; 1-minute load average {load:.1f} at the start (shared with other work)
- {items:,} tokens per run, medians of {rounds} alternating rounds, in-memory storage, one loop.

| Path | Tokens/s | µs per token | vs graph |
|---|---:|---:|---:|
| bare async generator | {items / med["bare"]:,.0f} | {us["bare"]:.3f} | {med["bare"] / med["graph"]:.2f}x |
| graph: async-generator node -> `message_delta` | {items / med["graph"]:,.0f} | {us["graph"]:.3f} | 1.00x |
| agent: model `TextDelta` -> `message_delta` | {items / med["agent"]:,.0f} | {us["agent"]:.3f} | {ratio:.2f}x |
<!-- /bench/agent_tokens.py -->
""",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    anyio.run(main, args.items, args.rounds, args.write)
