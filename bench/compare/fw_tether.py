"""tether side of `bench/compare/` (see `run.py`). Stop API: `app.astop(thread_id=...)`, documented."""

from __future__ import annotations

import os
import tempfile
import time
from importlib.metadata import version
from typing import Any

import anyio
from _scenarios import (
    BLOCK,
    SETTLE,
    TICK,
    TICKS_BEFORE_STOP,
    TOOL_SLEEP,
    Counter,
    latency_summary,
    report,
    throughput,
    wait_for,
)

from tether import Agent, InMemoryCheckpointer, StateGraph
from tether.ids import new_id
from tether.storage.sqlite import SqliteCheckpointer
from tether.testing import ScriptedModel, ToolCallStep


def _graph(counter: Counter, shape: str, limit: list[int]) -> Any:
    async def ticking(state: dict[str, Any]) -> Any:
        for _ in range(limit[0]):
            await anyio.sleep(TICK)
            counter.tick()
            yield "tok "

    async def blocked(state: dict[str, Any]) -> Any:
        yield "started "
        if limit[0] < 10**9:  # the run after the stop: end at once
            return
        counter.tick()  # entered the await
        await anyio.sleep(BLOCK)
        counter.tick()  # work after the await: must not happen after a stop

    g = StateGraph()
    g.add_node("node", ticking if shape == "ticking" else blocked)
    g.set_entry_point("node")
    return g.compile(InMemoryCheckpointer())


async def stop_scenario(shape: str, rounds: int) -> dict[str, Any]:
    latencies, after = [], 0
    kept: dict[str, Any] = {}
    for i in range(rounds):
        counter, limit = Counter(), [10**9]
        app = _graph(counter, shape, limit)
        thread = new_id()
        stream = app.astream("go", thread_id=thread)
        seen = [0]
        finished = anyio.Event()

        async def consume(
            stream: Any = stream, seen: list[int] = seen, done: Any = finished
        ) -> None:
            async for event in stream:
                seen[0] += event.type == "message_delta"
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            want = TICKS_BEFORE_STOP if shape == "ticking" else 1
            await wait_for(lambda c=counter, w=want: c.total >= w)
            counter.stop()
            start = time.perf_counter()
            await app.astop(thread_id=thread, wait=False)
            await finished.wait()
            latencies.append(time.perf_counter() - start)
        await anyio.sleep(SETTLE if shape == "ticking" else BLOCK + SETTLE)
        after += counter.after_stop
        if i == 0:
            state = await app.aget_state(thread)
            last = state.values["messages"][-1]
            kept["partial_saved"] = last.role == "assistant" and bool(last.content)
            kept["marked"] = getattr(last, "status", None)
            limit[0] = 2
            values = await app.ainvoke("again", thread_id=thread)
            expected = "tok tok " if shape == "ticking" else "started "
            kept["next_run_ok"] = values["messages"][-1].content == expected
    return {**latency_summary(latencies), "work_after_stop": after, **kept}


async def tools_scenario() -> dict[str, Any]:
    done: list[str] = []
    started = [0]

    async def quick() -> str:
        done.append("quick")
        return "quick done"

    async def slow_a() -> str:
        started[0] += 1
        await anyio.sleep(TOOL_SLEEP)
        done.append("slow_a")
        return "a done"

    async def slow_b() -> str:
        started[0] += 1
        await anyio.sleep(TOOL_SLEEP)
        done.append("slow_b")
        return "b done"

    model = ScriptedModel(
        [ToolCallStep("quick"), ToolCallStep("slow_a"), ToolCallStep("slow_b")],
        "the answer after the stop",
    )
    agent = Agent(model, tools=[quick, slow_a, slow_b], checkpointer=InMemoryCheckpointer())
    thread = new_id()
    stream = agent.astream("use the tools", thread_id=thread)
    finished = anyio.Event()

    async def consume() -> None:
        async for _ in stream:
            pass
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await wait_for(lambda: started[0] == 2)
        before = len(done)
        start = time.perf_counter()
        await agent.astop(thread_id=thread, wait=False)
        await finished.wait()
        latency = time.perf_counter() - start
    await anyio.sleep(TOOL_SLEEP + SETTLE)
    messages = (await agent.aget_state(thread)).values["messages"]
    calls = {c.id for m in messages if m.role == "assistant" for c in m.tool_calls}
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    values = await agent.ainvoke("go on", thread_id=thread)
    return {
        "stop_ms": latency * 1e3,
        "tools_finished_after_stop": len(done) - before,
        "every_call_answered": calls <= answered,
        "next_turn_ok": values["messages"][-1].content == "the answer after the stop",
    }


async def stream_tether(checkpointer: Any) -> Any:
    async def run(n: int) -> int:
        async def tokens() -> Any:
            for _ in range(n):
                yield "tok "

        async def node(state: dict[str, Any]) -> Any:
            async for token in tokens():
                yield token

        g = StateGraph()
        g.add_node("node", node)
        g.set_entry_point("node")
        app = g.compile(checkpointer())
        count = 0
        async for event in app.astream("go"):
            count += event.type == "message_delta"
        return count

    return run


async def main() -> None:
    memory = InMemoryCheckpointer()
    sqlite = SqliteCheckpointer(os.path.join(tempfile.mkdtemp(), "compare.db"))
    results = {
        "stop_ticking": await stop_scenario("ticking", 10),
        "stop_blocked": await stop_scenario("blocked", 5),
        "tools": await tools_scenario(),
        "throughput": await throughput(await stream_tether(lambda: memory)),
        "throughput_durable": await throughput(await stream_tether(lambda: sqlite)),
    }
    report("tether", version("tether"), "app.astop(thread_id=...) (documented)", results)


if __name__ == "__main__":
    anyio.run(main)
