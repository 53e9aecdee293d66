"""LangGraph side of `bench/compare/` (see `run.py`).

Stop API: the LangGraph library has no in-process stop call (`runs.cancel` belongs to the
LangGraph Platform server), so the idiomatic best is used: `task.cancel()` on the asyncio task that
consumes `graph.astream(...)`. Tokens stream with `get_stream_writer()` (`stream_mode="custom"`),
the store is `InMemorySaver`, tools run in a `ToolNode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from importlib.metadata import version
from typing import Any

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
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition


def _config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def _graph(counter: Counter, shape: str, limit: list[int]) -> Any:
    async def ticking(state: MessagesState) -> dict[str, Any]:
        writer = get_stream_writer()
        text = ""
        for _ in range(limit[0]):
            await asyncio.sleep(TICK)
            counter.tick()
            writer("tok ")
            text += "tok "
        return {"messages": [AIMessage(text)]}

    async def blocked(state: MessagesState) -> dict[str, Any]:
        get_stream_writer()("started ")
        if limit[0] < 10**9:  # the run after the stop: end at once
            return {"messages": [AIMessage("started ")]}
        counter.tick()
        await asyncio.sleep(BLOCK)
        counter.tick()  # work after the await
        return {"messages": [AIMessage("started ")]}

    g = StateGraph(MessagesState)
    g.add_node("node", ticking if shape == "ticking" else blocked)
    g.add_edge(START, "node")
    g.add_edge("node", END)
    return g.compile(checkpointer=InMemorySaver())


async def _consume(graph: Any, inp: Any, config: dict[str, Any]) -> int:
    count = 0
    async for _ in graph.astream(inp, config, stream_mode="custom"):
        count += 1
    return count


async def stop_scenario(shape: str, rounds: int) -> dict[str, Any]:
    latencies, after = [], 0
    kept: dict[str, Any] = {}
    for i in range(rounds):
        counter, limit = Counter(), [10**9]
        graph = _graph(counter, shape, limit)
        config = _config(f"t{i}")
        task = asyncio.ensure_future(  # noqa: TID251  # LangGraph stops by task.cancel()
            _consume(graph, {"messages": [HumanMessage("go")]}, config)
        )
        want = TICKS_BEFORE_STOP if shape == "ticking" else 1
        await wait_for(lambda c=counter, w=want: c.total >= w)
        counter.stop()
        start = time.perf_counter()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(SETTLE if shape == "ticking" else BLOCK + SETTLE)
        after += counter.after_stop
        if i == 0:
            messages = (await graph.aget_state(config)).values.get("messages", [])
            last = messages[-1] if messages else None
            kept["partial_saved"] = isinstance(last, AIMessage) and bool(last.content)
            kept["marked"] = None
            limit[0] = 2
            values = await graph.ainvoke({"messages": [HumanMessage("again")]}, config)
            expected = "tok tok " if shape == "ticking" else "started "
            kept["next_run_ok"] = values["messages"][-1].content == expected
    return {**latency_summary(latencies), "work_after_stop": after, **kept}


async def tools_scenario() -> dict[str, Any]:
    done: list[str] = []
    started = [0]

    @tool
    async def quick() -> str:
        """A tool that answers at once."""
        done.append("quick")
        return "quick done"

    @tool
    async def slow_a() -> str:
        """A slow tool."""
        started[0] += 1
        await asyncio.sleep(TOOL_SLEEP)
        done.append("slow_a")
        return "a done"

    @tool
    async def slow_b() -> str:
        """Another slow tool."""
        started[0] += 1
        await asyncio.sleep(TOOL_SLEEP)
        done.append("slow_b")
        return "b done"

    async def agent(state: MessagesState) -> dict[str, Any]:  # a scripted model
        last = state["messages"][-1]
        if isinstance(last, HumanMessage) and last.content == "use the tools":
            calls = [
                {"name": n, "args": {}, "id": f"call_{n}"} for n in ("quick", "slow_a", "slow_b")
            ]
            return {"messages": [AIMessage("", tool_calls=calls)]}
        if isinstance(last, ToolMessage):
            return {"messages": [AIMessage("the tools answered")]}
        return {"messages": [AIMessage("the answer after the stop")]}

    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode([quick, slow_a, slow_b]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    graph = g.compile(checkpointer=InMemorySaver())
    config = _config("tools")
    task = asyncio.ensure_future(  # noqa: TID251  # LangGraph stops by task.cancel()
        _consume(graph, {"messages": [HumanMessage("use the tools")]}, config)
    )
    await wait_for(lambda: started[0] == 2)
    before = len(done)
    start = time.perf_counter()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    latency = time.perf_counter() - start
    await asyncio.sleep(TOOL_SLEEP + SETTLE)
    messages = (await graph.aget_state(config)).values["messages"]
    calls = {c["id"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    values = await graph.ainvoke({"messages": [HumanMessage("go on")]}, config)
    return {
        "stop_ms": latency * 1e3,
        "tools_finished_after_stop": len(done) - before,
        "every_call_answered": calls <= answered,
        "next_turn_ok": values["messages"][-1].content == "the answer after the stop",
    }


async def stream_langgraph(n: int) -> int:
    async def tokens() -> Any:
        for _ in range(n):
            yield "tok "

    async def node(state: MessagesState) -> dict[str, Any]:
        writer = get_stream_writer()
        async for token in tokens():
            writer(token)
        return {"messages": [AIMessage("done")]}

    g = StateGraph(MessagesState)
    g.add_node("node", node)
    g.add_edge(START, "node")
    g.add_edge("node", END)
    graph = g.compile(checkpointer=InMemorySaver())
    return await _consume(graph, {"messages": [HumanMessage("go")]}, _config("s"))


async def main() -> None:
    results = {
        "stop_ticking": await stop_scenario("ticking", 10),
        "stop_blocked": await stop_scenario("blocked", 5),
        "tools": await tools_scenario(),
        "throughput": await throughput(stream_langgraph),
    }
    report(
        "LangGraph",
        version("langgraph"),
        "task.cancel() on the consuming task (no in-process stop API)",
        results,
    )


if __name__ == "__main__":
    asyncio.run(main())
