"""Structured output: `Agent(..., output_type=Model)` (scripted model, deterministic).

Contracts: the result is a validated object; partial output streams as `custom` events; a stop
keeps the partial text as a `stopped` answer and the result is `None`; an answer that does not
validate goes back to the model with the error, a bounded number of times.
"""

from __future__ import annotations

import json

import anyio
import pydantic
import pytest

from tether import Agent, InMemoryCheckpointer, RunFailedError, UserError
from tether.agent.output import OutputValidationError
from tether.testing import Gate, ScriptedModel

pytestmark = pytest.mark.anyio

WATCHDOG = 10.0


class City(pydantic.BaseModel):
    name: str
    population: int


def agent_with(model: ScriptedModel, **kwargs: object) -> Agent:
    return Agent(model, checkpointer=InMemoryCheckpointer(), output_type=City, **kwargs)  # type: ignore[arg-type]


async def test_the_result_is_the_validated_object_and_partials_stream() -> None:
    model = ScriptedModel(['{"name": "Os', 'lo", "popu', 'lation": 709000}'])
    agent = agent_with(model)
    with anyio.fail_after(WATCHDOG):
        events = [e async for e in agent.arun("Biggest city in Norway?", thread_id="t")]
        output = await agent.aget_output("t")
    assert output == City(name="Oslo", population=709000)
    partials = [e.data["partial_output"] for e in events if e.type == "custom"]
    assert partials[0] == {"name": "Os"}
    assert partials[-1] == {"name": "Oslo", "population": 709000}
    assert len(partials) == len({json.dumps(p) for p in partials})  # each new partial once
    schema = model.calls[0][0]
    assert schema.role == "system" and '"population"' in schema.content


async def test_invoke_output_returns_the_object() -> None:
    agent = agent_with(ScriptedModel(['{"name": "Bergen", "population": 291000}']))
    with anyio.fail_after(WATCHDOG):
        assert await agent.ainvoke_output("?", thread_id="t") == City(
            name="Bergen", population=291000
        )


async def test_a_stop_keeps_the_partial_text_stopped_and_the_result_is_none() -> None:
    gate = Gate("mid-json")
    agent = agent_with(ScriptedModel(['{"name": "Tro', gate, 'ndheim", "population": 1}']))
    with anyio.fail_after(WATCHDOG):
        async for event in agent.arun("?", thread_id="t"):
            if event.type == "message_delta":
                await gate.reached()
                assert await agent.astop(thread_id="t")
        gate.release()
        last = (await agent.aget_messages("t"))[-1]
        assert await agent.aget_output("t") is None
    assert (last.content, last.status) == ('{"name": "Tro', "stopped")
    assert "output" not in last.metadata


async def test_invoke_output_of_a_stopped_run_is_none() -> None:
    gate = Gate("mid-json")
    agent = agent_with(ScriptedModel(['{"name": "Tro', gate]))

    async def stop_at_gate() -> None:
        await gate.reached()
        await agent.astop(thread_id="t")
        gate.release()

    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_at_gate)
            assert await agent.ainvoke_output("?", thread_id="t") is None


async def test_resume_completes_a_stopped_output_and_validates_it() -> None:
    gate = Gate("mid-json")
    model = ScriptedModel(['{"name": "Tro', gate], ['ndheim", "population": 212000}'])
    agent = agent_with(model)
    with anyio.fail_after(WATCHDOG):
        async for event in agent.arun("?", thread_id="t"):
            if event.type == "message_delta":
                await gate.reached()
                assert await agent.astop(thread_id="t")
        gate.release()
        events = [e async for e in agent.aresume("t")]
        output = await agent.aget_output("t")
    assert output == City(name="Trondheim", population=212000)
    assert events[-1].status == "completed"  # type: ignore[union-attr]
    # the partial output continues from the stopped text, not from nothing
    first = next(e.data["partial_output"] for e in events if e.type == "custom")
    assert first["name"] == "Trondheim"


async def test_an_invalid_answer_goes_back_with_the_error_then_validates() -> None:
    model = ScriptedModel(['{"name": "Oslo"}'], ['{"name": "Oslo", "population": 709000}'])
    agent = agent_with(model)
    with anyio.fail_after(WATCHDOG):
        output = await agent.ainvoke_output("?", thread_id="t")
    assert output == City(name="Oslo", population=709000)
    retry = model.calls[1][-1]
    assert retry.role == "user" and "population" in retry.content and "missing" in retry.content
    messages = await agent.aget_messages("t")
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert "output_error" in messages[1].metadata


async def test_retries_are_bounded_then_the_run_fails() -> None:
    model = ScriptedModel("not json", "still not", "nope", default_reply="never asked")
    agent = agent_with(model, output_retries=2)
    with anyio.fail_after(WATCHDOG), pytest.raises(RunFailedError) as caught:
        await agent.ainvoke_output("?", thread_id="t")
    assert isinstance(caught.value.__cause__, OutputValidationError)
    assert len(model.calls) == 3  # the first answer and two retries
    # a failed step is not kept: the thread stands at the last request for a correction
    messages = await agent.aget_messages("t")
    assert [m.metadata.get("output_retry") for m in messages if m.role == "user"] == [None, 1, 2]


def test_output_type_must_be_a_pydantic_model() -> None:
    with pytest.raises(UserError, match=r"<class 'dict'>"):
        Agent(ScriptedModel(), output_type=dict, checkpointer=InMemoryCheckpointer())  # type: ignore[arg-type]


async def test_get_output_without_output_type_is_a_user_error() -> None:
    agent = Agent(ScriptedModel(), checkpointer=InMemoryCheckpointer())
    with pytest.raises(UserError, match="output_type"):
        await agent.aget_output("t")
