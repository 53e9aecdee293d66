"""The stop contract inside human-in-the-loop runs, by invariant, at random stop points (hypothesis).

Each example runs an agent whose answer streams text and asks for two tools: `slow` (blocks until
released) and `send` (requires approval). The first run pauses for the approval; a person answers
(approve, reject or edit) and the resumed run calls the tools and answers again. One stop lands at
a random point: an event of the first run, the pause itself (the run waits for approval), or an
event of the resumed run, with a random mode. Afterwards S1 (one terminal event per run), S2 (a
stop of nothing returns False), S4 (a valid transcript; rollback restores the state), S5 (the thread
takes a new message at once), S6 (no registry entries left) and S7 (the stop is recorded) hold, and
`send` ran only if approved or edited, and never after a stop that came before the answer.
"""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.test_transcript import assert_valid_openai_transcript
from tests.graph._scenario import check_stop_record, check_terminal
from tether import Agent, Command, InMemoryCheckpointer, RunFinished, tool
from tether.testing import ScriptedModel, ToolCallStep

DECISIONS: dict[str, Any] = {
    "approve": "approve",
    "reject": {"action": "reject", "reason": "no"},
    "edit": {"action": "edit", "arguments": {"to": "bob"}},
}


def build() -> tuple[Agent, anyio.Event, list[str]]:
    release = anyio.Event()
    sent: list[str] = []

    @tool
    async def slow(q: str) -> str:
        """Waits until released."""
        await release.wait()
        return f"slow {q}"

    @tool(requires_approval=True)
    def send(to: str) -> str:
        """Sends a message."""
        sent.append(to)
        return f"sent to {to}"

    model = ScriptedModel(
        "First answer.",
        [
            "Let me ",
            "do ",
            "both. ",
            ToolCallStep("slow", {"q": "a"}),
            ToolCallStep("send", {"to": "ada"}),
        ],
        ["Both ", "done."],
        default_reply="Next answer.",
    )
    agent = Agent(model, tools=[slow, send], checkpointer=InMemoryCheckpointer())
    return agent, release, sent


async def run_until(
    agent: Agent, input: Any, release: anyio.Event, stop_after: int | None, mode: str
) -> tuple[RunFinished, bool]:
    """Run `input` on thread t, stopping after `stop_after` events (None: never)."""
    events: list[Any] = []
    stopped = False
    async for event in agent.arun(input, thread_id="t"):
        events.append(event)
        if len(events) == stop_after and not isinstance(event, RunFinished):
            stopped = await agent.astop(thread_id="t", mode=mode, wait=False)
            release.set()
        if event.type == "tool_call_started" and (stop_after is None or stop_after > len(events)):
            release.set()
    return check_terminal(events), stopped


async def scenario(phase: str, stop_after: int, mode: str, decision: str) -> None:
    agent, release, sent = build()
    await agent.ainvoke("warm up", thread_id="t")
    before = await agent.aget_messages("t")
    with anyio.fail_after(20):
        first, stopped = await run_until(
            agent, "go", release, stop_after if phase == "first" else None, mode
        )
        final, run_before = first, before
        # (A stop that reaches the first run after it paused cancels the pause: nothing to resume.)
        if first.status == "interrupted" and not stopped:
            assert first.interrupt is not None
            assert first.interrupt["value"]["type"] == "tool_approval"
            if phase == "waiting":
                stopped = await agent.astop(thread_id="t", mode=mode)
                assert stopped  # a run waiting for approval accepts the stop
            else:
                run_before = await agent.aget_messages("t")
                final, stopped = await run_until(
                    agent,
                    Command(resume=DECISIONS[decision]),
                    release,
                    stop_after if phase == "resume" else None,
                    mode,
                )
    record = await agent.aget_run(final.run_id)
    assert record is not None
    messages = await agent.aget_messages("t")
    if not (stopped and mode == "rollback" and phase == "resume"):
        assert_valid_openai_transcript(messages)
    paused_again = False
    if stopped and record.status == "cancelled":
        check_stop_record(record, mode=mode)
        if mode == "rollback" and phase == "resume":
            # Rolling back the resumed run restores the pause whole: it still waits for approval.
            assert messages == run_before
            paused_again = True
        elif mode == "rollback":
            assert messages == before
    elif not stopped:
        assert final.status == "completed"
    else:  # an after_step stop in the last step lets the run complete
        assert mode == "after_step" and final.status in ("completed", "interrupted")
    if (phase in ("first", "waiting") and record.status == "cancelled") or decision == "reject":
        assert sent == []  # the stop came before anyone approved, or the person said no
    if decision == "edit":
        assert "ada" not in sent
    assert agent.registry.size() == 0
    if paused_again:
        assert (await agent.aget_state("t")).metadata["interrupt"]["run_id"] == first.run_id
        assert await agent.astop(thread_id="t") is True  # a stop while waiting (again)
        assert_valid_openai_transcript(await agent.aget_messages("t"))
        messages = await agent.aget_messages("t")
    assert await agent.astop(thread_id="t") is False  # nothing is running or waiting (S2)
    result = await agent.ainvoke("and now?", thread_id="t")
    assert result["messages"][-1].content in ("Next answer.", "Both done.")
    assert result["messages"][: len(messages)] == messages
    assert_valid_openai_transcript(result["messages"])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    phase=st.sampled_from(["first", "waiting", "resume"]),
    stop_after=st.integers(1, 30),
    mode=st.sampled_from(["now", "after_step", "rollback"]),
    decision=st.sampled_from(sorted(DECISIONS)),
)
def test_a_stop_anywhere_in_a_human_in_the_loop_run_keeps_the_contract(
    phase: str, stop_after: int, mode: str, decision: str
) -> None:
    anyio.run(scenario, phase, stop_after, mode, decision)
