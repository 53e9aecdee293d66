"""The stop contract inside the agent's capabilities, by invariant, at random stop points.

- continuation: an answer is stopped, resumed, and the resume stopped again at a random point;
- structured output: an answer that does not validate, its retry request, and a valid answer,
  stopped anywhere.

After each example: S1 (one terminal event), S4 (a valid transcript; rollback restores the
state), S5 (the thread takes a new message at once), S6 (no registry entries left), S7 (the stop
is recorded), plus each capability's own: a resumed answer only grows, in one message; the
structured result is `None` unless the run completed, and then it validates.
"""

from __future__ import annotations

from typing import Any

import anyio
import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.test_transcript import assert_valid_openai_transcript
from tests.graph._scenario import check_stop_record, check_terminal
from tether import Agent, InMemoryCheckpointer, RunFinished
from tether.testing import ScriptedModel

WATCHDOG = 20.0


async def _run_and_stop(
    agent: Agent, stream: Any, stop_after: int, mode: str
) -> tuple[RunFinished, bool]:
    """Iterate `stream`, stopping the thread after `stop_after` events; (terminal, stopped?)."""
    events: list[Any] = []
    stop_result = False
    async for event in stream:
        events.append(event)
        if len(events) == stop_after and not isinstance(event, RunFinished):
            stop_result = await agent.astop(thread_id="t", mode=mode, wait=False)
    final = check_terminal(events)
    record = await agent.aget_run(final.run_id)
    assert record is not None
    if stop_result and final.status == "cancelled":
        check_stop_record(record, mode=mode)
    elif not stop_result:
        assert final.status == "completed"
    else:  # an after_step stop that landed in the last step lets the run complete
        assert mode == "after_step" and final.status == "completed"
    assert agent.registry.size() == 0
    return final, stop_result


async def continuation_scenario(first_stop: int, second_stop: int, mode: str) -> None:
    words = [f"w{i} " for i in range(12)]
    more = ["more ", "words ", "here."]
    model = ScriptedModel(words, more, more, more)  # at most three calls: run, resume, next
    agent = Agent(model, checkpointer=InMemoryCheckpointer())
    with anyio.fail_after(WATCHDOG):
        await _run_and_stop(agent, agent.arun("story", thread_id="t"), first_stop, "now")
        before = await agent.aget_messages("t")
        answer = before[-1]
        final, stopped = await _run_and_stop(agent, agent.aresume("t"), second_stop, mode)
        after = await agent.aget_messages("t")
        assert_valid_openai_transcript(after)
        if stopped and final.status == "cancelled" and mode == "rollback":
            assert after == before
        elif answer.status == "stopped":
            # the resumed answer is the same message, and it only grew
            assert len(after) == len(before)
            assert after[-1].id == answer.id
            assert after[-1].content.startswith(answer.content)
            if final.status == "completed":
                assert after[-1].status == "complete"
        result = await agent.ainvoke("and now?", thread_id="t")
        assert result["messages"][-1].content == "more words here."
        assert result["messages"][: len(after)] == after


class City(pydantic.BaseModel):
    name: str
    population: int


async def output_scenario(stop_after: int, mode: str) -> None:
    model = ScriptedModel(
        '{"name": "Warm", "population": 1}',
        ['{"name": ', '"Oslo"', "}"],
        ['{"name": "Oslo", ', '"population": ', "709000}"],
        default_reply='{"name": "Bergen", "population": 291000}',
    )
    agent = Agent(model, checkpointer=InMemoryCheckpointer(), output_type=City)
    with anyio.fail_after(WATCHDOG):
        await agent.ainvoke("warm up", thread_id="t")
        before = await agent.aget_messages("t")
        final, _ = await _run_and_stop(
            agent, agent.arun("biggest city?", thread_id="t"), stop_after, mode
        )
        messages = await agent.aget_messages("t")
        assert_valid_openai_transcript(messages)
        output = await agent.aget_output("t")
        if final.status == "completed":
            assert output == City(name="Oslo", population=709000)
        elif mode == "rollback":
            assert messages == before
            assert output == City(name="Warm", population=1)  # the state before the run
        else:
            assert output is None
            # no answer in the thread after the stop carries an output
            assert all("output" not in m.metadata for m in messages[len(before) :])
        # S5: the next message gets a validated answer (which scripted turn it is depends on
        # how many the stopped run used)
        assert isinstance(await agent.ainvoke_output("next?", thread_id="t"), City)


MODES = st.sampled_from(["now", "after_step", "rollback"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.integers(2, 20), second=st.integers(1, 20), mode=MODES)
def test_resume_stopped_anywhere_keeps_the_contract_and_one_growing_message(
    first: int, second: int, mode: str
) -> None:
    anyio.run(continuation_scenario, first, second, mode)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_after=st.integers(1, 25), mode=MODES)
def test_structured_output_stopped_anywhere_keeps_the_contract_and_never_half_validates(
    stop_after: int, mode: str
) -> None:
    anyio.run(output_scenario, stop_after, mode)
