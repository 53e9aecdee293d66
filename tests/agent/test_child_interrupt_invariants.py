"""The stop contract when a child run pauses its parent, by invariant, at random stop points.

Each example runs a parent agent whose answer calls a sub-agent (`researcher`, an agent tool);
the sub-agent's tool `confirm` asks a person (`interrupt()`), so the child pauses and the parent
with it. A person answers (`Command(resume=...)` on the parent), the child resumes on its own
thread, waits in `confirm` until released, and both answer. One stop lands at a random point: an
event of the first run, the pause itself, or an event of the resumed run, with a random mode.

Afterwards: S1 (one terminal event per run, last), S2 (a stop of nothing returns False), S4 (a
valid parent transcript; a rollback of the resumed run restores the pause whole, in the parent
and in the child), S5 (the parent's thread takes a new message at once), S6 (no registry entries
left, parent or child) and S7 (the stop is recorded); the child's tool got the answer only when
the resumed run got that far, and never after a stop that came before the answer.
"""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.test_transcript import assert_valid_openai_transcript
from tests.graph._scenario import check_stop_record, check_terminal
from tether import Agent, Command, InMemoryCheckpointer, RunFinished, interrupt, tool
from tether.children import child_thread_id
from tether.testing import ScriptedModel, ToolCallStep


def build() -> tuple[Agent, Agent, anyio.Event, list[Any]]:
    release = anyio.Event()
    answers: list[Any] = []

    @tool
    async def confirm(what: str) -> str:
        """Asks a person, then waits until released."""
        answer = interrupt({"confirm": what})
        answers.append(answer)
        await release.wait()
        return f"confirmed {answer}"

    child = Agent(
        ScriptedModel(
            ["Checking ", "first. ", ToolCallStep("confirm", {"what": "x"}, id="k1")],
            ["Con", "firmed."],
            default_reply="Confirmed.",
        ),
        tools=[confirm],
        name="researcher",
        description="Finds facts.",
        checkpointer=InMemoryCheckpointer(),
    )
    parent = Agent(
        ScriptedModel(
            "First answer.",
            ["Asking. ", ToolCallStep("researcher", {"input": "find x"}, id="c1")],
            ["It ", "is x."],
            default_reply="Next answer.",
        ),
        tools=[child.as_tool()],
        checkpointer=InMemoryCheckpointer(),
    )
    return parent, child, release, answers


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
        later = stop_after is None or stop_after > len(events)
        if event.type == "tool_call_started" and event.path and later:
            release.set()
    return check_terminal(events), stopped


async def scenario(phase: str, stop_after: int, mode: str) -> None:
    parent, child, release, answers = build()
    await parent.ainvoke("warm up", thread_id="t")
    before = await parent.aget_messages("t")
    child_thread: str | None = None
    with anyio.fail_after(20):
        first, stopped = await run_until(
            parent, "go", release, stop_after if phase == "first" else None, mode
        )
        final, run_before = first, before
        if first.status == "interrupted" and not stopped:
            assert first.interrupt is not None
            assert first.interrupt["value"] == {"confirm": "x"}
            assert first.interrupt["path"] == ["researcher:c1"]
            child_thread = child_thread_id("t", first.run_id, "researcher.c1")
            if phase == "waiting":
                stopped = await parent.astop(thread_id="t", mode=mode)
                assert stopped  # a run waiting for an answer accepts the stop
            else:
                run_before = await parent.aget_messages("t")
                final, stopped = await run_until(
                    parent,
                    Command(resume="yes"),
                    release,
                    stop_after if phase == "resume" else None,
                    mode,
                )
    record = await parent.aget_run(final.run_id)
    assert record is not None
    messages = await parent.aget_messages("t")
    paused_again = False
    if stopped and record.status == "cancelled":
        check_stop_record(record, mode=mode)
        if mode == "rollback" and phase == "resume":
            # Rolling back the resumed run restores the parent's pause whole; the child, stopped
            # with the same mode, waits again too, unless it had already ended (then the next
            # resume takes its answer without running it again).
            assert messages == run_before
            assert child_thread is not None
            child_runs = await child.alist_runs(child_thread)
            pause = (await child.aget_state(child_thread)).metadata.get("interrupt")
            if child_runs[0].status == "completed":
                assert pause is None and answers == ["yes"]
            else:
                assert child_runs[0].status == "cancelled" and child_runs[0].stop_mode == "rollback"
                assert pause is not None and pause["value"] == {"confirm": "x"}
            paused_again = True
        elif mode == "rollback":
            assert messages == before
    elif not stopped:
        assert final.status == "completed"
        assert answers == ["yes"]
        assert messages[-1].content == "It is x."
    else:  # an after_step stop in the last step lets the run complete (or pause)
        assert mode == "after_step" and final.status in ("completed", "interrupted")
    waiting = (await parent.aget_state("t")).metadata.get("interrupt") is not None
    if not waiting:  # (a paused thread holds the call that waits for its answer)
        assert_valid_openai_transcript(messages)
    assert waiting == (paused_again or record.status == "interrupted")
    if phase in ("first", "waiting") and (stopped or record.status == "cancelled"):
        assert answers == []  # nobody answered before the stop
    assert parent.registry.size() == 0 and child.registry.size() == 0
    if paused_again:
        assert (await parent.aget_state("t")).metadata["interrupt"]["run_id"] == first.run_id
        with anyio.fail_after(20):
            again = await parent.ainvoke(Command(resume="again"), thread_id="t")
        assert answers in (
            ["yes"],
            ["yes", "again"],
        )  # the child ran again only if it had not ended
        [call] = [m for m in again["messages"] if m.role == "tool" and m.tool_call_id == "c1"]
        assert call.content == "Confirmed."
        assert again["messages"][-1].content in ("It is x.", "Next answer.")
        messages = await parent.aget_messages("t")
        assert_valid_openai_transcript(messages)
    elif (await parent.aget_state("t")).metadata.get("interrupt") is not None:
        # an after_step stop let the run pause: a stop while it waits cancels the pause
        assert await parent.astop(thread_id="t") is True
        messages = await parent.aget_messages("t")
    assert await parent.astop(thread_id="t") is False  # nothing is running or waiting (S2)
    result = await parent.ainvoke("and now?", thread_id="t")
    assert result["messages"][-1].content in ("Next answer.", "It is x.")
    assert result["messages"][: len(messages)] == messages
    assert_valid_openai_transcript(result["messages"])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    phase=st.sampled_from(["first", "waiting", "resume"]),
    stop_after=st.integers(1, 30),
    mode=st.sampled_from(["now", "after_step", "rollback"]),
)
def test_a_stop_anywhere_around_a_childs_question_keeps_the_contract(
    phase: str, stop_after: int, mode: str
) -> None:
    anyio.run(scenario, phase, stop_after, mode)
