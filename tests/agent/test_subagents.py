"""Sub-agents (an agent as another agent's tool) and subgraphs (a compiled graph as a node).

Contracts: a child's events reach the parent's stream under their `path`; a child's result becomes
the parent's tool result (or node update); a stop of the parent stops the child at once, the child
keeps its partial answer `stopped` on its own thread, and the parent's transcript stays valid, the
sub-agent's call answered `cancelled` with what the child had produced.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.core.test_transcript import assert_valid_openai_transcript
from tests.graph._scenario import check_stop_record, check_terminal
from tether import END, Agent, InMemoryCheckpointer, Message, RunFinished, StateGraph
from tether.agent.subagent import STOPPED_SUBAGENT_RESULT
from tether.children import child_thread_id
from tether.errors import UserError
from tether.events import Event
from tether.testing import ScriptedModel, ToolCallStep, stream_forever

pytestmark = pytest.mark.anyio


def researcher(model: ScriptedModel) -> Agent:
    return Agent(
        model,
        name="researcher",
        description="Finds facts.",
        checkpointer=InMemoryCheckpointer(),
    )


def boss(child: Agent, *turns: Any) -> Agent:
    return Agent(
        ScriptedModel(*turns, default_reply="Next answer."),
        tools=[child.as_tool()],
        checkpointer=InMemoryCheckpointer(),
    )


async def collect(stream: Any) -> list[Event]:
    with anyio.fail_after(10):
        return [event async for event in stream]


async def test_agent_tool_streams_the_child_under_its_path_and_returns_its_answer() -> None:
    child = researcher(ScriptedModel(["Found ", "x."]))
    parent = boss(child, [ToolCallStep("researcher", {"input": "find x"})], "It is x.")
    events = await collect(parent.arun("what is x?", thread_id="t"))
    assert check_terminal(events).status == "completed"
    nested = [e for e in events if e.path]
    assert {e.path for e in nested} == {("researcher:call_0_0",)}
    deltas = [e.content for e in nested if e.type == "message_delta"]
    assert "".join(deltas) == "Found x."
    assert {e.node for e in nested} == {"model"}  # the child's own node names
    messages = await parent.aget_messages("t")
    result = next(m for m in messages if m.role == "tool")
    assert (result.content, result.status) == ("Found x.", "complete")
    assert messages[-1].content == "It is x."
    child_thread = child_thread_id("t", events[0].run_id, "researcher.call_0_0")
    child_messages = await child.aget_messages(child_thread)
    assert [m.content for m in child_messages] == ["find x", "Found x."]


async def test_stop_during_a_sub_agent_answers_its_call_cancelled_with_the_partial() -> None:
    child = researcher(ScriptedModel(["Half ", "an ", stream_forever("answer ")]))
    parent = boss(child, [ToolCallStep("researcher", {"input": "dig"})])
    events: list[Event] = []
    with anyio.fail_after(10):
        async for event in parent.arun("go", thread_id="t"):
            events.append(event)
            if event.path and event.type == "message_delta" and len(events) > 12:
                assert await parent.astop(thread_id="t", reason="enough", wait=False)
    final = check_terminal(events)
    assert (final.status, final.reason) == ("cancelled", "enough")
    streamed = "".join(e.content for e in events if e.path and e.type == "message_delta")

    child_thread = child_thread_id("t", final.run_id, "researcher.call_0_0")
    stopped = (await child.aget_messages(child_thread))[-1]
    assert (stopped.role, stopped.status) == ("assistant", "stopped")
    assert stopped.content.startswith(streamed)  # the child kept at least what was streamed
    child_run = (await child.alist_runs(thread_id=child_thread))[0]
    check_stop_record(child_run, mode="now")
    assert child_run.stop_reason == "enough"

    messages = await parent.aget_messages("t")
    assert_valid_openai_transcript(messages)
    result = messages[-1]
    assert (result.role, result.status) == ("tool", "cancelled")
    assert result.content == STOPPED_SUBAGENT_RESULT.format(name="researcher") + stopped.content
    assert result.metadata["thread_id"] == child_thread
    finished = [e for e in events if e.type == "tool_call_finished" and not e.path]
    assert [(e.status, e.content) for e in finished] == [("cancelled", result.content)]
    assert parent.registry.size() == 0 and child.registry.size() == 0
    after = await parent.ainvoke("and now?", thread_id="t")
    assert after["messages"][-1].content == "Next answer."


def test_as_tool_needs_a_name_and_a_description() -> None:
    model = ScriptedModel("x")
    with pytest.raises(UserError, match="needs a name"):
        Agent(model, checkpointer=InMemoryCheckpointer()).as_tool(description="d")
    with pytest.raises(UserError, match="needs a description"):
        Agent(model, name="a", checkpointer=InMemoryCheckpointer()).as_tool()
    spec = Agent(model, name="a", checkpointer=InMemoryCheckpointer()).as_tool(description="d").spec
    assert (spec.name, spec.description) == ("a", "d")
    assert spec.parameters["required"] == ["input"]


def graph_with(inner: Any) -> Any:
    async def after(state: dict[str, Any]) -> Message:
        return Message.assistant(f"after {len(state['messages'])}")

    graph = StateGraph()
    graph.add_node("inner", inner)
    graph.add_node("after", after)
    graph.set_entry_point("inner")
    graph.add_edge("inner", "after")
    graph.add_edge("after", END)
    return graph.compile(InMemoryCheckpointer())


async def test_subgraph_node_streams_under_its_name_and_updates_the_parent() -> None:
    parent = graph_with(researcher(ScriptedModel(["Deep ", "answer."])))
    events = await collect(parent.astream("question", thread_id="g"))
    assert check_terminal(events).status == "completed"
    nested = [e for e in events if e.path]
    assert nested and {e.path for e in nested} == {("inner",)}
    assert "".join(e.content for e in nested if e.type == "message_delta") == "Deep answer."
    values = (await parent.aget_state("g")).values
    assert [m.content for m in values["messages"]] == ["question", "Deep answer.", "after 2"]


async def test_stop_inside_a_subgraph_keeps_the_partial_in_child_and_parent() -> None:
    child = researcher(ScriptedModel(["Part ", stream_forever("more ")]))
    parent = graph_with(child)
    events: list[Event] = []
    with anyio.fail_after(10):
        async for event in parent.astream("question", thread_id="g"):
            events.append(event)
            if event.path and event.type == "message_delta" and len(events) > 8:
                assert await parent.astop(thread_id="g", wait=False)
    final = check_terminal(events)
    assert final.status == "cancelled"
    record = await parent.aget_run(final.run_id)
    assert record is not None
    check_stop_record(record, mode="now")
    child_thread = child_thread_id("g", final.run_id, "inner.1")
    child_last = (await child.aget_messages(child_thread))[-1]
    assert child_last.status == "stopped" and child_last.content.startswith("Part more ")
    parent_messages = (await parent.aget_state("g")).values["messages"]
    assert parent_messages[-1] == child_last  # the parent kept the child's partial too
    assert_valid_openai_transcript(parent_messages)


def test_nameless_compiled_graph_needs_a_node_name() -> None:
    nameless = Agent(ScriptedModel("x"), checkpointer=InMemoryCheckpointer())
    with pytest.raises(UserError, match="needs a name"):
        StateGraph().add_node(nameless)


async def test_a_failing_sub_agent_answers_its_call_as_an_error() -> None:
    child = researcher(ScriptedModel())  # no turns: the child's model call fails
    parent = boss(child, [ToolCallStep("researcher", {"input": "dig"})], "Sorry.")
    events = await collect(parent.arun("go", thread_id="t"))
    assert check_terminal(events).status == "completed"
    result = next(m for m in await parent.aget_messages("t") if m.role == "tool")
    assert result.metadata == {"error": True}
    assert result.content.startswith("Error: ") and "no turn left" in result.content


async def test_a_failing_subgraph_fails_the_parent_run() -> None:
    parent = graph_with(researcher(ScriptedModel()))
    events = await collect(parent.astream("question", thread_id="g"))
    final = check_terminal(events)
    assert final.status == "failed" and final.error is not None


async def test_protocol_streams_carry_only_the_parent_answer() -> None:
    pytest.importorskip("ag_ui")
    from tether.server.ag_ui import AGUIStream
    from tether.server.ai_sdk import UIMessageStream

    child = researcher(ScriptedModel(["Found ", "x."]))
    parent = boss(child, [ToolCallStep("researcher", {"input": "find x"})], "It is x.")
    events = await collect(parent.arun("what is x?", thread_id="t"))
    assert any(e.path for e in events)
    for stream in (UIMessageStream("t", "r"), AGUIStream("t", "r")):
        text = b"".join(chunk for event in events for chunk in stream.translate(event))
        assert b"It is x." in text
        assert text.count(b"Found ") == 1  # the tool's result only, never the child's deltas


def test_nested_children_stream_with_the_whole_path_through_the_sync_api() -> None:
    child = researcher(ScriptedModel(["Deep."]))
    middle = Agent(
        ScriptedModel([ToolCallStep("researcher", {"input": "dig"})], "Middle done."),
        name="middle",
        tools=[child.as_tool()],
        checkpointer=InMemoryCheckpointer(),
    )
    parent = graph_with(middle)
    events = list(parent.stream("question", thread_id="n"))
    assert check_terminal(events).status == "completed"
    paths = {e.path for e in events if e.type == "message_delta"}
    assert paths == {("inner",), ("inner", "researcher:call_0_0")}
    deep = [e for e in events if e.path == ("inner", "researcher:call_0_0")]
    assert [e.content for e in deep if e.type == "message_delta"] == ["Deep."]
    values = parent.get_state("n").values
    assert [m.content for m in values["messages"]][-2:] == ["Middle done.", "after 4"]


def asking_child(*, default_reply: str = "Confirmed.") -> tuple[Agent, list[Any]]:
    """A sub-agent whose first answer calls `confirm`, a tool that asks a person."""
    from tether import interrupt, tool

    answers: list[Any] = []

    @tool
    def confirm(what: str) -> str:
        """Ask a person to confirm."""
        answer = interrupt({"confirm": what})
        answers.append(answer)
        return str(answer)

    child = Agent(
        ScriptedModel(
            [ToolCallStep("confirm", {"what": "x"}, id="k1")], default_reply=default_reply
        ),
        tools=[confirm],
        name="researcher",
        description="Finds facts.",
        checkpointer=InMemoryCheckpointer(),
    )
    return child, answers


async def test_interrupt_inside_a_sub_agent_pauses_the_parent_and_the_answer_resumes_the_child() -> (
    None
):
    from tether import Command

    child, answers = asking_child()
    parent = boss(child, [ToolCallStep("researcher", {"input": "find x"}, id="c1")], "It is x.")
    events = await collect(parent.arun("what is x?", thread_id="t"))
    paused = check_terminal(events)
    assert paused.status == "interrupted" and paused.interrupt is not None
    assert paused.interrupt["value"] == {"confirm": "x"}
    assert paused.interrupt["path"] == ["researcher:c1"]
    assert paused.interrupt["node"] == "tools"
    state = await parent.aget_state("t")
    assert state.metadata["interrupt"]["id"] == paused.interrupt["id"]
    child_thread = child_thread_id("t", paused.run_id, "researcher.c1")
    assert (await child.aget_state(child_thread)).metadata["interrupt"]["value"] == {"confirm": "x"}
    assert answers == []

    events = await collect(parent.arun(Command(resume="yes"), thread_id="t"))
    assert check_terminal(events).status == "completed"
    assert answers == ["yes"]  # the child's tool got the answer, on the child's same thread
    assert [r.status for r in await child.alist_runs(child_thread)] == ["completed", "interrupted"]
    messages = await parent.aget_messages("t")
    assert_valid_openai_transcript(messages)
    [result] = [m for m in messages if m.role == "tool"]
    assert (result.content, result.status) == ("Confirmed.", "complete")
    assert messages[-1].content == "It is x."
    assert (await parent.aget_state("t")).metadata.get("interrupt") is None


async def test_a_child_asked_again_and_then_the_parent_asks_the_child_is_not_rerun() -> None:
    """A child that asks twice pauses the parent twice; once it ended, a later pause of the
    parent's own tool replays the child's result instead of running it again."""
    from tether import Command, interrupt, tool

    questions: list[Any] = []

    @tool
    def twice(what: str) -> str:
        """Asks two questions."""
        first = interrupt({"q": 1})
        second = interrupt({"q": 2})
        return f"{first}+{second}"

    child = Agent(
        ScriptedModel([ToolCallStep("twice", {"what": "x"}, id="k1")], default_reply="Both."),
        tools=[twice],
        name="researcher",
        description="Finds facts.",
        checkpointer=InMemoryCheckpointer(),
    )

    @tool
    def sign(name: str) -> str:
        """The parent's own question."""
        return f"signed {interrupt({'sign': name})}"

    parent = Agent(
        ScriptedModel(
            [
                ToolCallStep("researcher", {"input": "find x"}, id="c1"),
                ToolCallStep("sign", {"name": "ada"}, id="c2"),
            ],
            default_reply="All done.",
        ),
        tools=[child.as_tool(), sign],
        parallel_tool_calls=False,
        checkpointer=InMemoryCheckpointer(),
    )
    runs: list[RunFinished] = []
    for answer in (None, "a", "b", "ok"):
        stream = parent.arun("go" if answer is None else Command(resume=answer), thread_id="t")
        final = check_terminal(await collect(stream))
        runs.append(final)
        if final.interrupt is not None:
            questions.append((final.interrupt["value"], final.interrupt["path"]))
    assert [r.status for r in runs] == ["interrupted", "interrupted", "interrupted", "completed"]
    assert questions == [
        ({"q": 1}, ["researcher:c1"]),
        ({"q": 2}, ["researcher:c1"]),
        ({"sign": "ada"}, []),
    ]
    child_thread = child_thread_id("t", runs[0].run_id, "researcher.c1")
    assert len(await child.alist_runs(child_thread)) == 3  # asked, asked again, answered: no rerun
    tools = {m.tool_call_id: m.content for m in await parent.aget_messages("t") if m.role == "tool"}
    assert tools == {"c1": "Both.", "c2": "signed ok"}
    assert_valid_openai_transcript(await parent.aget_messages("t"))


async def test_interrupt_inside_a_subgraph_pauses_the_parent_graph_with_the_childs_path() -> None:
    from tether import Command, interrupt

    def ask(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [Message.assistant(f"hello {interrupt('your name?')}")]}

    inner = StateGraph()
    inner.add_node("ask", ask)
    inner.set_entry_point("ask")
    inner.set_finish_point("ask")
    outer = StateGraph()
    outer.add_node("inner", inner.compile(checkpointer=InMemoryCheckpointer()))
    outer.set_entry_point("inner")
    outer.set_finish_point("inner")
    app = outer.compile(checkpointer=InMemoryCheckpointer())
    with anyio.fail_after(10):
        paused = await app.ainvoke({"messages": [Message.user("hi")]}, thread_id="t")
        state = await app.aget_state("t")
        question = state.metadata["interrupt"]
        assert (question["value"], question["path"], state.next) == (
            "your name?",
            ["inner"],
            ("inner",),
        )
        assert paused["messages"][-1].content == "hi"
        values = await app.ainvoke(Command(resume="Ada"), thread_id="t")
    assert values["messages"][-1].content == "hello Ada"
    assert (await app.aget_state("t")).metadata.get("interrupt") is None
