"""What every framework script of `bench/compare/` measures, and how it reports it (stdlib only).

Each `fw_<name>.py` runs in its own venv, implements the four scenarios with its framework's own
API, and prints one JSON object (`report()`); `run.py` collects them into one table. The numbers
of one script are comparable with another's because all of them use these constants and helpers.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

TICK = 0.02  # the ticking node yields a token every 20 ms
TICKS_BEFORE_STOP = 5  # the stop comes after this many tokens
BLOCK = 1.5  # the blocked node awaits this long
TOOL_SLEEP = 1.0  # the two slow tools of the three-tool scenario sleep this long
SETTLE = 0.3  # after a stop, how long to keep watching for work that still happens
THROUGHPUT_ITEMS = 20_000
THROUGHPUT_ROUNDS = 5


class Counter:
    """Counts work done by user code, and how much of it came after the stop."""

    def __init__(self) -> None:
        self.total = 0
        self.stopped_at: int | None = None  # `total` when the stop was called

    def tick(self) -> None:
        self.total += 1

    def stop(self) -> None:
        self.stopped_at = self.total

    @property
    def after_stop(self) -> int:
        return 0 if self.stopped_at is None else self.total - self.stopped_at


async def bare(n: int) -> float:
    """Seconds to iterate a bare async generator of `n` strings: the throughput baseline."""

    async def tokens() -> Any:
        for _ in range(n):
            yield "tok "

    start = time.perf_counter()
    count = 0
    async for _ in tokens():
        count += 1
    assert count == n
    return time.perf_counter() - start


async def throughput(stream: Callable[[int], Awaitable[int]]) -> dict[str, Any]:
    """Median seconds of `stream(n)` (which must return how many tokens it delivered) against
    the bare generator, alternating rounds."""
    n = THROUGHPUT_ITEMS
    base, tried = [], []
    for _ in range(THROUGHPUT_ROUNDS):
        base.append(await bare(n))
        start = time.perf_counter()
        got = await stream(n)
        tried.append(time.perf_counter() - start)
        assert got == n, f"delivered {got} of {n} tokens"
    b, t = statistics.median(base), statistics.median(tried)
    return {"items_per_s": n / t, "ratio": t / b, "us_per_item": t / n * 1e6}


def latency_summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": statistics.median(ordered) * 1e3,
        "max_ms": ordered[-1] * 1e3,
        "n": len(ordered),
    }


def report(framework: str, version: str, stop_api: str, results: dict[str, Any]) -> None:
    json.dump(
        {"framework": framework, "version": version, "stop_api": stop_api, "results": results},
        sys.stdout,
    )
    sys.stdout.write("\n")


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `predicate` on the loop (benchmark plumbing only, never a test sync point)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the framework never reached the expected point")
        await asyncio.sleep(0.001)
