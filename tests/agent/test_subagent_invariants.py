"""The stop contract through child runs, by invariant, at random stop points (hypothesis).

A sub-agent (an agent tool) and a subgraph node each run a child agent whose answer streams text,
calls its own tool (which blocks until released), then answers again. The parent is stopped after a
random number of its events (children's events included) with a random mode. Afterwards: S1 for the
parent; every child run has ended; a child was cancelled only by its parent's `now`/`rollback` stop,
and then with that mode, reason and requester; the parent's and the child's transcripts are valid;
with `now` the parent kept what the child had produced (the sub-agent's call answered `cancelled`
with the child's partial answer; the subgraph's partial messages merged into the parent's state);
`rollback` restores the parent; no registry entry is left; the parent takes a new message at once.
"""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.test_transcript import assert_valid_openai_transcript
from tests.graph._scenario import check_stop_record, check_terminal
from tether import END, Agent, InMemoryCheckpointer, Message, RunFinished, StateGraph, tool
from tether.agent.subagent import STOPPED_SUBAGENT_RESULT
from tether.app import App
from tether.children import child_thread_id
from tether.events import Event
from tether.run import RunRecord
from tether.testing import ScriptedModel, ToolCallStep

MODES = st.sampled_from(["now", "after_step", "rollback"])


def child_agent(release: anyio.Event) -> Agent:
    @tool
    async def dig(q: str) -> str:
        """Waits until released."""
        await release.wait()
        return f"dug {q}"

    model = ScriptedModel(
        ["Let ", "me ", "dig. ", ToolCallStep("dig", {"q": "deep"})],
        ["Found ", "it ", "deep ", "down."],
        default_reply="Again.",
    )
    return Agent(
        model,
        tools=[dig],
        name="digger",
        description="Digs.",
        checkpointer=InMemoryCheckpointer(),
    )


async def drive(app: App, thread_id: str, stop_after: int, mode: str, release: anyio.Event) -> Any:
    """Run `app` on a new message and stop it after `stop_after` events; returns what happened."""
    events: list[Event] = []
    accepted = None
    with anyio.fail_after(20):
        async for event in app.astream("go", thread_id=thread_id):
            events.append(event)
            if len(events) == stop_after and not isinstance(event, RunFinished):
                accepted = await app.astop(thread_id=thread_id, mode=mode, reason="r", wait=False)
                release.set()
            if event.type == "tool_call_started" and stop_after > len(events):
                release.set()  # the stop point lies beyond the child's tool: let it finish
    return check_terminal(events), accepted


async def child_run(child: Agent, thread_id: str) -> RunRecord | None:
    runs = await child.alist_runs(thread_id)
    assert len(runs) <= 1
    return runs[0] if runs else None


def check_child_stop(child: RunRecord, final: RunFinished, mode: str) -> None:
    """A child was cancelled only by its parent's stop, and then like it."""
    assert child.status in ("completed", "cancelled"), child
    if child.status == "cancelled":
        assert final.status == "cancelled" and mode in ("now", "rollback")
        check_stop_record(child, mode=mode)
        assert child.stop_reason == "r"


async def sub_agent_scenario(stop_after: int, mode: str) -> None:
    release = anyio.Event()
    child = child_agent(release)
    parent = Agent(
        ScriptedModel(
            "Warm.",
            [ToolCallStep("digger", {"input": "dig it"})],
            ["Done."],
            default_reply="Next answer.",
        ),
        tools=[child.as_tool()],
        checkpointer=InMemoryCheckpointer(),
    )
    await parent.ainvoke("warm up", thread_id="t")
    before = await parent.aget_messages("t")
    final, accepted = await drive(parent, "t", stop_after, mode, release)
    messages = await parent.aget_messages("t")
    assert_valid_openai_transcript(messages)
    if not accepted:
        assert final.status == "completed"
    if final.status == "cancelled" and mode == "rollback":
        assert messages == before
    thread = child_thread_id("t", final.run_id, "digger.call_1_0")
    record = await child_run(child, thread)
    if record is not None:
        check_child_stop(record, final, mode)
        child_messages = await child.aget_messages(thread)
        assert_valid_openai_transcript(child_messages)
        result = next((m for m in messages if m.tool_call_id == "call_1_0"), None)
        if mode != "rollback" or final.status != "cancelled":
            assert result is not None
            answer = [m for m in child_messages if m.role == "assistant"][-1].content
            if record.status == "cancelled":
                assert result.status == "cancelled"
                assert result.content == STOPPED_SUBAGENT_RESULT.format(name="digger") + answer
            else:
                assert (result.status, result.content) == ("complete", answer)
    assert parent.registry.size() == 0 and child.registry.size() == 0
    after = await parent.ainvoke("and now?", thread_id="t")
    assert after["messages"][-1].content in ("Next answer.", "Done.")


async def subgraph_scenario(stop_after: int, mode: str) -> None:
    release = anyio.Event()
    child = child_agent(release)

    async def after(state: dict[str, Any]) -> Message:
        return Message.assistant("after")

    graph = StateGraph()
    graph.add_node("inner", child)
    graph.add_node("after", after)
    graph.set_entry_point("inner")
    graph.add_edge("inner", "after")
    graph.add_edge("after", END)
    parent = graph.compile(InMemoryCheckpointer())
    final, accepted = await drive(parent, "g", stop_after, mode, release)
    messages = (await parent.aget_state("g")).values.get("messages", [])
    assert_valid_openai_transcript(messages)
    if not accepted:
        assert final.status == "completed"
    if final.status == "cancelled" and mode == "rollback":
        assert messages == []
    record = await child_run(child, child_thread_id("g", final.run_id, "inner.1"))
    if record is not None:
        check_child_stop(record, final, mode)
        child_messages = await child.aget_messages(child_thread_id("g", final.run_id, "inner.1"))
        assert_valid_openai_transcript(child_messages)
        if mode != "rollback" or final.status != "cancelled":
            # what the child produced (partial or whole) is in the parent's state, by id
            assert all(m in messages for m in child_messages)
    assert parent.registry.size() == 0 and child.registry.size() == 0
    after_run = await parent.ainvoke("again", thread_id="g")
    assert after_run["messages"][-1].content == "after"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_after=st.integers(1, 40), mode=MODES)
def test_parent_stopped_anywhere_inside_a_sub_agent_keeps_the_contract(
    stop_after: int, mode: str
) -> None:
    anyio.run(sub_agent_scenario, stop_after, mode)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_after=st.integers(1, 40), mode=MODES)
def test_parent_stopped_anywhere_inside_a_subgraph_keeps_the_contract(
    stop_after: int, mode: str
) -> None:
    anyio.run(subgraph_scenario, stop_after, mode)
