"""The graph engine: edges, routers, fan-out, node kinds, context, limits, interrupts, history."""

from __future__ import annotations

import threading
from typing import Annotated, Any, TypedDict

import pytest

from tether import (
    END,
    START,
    CustomEvent,
    GraphRecursionError,
    InMemoryCheckpointer,
    Message,
    MessageDelta,
    MessageDeltaEvent,
    RunContext,
    RunFailedError,
    StateGraph,
    ToolCallDelta,
    UserError,
)

pytestmark = pytest.mark.anyio


def _append(left: list[str], right: list[str]) -> list[str]:
    return [*left, *right]


class Counter(TypedDict):
    count: int
    trail: Annotated[list[str], _append]


def counter_graph(limit: int = 25) -> Any:
    async def bump(state: Counter) -> dict[str, Any]:
        return {"count": state["count"] + 1, "trail": ["bump"]}

    g = StateGraph(Counter)
    g.add_node("bump", bump)
    g.add_edge(START, "bump")
    g.add_conditional_edges(
        "bump", lambda s: END if s["count"] >= 3 else "again", {"again": "bump", END: END}
    )
    return g.compile(InMemoryCheckpointer(), recursion_limit=limit)


async def test_conditional_loop_runs_until_the_router_says_end() -> None:
    result = await counter_graph().ainvoke({"count": 0})
    assert result == {"count": 3, "trail": ["bump", "bump", "bump"]}


async def test_recursion_limit_fails_the_run_with_a_clear_error() -> None:
    with pytest.raises(GraphRecursionError, match="recursion_limit=2"):
        await counter_graph().ainvoke({"count": 0}, config={"recursion_limit": 2})


async def test_fan_out_runs_branches_in_parallel_and_joins_their_updates() -> None:
    both_started = threading.Barrier(2, timeout=10)

    def left(state: Counter) -> dict[str, Any]:
        both_started.wait()  # deadlocks unless both branches run at the same time
        return {"trail": ["left"]}

    def right(state: Counter) -> dict[str, Any]:
        both_started.wait()
        return {"trail": ["right"]}

    g = StateGraph(Counter)
    g.add_node("left", left)
    g.add_node("right", right)
    g.add_edge(START, "left")
    g.add_edge(START, "right")
    result = await g.compile(InMemoryCheckpointer()).ainvoke({"count": 0})
    assert result["trail"] == ["left", "right"]


async def test_two_branches_writing_one_plain_key_is_an_error() -> None:
    g = StateGraph(Counter)
    g.add_node("a", lambda s: {"count": 1})
    g.add_node("b", lambda s: {"count": 2})
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    with pytest.raises(UserError, match="both wrote 'count'"):
        await g.compile(InMemoryCheckpointer()).ainvoke({"count": 0})


async def test_node_kinds_and_signatures() -> None:
    seen: dict[str, Any] = {}

    async def agen(state: dict[str, Any], ctx: RunContext) -> Any:
        seen["ctx"] = ctx
        ctx.emit({"progress": 1})
        yield "Hel"
        yield "lo"

    def sync_node(state: dict[str, Any], config: dict[str, Any]) -> Message:
        seen["config"] = config
        return Message.assistant("from a thread")

    def sync_gen(state: dict[str, Any]) -> Any:
        yield Message.assistant("gen 1")
        yield Message.assistant("gen 2")

    g = StateGraph()
    g.add_node("agen", agen)
    g.add_node("sync", sync_node)
    g.add_node(sync_gen)
    g.set_entry_point("agen")
    g.add_edge("agen", "sync")
    g.add_edge("sync", "sync_gen")
    app = g.compile(InMemoryCheckpointer())
    events = [
        e
        async for e in app.astream("hi", thread_id="k", config={"recursion_limit": 9, "user": "u1"})
    ]
    assert [m.content for m in (await app.aget_state("k")).values["messages"]] == [
        "hi",
        "Hello",
        "from a thread",
        "gen 1",
        "gen 2",
    ]
    assert [e.content for e in events if isinstance(e, MessageDeltaEvent)] == ["Hel", "lo"]
    assert [e.data for e in events if isinstance(e, CustomEvent)] == [{"progress": 1}]
    assert (
        seen["ctx"].thread_id == "k"
        and seen["ctx"].node == "agen"
        and not seen["ctx"].stop_requested
    )
    assert seen["config"]["user"] == "u1" and seen["config"]["recursion_limit"] == 9


async def test_a_str_extends_the_message_the_node_call_is_streaming() -> None:
    async def node(state: dict[str, Any]) -> Any:
        yield "new "  # no message named yet: a new one
        yield MessageDelta(id="named", content="a")
        yield "b"  # extends "named"
        call = ToolCallDelta(index=0, id="c1", name="f", arguments="{}")
        yield MessageDelta(id="tools", tool_calls=(call,))  # not text: "named" stays the one
        yield "c"
        yield Message.assistant("replaced", id="named")  # a whole message replaces its deltas
        yield "d"  # so this starts a new message

    g = StateGraph()
    g.add_node("node", node)
    g.set_entry_point("node")
    app = g.compile(InMemoryCheckpointer())
    events = [e async for e in app.astream("hi", thread_id="t")]
    deltas = [(e.message_id, e.content) for e in events if isinstance(e, MessageDeltaEvent)]
    first, last = deltas[0][0], deltas[-1][0]
    assert deltas == [
        (first, "new "),
        ("named", "a"),
        ("named", "b"),
        ("tools", ""),
        ("named", "c"),
        (last, "d"),
    ]
    assert len({first, last, "named"}) == 3
    messages = {m.id: m.content for m in (await app.aget_state("t")).values["messages"][1:]}
    assert messages == {first: "new ", "named": "replaced", "tools": "", last: "d"}


async def test_node_error_fails_the_run_and_names_the_node() -> None:
    async def boom(state: dict[str, Any]) -> None:
        raise KeyError("missing")

    g = StateGraph()
    g.add_node("boom", boom)
    g.set_entry_point("boom")
    app = g.compile(InMemoryCheckpointer())
    with pytest.raises(RunFailedError, match="KeyError") as info:
        await app.ainvoke("x", thread_id="e")
    assert "in node 'boom'" in "".join(getattr(info.value.__cause__, "__notes__", []))
    [run] = await app.alist_runs("e")
    assert run.status == "failed" and "missing" in (run.error or "")


def test_bad_graphs_are_refused_at_build_time() -> None:
    g = StateGraph()
    with pytest.raises(UserError, match="no entry point"):
        g.compile()
    g.add_node("a", lambda s: None)
    with pytest.raises(UserError, match="already exists"):
        g.add_node("a", lambda s: None)
    g.add_edge("a", "ghost")
    g.set_entry_point("a")
    with pytest.raises(UserError, match="'ghost', which is not a node"):
        g.compile()


async def test_interrupt_after_pauses_and_a_run_without_input_resumes() -> None:
    async def one(state: dict[str, Any]) -> Message:
        return Message.assistant("one")

    async def two(state: dict[str, Any]) -> Message:
        return Message.assistant("two")

    g = StateGraph()
    g.add_node("one", one)
    g.add_node("two", two)
    g.set_entry_point("one")
    g.add_edge("one", "two")
    app = g.compile(InMemoryCheckpointer(), interrupt_after=["one"])
    events = [e async for e in app.astream("go", thread_id="i")]
    assert events[-1].status == "interrupted"  # type: ignore[union-attr]
    snap = await app.aget_state("i")
    assert snap.next == ("two",)
    await app.ainvoke(None, thread_id="i")
    assert [m.content for m in (await app.aget_state("i")).values["messages"]] == [
        "go",
        "one",
        "two",
    ]


async def test_history_is_newest_first_and_a_run_can_fork_from_an_old_checkpoint() -> None:
    g = StateGraph()
    g.add_node("echo", lambda s: Message.assistant("echo: " + s["messages"][-1].content))
    g.set_entry_point("echo")
    app = g.compile(InMemoryCheckpointer())
    await app.ainvoke("first", thread_id="h")
    await app.ainvoke("second", thread_id="h")
    history = await app.aget_state_history("h")
    assert [s.step for s in history] == sorted((s.step for s in history), reverse=True)
    after_first = next(s for s in history if s.values["messages"][-1].content == "echo: first")
    await app.ainvoke("other", thread_id="h", checkpoint_id=after_first.checkpoint_id)
    contents = [m.content for m in (await app.aget_state("h")).values["messages"]]
    assert contents == ["first", "echo: first", "other", "echo: other"]
