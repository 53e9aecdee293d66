"""The stop contract for agents, by invariant, at random stop points (hypothesis).

Each example runs an agent whose first answer streams text, then asks for two tools (one async that
blocks until released, one sync), then answers again. The run is stopped after a random number of
events with a random mode; afterwards S1 (one terminal event), S4 (a valid transcript; rollback
restores the state), S5 (the thread takes a new message at once), S6 (no registry entries left) and
S7 (the stop is recorded) must hold.
"""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.test_transcript import assert_valid_openai_transcript
from tests.graph._scenario import check_stop_record, check_terminal
from tether import Agent, InMemoryCheckpointer, RunFinished, tool
from tether.testing import ScriptedModel, ToolCallStep


def build() -> tuple[Agent, anyio.Event]:
    release = anyio.Event()

    @tool
    async def slow(q: str) -> str:
        """Waits until released."""
        await release.wait()
        return f"slow {q}"

    @tool
    def quick(q: str) -> str:
        """Answers at once."""
        return f"quick {q}"

    model = ScriptedModel(
        "First answer.",
        [
            "Let me ",
            "check ",
            "both. ",
            ToolCallStep("slow", {"q": "a"}),
            ToolCallStep("quick", {"q": "b"}),
        ],
        ["Both ", "checked."],
        default_reply="Next answer.",
    )
    return Agent(model, tools=[slow, quick], checkpointer=InMemoryCheckpointer()), release


async def scenario(stop_after: int, mode: str) -> None:
    agent, release = build()
    await agent.ainvoke("warm up", thread_id="t")
    before = await agent.aget_messages("t")
    events: list[Any] = []
    stop_result = None
    with anyio.fail_after(20):
        async for event in agent.arun("go", thread_id="t"):
            events.append(event)
            if len(events) == stop_after and not isinstance(event, RunFinished):
                stop_result = await agent.astop(thread_id="t", mode=mode, wait=False)
                release.set()
            if event.type == "tool_call_started" and stop_after > len(events):
                release.set()  # the stop point lies beyond the tools: let them finish
    final = check_terminal(events)
    record = await agent.aget_run(final.run_id)
    assert record is not None
    messages = await agent.aget_messages("t")
    assert_valid_openai_transcript(messages)
    if not stop_result:  # no stop, or it came after the run had already finished (S2: False)
        assert final.status == "completed"
    else:
        if final.status == "cancelled":
            check_stop_record(record, mode=mode)
            if mode == "rollback":
                assert messages == before
        else:  # an after_step stop that landed in the last step lets the run complete
            assert mode == "after_step" and final.status == "completed"
    assert agent.registry.size() == 0
    result = await agent.ainvoke("and now?", thread_id="t")
    assert result["messages"][-1].content in ("Next answer.", "Both checked.")
    assert result["messages"][: len(messages)] == messages


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_after=st.integers(1, 45), mode=st.sampled_from(["now", "after_step", "rollback"]))
def test_agent_stopped_anywhere_keeps_the_contract(stop_after: int, mode: str) -> None:
    anyio.run(scenario, stop_after, mode)
