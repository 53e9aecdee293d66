"""Human-in-the-loop: `interrupt()` in nodes and tools, `Command(resume=...)`, tool approval, and
a stop while a run waits for a person."""

from __future__ import annotations

import json
from typing import Any, TypedDict

import anyio
import pytest

from tests.core.test_transcript import assert_valid_openai_transcript
from tests.graph._scenario import check_terminal
from tether import (
    Agent,
    Command,
    InMemoryCheckpointer,
    Message,
    MessagesState,
    RunFinished,
    StateGraph,
    UserError,
    interrupt,
    tool,
)
from tether.agent.approval import REJECTED_TOOL_RESULT
from tether.testing import ScriptedModel, ToolCallStep

pytestmark = pytest.mark.anyio


class State(TypedDict, total=False):
    greeting: str


def greeter(sync: bool = False) -> Any:
    def ask_sync(state: dict[str, Any]) -> dict[str, Any]:
        name = interrupt({"question": "your name?"})
        return {"greeting": f"hello {name}"}

    async def ask(state: dict[str, Any]) -> dict[str, Any]:
        name = interrupt({"question": "your name?"})
        return {"greeting": f"hello {name}"}

    graph = StateGraph(State)
    graph.add_node("ask", ask_sync if sync else ask)
    graph.set_entry_point("ask")
    graph.set_finish_point("ask")
    return graph.compile(checkpointer=InMemoryCheckpointer())


async def collect(stream: Any) -> list[Any]:
    with anyio.fail_after(10):
        return [event async for event in stream]


@pytest.mark.parametrize("sync", [False, True], ids=["async-node", "sync-node"])
async def test_interrupt_pauses_with_its_payload_and_command_resumes(sync: bool) -> None:
    app = greeter(sync)
    events = await collect(app.astream({}, thread_id="t"))
    final = check_terminal(events)
    assert final.status == "interrupted"
    assert final.interrupt is not None and final.interrupt["value"] == {"question": "your name?"}
    assert final.interrupt["node"] == "ask"
    record = await app.aget_run(final.run_id)
    assert record is not None and record.status == "interrupted"
    assert record.interrupt == final.interrupt
    state = await app.aget_state("t")
    assert state.next == ("ask",)
    assert state.metadata["interrupt"]["id"] == final.interrupt["id"]

    resumed = check_terminal(await collect(app.astream(Command(resume="Ada"), thread_id="t")))
    assert resumed.status == "completed" and resumed.interrupt is None
    assert (await app.aget_state("t")).values["greeting"] == "hello Ada"


async def test_each_resume_answers_the_next_interrupt_of_the_node_in_order() -> None:
    asked: list[str] = []

    async def form(state: dict[str, Any]) -> dict[str, Any]:
        first = interrupt("first?")
        asked.append(first)
        second = interrupt("second?")
        return {"messages": [Message.assistant(f"{first} {second}")]}

    graph = StateGraph(MessagesState)
    graph.add_node("form", form)
    graph.set_entry_point("form")
    graph.set_finish_point("form")
    app = graph.compile(checkpointer=InMemoryCheckpointer())
    first = check_terminal(await collect(app.astream({"messages": []}, thread_id="t")))
    assert first.interrupt is not None and first.interrupt["value"] == "first?"
    second = check_terminal(await collect(app.astream(Command(resume="a"), thread_id="t")))
    assert second.interrupt is not None and second.interrupt["value"] == "second?"
    done = check_terminal(await collect(app.astream(Command(resume="b"), thread_id="t")))
    assert done.status == "completed"
    assert (await app.aget_state("t")).values["messages"][-1].content == "a b"
    assert asked == ["a", "a"]  # the node ran again from its start; the first answer was replayed


async def test_command_on_a_thread_that_is_not_paused_fails_clearly_and_changes_nothing() -> None:
    app = greeter()
    with pytest.raises(UserError, match=r"not paused by interrupt\(\)"):
        await app.ainvoke(Command(resume="x"), thread_id="fresh")
    assert (await app.aget_state("fresh")).checkpoint_id is None


def test_interrupt_outside_a_run_says_where_to_call_it() -> None:
    with pytest.raises(UserError, match="outside a running node or tool"):
        interrupt("hi")


def approval_agent(**extra: Any) -> tuple[Agent, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    @tool(requires_approval=True)
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        sent.append({"to": to, "body": body})
        return f"sent to {to}"

    @tool
    def lookup(name: str) -> str:
        """Look up an address."""
        return f"{name}@example.com"

    model = ScriptedModel(
        [
            "Sending. ",
            ToolCallStep("lookup", {"name": "ada"}, id="c1"),
            ToolCallStep("send_email", {"to": "ada@example.com", "body": "hi"}, id="c2"),
        ],
        default_reply="Done.",
    )
    agent = Agent(model, tools=[send_email, lookup], checkpointer=InMemoryCheckpointer(), **extra)
    return agent, sent


async def test_a_tool_that_requires_approval_pauses_before_any_call_runs() -> None:
    agent, sent = approval_agent()
    events = await collect(agent.arun("email ada", thread_id="t"))
    final = check_terminal(events)
    assert final.status == "interrupted"
    assert final.interrupt is not None
    assert final.interrupt["value"] == {
        "type": "tool_approval",
        "tool_calls": [
            {"id": "c2", "name": "send_email", "arguments": {"to": "ada@example.com", "body": "hi"}}
        ],
    }
    assert sent == []
    assert not [e for e in events if e.type == "tool_call_started"]  # nothing ran, not even lookup


async def test_approve_runs_the_call() -> None:
    agent, sent = approval_agent()
    await agent.ainvoke("email ada", thread_id="t")
    values = await agent.ainvoke(Command(resume="approve"), thread_id="t")
    assert sent == [{"to": "ada@example.com", "body": "hi"}]
    assert values["messages"][-1].content == "Done."
    assert_valid_openai_transcript(values["messages"])


async def test_reject_answers_the_call_without_running_it() -> None:
    agent, sent = approval_agent()
    await agent.ainvoke("email ada", thread_id="t")
    values = await agent.ainvoke(
        Command(resume={"action": "reject", "reason": "not now"}), thread_id="t"
    )
    assert sent == []
    results = {m.tool_call_id: m for m in values["messages"] if m.role == "tool"}
    assert results["c1"].content == "ada@example.com"  # the call that needed no approval ran
    assert results["c2"].content == f"{REJECTED_TOOL_RESULT} Reason: not now"
    assert results["c2"].metadata == {"rejected": True}
    assert_valid_openai_transcript(values["messages"])


async def test_edit_runs_the_call_with_the_new_arguments() -> None:
    agent, sent = approval_agent()
    await agent.ainvoke("email ada", thread_id="t")
    edited = {"to": "bob@example.com", "body": "hello"}
    events = await collect(
        agent.arun(Command(resume={"c2": {"action": "edit", "arguments": edited}}), thread_id="t")
    )
    assert check_terminal(events).status == "completed"
    assert sent == [edited]
    started = [e for e in events if e.type == "tool_call_started" and e.tool_call_id == "c2"]
    assert json.loads(started[0].arguments) == edited


async def test_a_bad_answer_fails_the_resume_and_the_thread_stays_paused() -> None:
    agent, sent = approval_agent()
    await agent.ainvoke("email ada", thread_id="t")
    with pytest.raises(UserError, match="'maybe' is not an approval decision"):
        await agent.ainvoke(Command(resume="maybe"), thread_id="t")
    assert (await agent.aget_state("t")).metadata["interrupt"]["value"]["type"] == "tool_approval"
    await agent.ainvoke(Command(resume=True), thread_id="t")
    assert len(sent) == 1


async def test_a_tool_may_call_interrupt_itself() -> None:
    @tool
    async def confirm(amount: int) -> str:
        """Pay after asking."""
        ok = interrupt({"pay": amount})
        return "paid" if ok else "not paid"

    model = ScriptedModel([ToolCallStep("confirm", {"amount": 5}, id="p")], default_reply="ok")
    agent = Agent(model, tools=[confirm], checkpointer=InMemoryCheckpointer())
    paused = check_terminal(await collect(agent.arun("pay", thread_id="t")))
    assert paused.status == "interrupted"
    assert paused.interrupt is not None and paused.interrupt["value"] == {"pay": 5}
    values = await agent.ainvoke(Command(resume=True), thread_id="t")
    assert [m.content for m in values["messages"] if m.role == "tool"] == ["paid"]


async def test_a_stop_while_waiting_for_approval_cancels_the_run_and_the_pending_calls() -> None:
    agent, sent = approval_agent()
    paused = check_terminal(await collect(agent.arun("email ada", thread_id="t")))
    assert await agent.astop(thread_id="t", reason="changed my mind") is True
    record = await agent.aget_run(paused.run_id)
    assert record is not None and record.status == "cancelled"
    assert record.stop_reason == "changed my mind" and record.stop_requested_by == "user"
    assert record.stop_requested_at is not None and record.stopped_at is not None
    messages = await agent.aget_messages("t")
    assert_valid_openai_transcript(messages)
    assert {m.tool_call_id: m.status for m in messages if m.role == "tool"} == {
        "c1": "cancelled",
        "c2": "cancelled",
    }
    assert sent == []
    assert await agent.astop(thread_id="t") is False  # nothing waits any more (S2)
    assert await agent.astop(run_id=paused.run_id) is False
    with pytest.raises(UserError, match="not paused"):  # nothing left to resume
        await agent.ainvoke(Command(resume="approve"), thread_id="t")
    values = await agent.ainvoke("and now?", thread_id="t")  # the thread continues
    assert values["messages"][-1].content == "Done."
    assert_valid_openai_transcript(values["messages"])


async def test_a_stop_by_run_id_while_waiting_is_accepted_too() -> None:
    agent, _ = approval_agent()
    paused = check_terminal(await collect(agent.arun("email ada", thread_id="t")))
    assert isinstance(paused, RunFinished)
    assert await agent.astop(run_id=paused.run_id, mode="now") is True
    record = await agent.aget_run(paused.run_id)
    assert record is not None and record.status == "cancelled" and record.stop_mode == "now"
