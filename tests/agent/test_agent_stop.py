"""Stop anywhere in an agent run, then continue or resume (scripted model, deterministic)."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from tests.core.test_transcript import assert_valid_openai_transcript
from tether import (
    Agent,
    InMemoryCheckpointer,
    RunFinished,
    ToolCallFinished,
    UserError,
    tool,
)
from tether.testing import Gate, ScriptedModel, ToolCallStep, stream_forever
from tether.transcript import CANCELLED_TOOL_RESULT

pytestmark = pytest.mark.anyio


def agent_with(model: ScriptedModel, tools: list[Any] = (), **kwargs: Any) -> Agent:  # type: ignore[assignment]
    return Agent(
        model, tools=tools, checkpointer=InMemoryCheckpointer(), instructions="Be brief.", **kwargs
    )


async def test_stop_mid_generation_keeps_the_partial_answer_and_the_next_message_sees_it() -> None:
    gate = Gate("mid-answer")
    model = ScriptedModel(["Once upon ", "a time", gate, " never seen"], "Sure, continuing.")
    agent = agent_with(model)
    stream = agent.arun("Tell me a story", thread_id="t")
    async for event in stream:
        if event.type == "message_delta" and event.content == "a time":
            await gate.reached()
            assert await agent.astop(thread_id="t", reason="user pressed stop")
    assert isinstance(event, RunFinished) and event.status == "cancelled"
    messages = await agent.aget_messages("t")
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "Tell me a story", "complete"),
        ("assistant", "Once upon a time", "stopped"),
    ]
    await agent.ainvoke("go on", thread_id="t")
    seen = model.calls[1]
    assert [(m.role, m.content) for m in seen] == [
        ("system", "Be brief."),
        ("user", "Tell me a story"),
        ("assistant", "Once upon a time"),
        ("user", "go on"),
    ]


async def test_resume_continues_the_stopped_answer_in_the_same_message() -> None:
    model = ScriptedModel([stream_forever("la ")], [" and they lived happily."])
    agent = agent_with(model)
    async for event in agent.arun("Sing", thread_id="t"):
        if event.type == "message_delta":
            assert await agent.astop(thread_id="t")
    stopped = (await agent.aget_messages("t"))[-1]
    assert stopped.status == "stopped" and stopped.content.startswith("la")
    events = [e async for e in agent.aresume("t")]
    assert events[-1].status == "completed"  # type: ignore[union-attr]
    resumed = await agent.aget_messages("t")
    assert len(resumed) == 2
    assert resumed[-1].id == stopped.id
    assert resumed[-1].content == stopped.content + " and they lived happily."
    assert resumed[-1].status == "complete"
    assert model.calls[1][-1].role == "user" and "Continue" in model.calls[1][-1].content


async def test_stop_while_tools_run_then_continue_without_running_the_rest() -> None:
    """Seed 001's first question: stop while tools run; the remaining tools never run."""
    started: list[str] = []
    slow_entered = threading.Event()

    @tool
    async def fetch(url: str) -> str:
        """Fetch a page."""
        started.append(f"fetch {url}")
        if url == "slow":
            slow_entered.set()
            await anyio.sleep_forever()
        return f"page {url}"

    model = ScriptedModel(
        [
            ToolCallStep("fetch", {"url": "fast"}, id="c1"),
            ToolCallStep("fetch", {"url": "slow"}, id="c2"),
            ToolCallStep("fetch", {"url": "never"}, id="c3"),
        ],
        "Okay, stopping there.",
    )
    agent = agent_with(model, [fetch], parallel_tool_calls=False)
    events = []
    async for event in agent.arun("Research this", thread_id="t"):
        events.append(event)
        if event.type == "tool_call_started" and event.arguments == '{"url": "slow"}':
            await anyio.to_thread.run_sync(slow_entered.wait, 10)
            assert await agent.astop(thread_id="t")
    assert started == ["fetch fast", "fetch slow"]  # "never" never started
    finished = {e.tool_call_id: e.status for e in events if isinstance(e, ToolCallFinished)}
    assert finished == {"c1": "complete", "c2": "cancelled", "c3": "cancelled"}
    messages = await agent.aget_messages("t")
    assert_valid_openai_transcript(messages)
    results = {m.tool_call_id: (m.content, m.status) for m in messages if m.role == "tool"}
    assert results["c1"] == ("page fast", "complete")
    assert results["c2"] == (CANCELLED_TOOL_RESULT, "cancelled")
    assert results["c3"] == (CANCELLED_TOOL_RESULT, "cancelled")
    result = await agent.ainvoke("never mind, just summarise", thread_id="t")
    assert result["messages"][-1].content == "Okay, stopping there."
    assert started == ["fetch fast", "fetch slow"]
    assert_valid_openai_transcript(model.calls[1][1:])


async def test_parallel_tools_are_cancelled_together_and_finished_results_are_kept() -> None:
    both = anyio.Event()
    count = 0

    @tool
    async def work(n: int) -> str:
        """Do work."""
        nonlocal count
        count += 1
        if n == 1:
            return "one done"
        if count == 2:
            both.set()
        await anyio.sleep_forever()
        return "unreachable"

    model = ScriptedModel(
        [
            ToolCallStep("work", {"n": 1}),
            ToolCallStep("work", {"n": 2}),
            ToolCallStep("work", {"n": 3}),
        ]
    )
    agent = agent_with(model, [work])
    handle = await agent.astart("go", thread_id="t")
    with anyio.fail_after(10):
        await both.wait()
        while not any(isinstance(e, ToolCallFinished) for e in handle.events):
            await handle.wait_for_events(len(handle.events))
    assert await agent.astop(thread_id="t")
    tool_msgs = [m for m in await agent.aget_messages("t") if m.role == "tool"]
    assert sorted((m.content, m.status) for m in tool_msgs) == sorted(
        [
            ("one done", "complete"),
            (CANCELLED_TOOL_RESULT, "cancelled"),
            (CANCELLED_TOOL_RESULT, "cancelled"),
        ]
    )


async def test_after_step_lets_the_model_turn_finish_and_repairs_the_pending_tool_calls() -> None:
    gate = Gate()
    ran: list[str] = []

    @tool
    def lookup(q: str) -> str:
        """Look something up."""
        ran.append(q)
        return "found"

    model = ScriptedModel(["Let me check. ", gate, ToolCallStep("lookup", {"q": "x"}, id="c1")])
    agent = agent_with(model, [lookup])
    handle = await agent.astart("q", thread_id="t")
    await gate.reached()
    assert await agent.astop(thread_id="t", mode="after_step", wait=False)
    gate.release()
    with anyio.fail_after(10):
        await handle.wait()
    assert handle.status == "cancelled" and ran == []
    messages = await agent.aget_messages("t")
    assert (messages[1].content, messages[1].status) == ("Let me check. ", "complete")
    assert messages[1].tool_calls[0].id == "c1"
    assert (messages[2].tool_call_id, messages[2].status) == ("c1", "cancelled")


async def test_a_tool_error_becomes_a_result_the_model_sees() -> None:
    @tool
    def divide(a: int, b: int) -> float:
        """Divide."""
        return a / b

    model = ScriptedModel(
        [ToolCallStep("divide", {"a": 1, "b": 0})], [ToolCallStep("divide", {"a": "x"})], "ok"
    )
    agent = agent_with(model, [divide])
    events = [e async for e in agent.arun("divide", thread_id="t")]
    errors = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [e.status for e in errors] == ["error", "error"]
    assert "ZeroDivisionError" in errors[0].content
    assert "ToolArgumentsError" in errors[1].content
    assert "ZeroDivisionError" in model.calls[1][-1].content


def test_seed_002_surface_cancel_run_from_another_thread() -> None:
    model = ScriptedModel([stream_forever("dragon ")])
    agent = Agent(model, checkpointer=InMemoryCheckpointer(), name="StorytellerAgent")
    container: dict[str, Any] = {}
    first_chunk = threading.Event()

    def long_running_task() -> None:
        for chunk in agent.run(
            "Write a very long story about a dragon who learns to code.", stream=True
        ):
            container.setdefault("run_id", chunk.run_id)
            if chunk.type == "message_delta":
                first_chunk.set()
            container["last"] = chunk

    worker = threading.Thread(target=long_running_task)
    worker.start()
    assert first_chunk.wait(10)
    assert agent.cancel_run(run_id=container["run_id"]) is True
    worker.join(10)
    assert container["last"].type == "run_finished" and container["last"].status == "cancelled"
    assert agent.cancel_run(run_id=container["run_id"]) is False
    record = agent.get_run(container["run_id"])
    assert record is not None and record.status == "cancelled"
    story = agent.get_messages(record.thread_id)[-1]
    assert story.status == "stopped" and story.content.startswith("dragon")
    with pytest.raises(UserError, match="invoke"):
        agent.run("x", stream=False)  # type: ignore[arg-type]


async def test_every_stop_point_leaves_a_valid_transcript() -> None:
    gate = Gate()

    @tool
    async def wait_forever() -> str:
        """Wait."""
        await anyio.sleep_forever()
        return ""

    for point in range(6):
        model = ScriptedModel(
            ["a", "b", ToolCallStep("wait_forever", {}), gate], default_reply="fine"
        )
        agent = agent_with(model, [wait_forever])
        handle = await agent.astart("go", thread_id="t")
        with anyio.fail_after(10):
            while len(handle.events) <= point + 2 and not handle.done:
                await handle.wait_for_events(len(handle.events))
        await agent.astop(thread_id="t")
        messages = await agent.aget_messages("t")
        assert_valid_openai_transcript(messages)
        assert messages[-1].role in ("assistant", "tool", "user")
        result = await agent.ainvoke("again", thread_id="t")
        assert result["messages"][-1].content == "fine"
