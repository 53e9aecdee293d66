"""`ScriptedModel` and `Gate`: deterministic playback, and gates that work across threads and loops."""

from __future__ import annotations

import threading

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from tether.messages import Message
from tether.models import Finish, ModelDelta, TextDelta, ToolCallChunk, ToolSpec, Usage
from tether.testing import (
    Gate,
    ScriptedModel,
    ScriptExhaustedError,
    ToolCallStep,
    stream_forever,
)

pytestmark = pytest.mark.anyio

WATCHDOG = 10.0


async def _drain(model: ScriptedModel, messages: list[Message]) -> list[ModelDelta]:
    async with model.stream(messages) as deltas:
        return [delta async for delta in deltas]


async def test_turns_play_in_order_and_calls_are_recorded() -> None:
    model = ScriptedModel(["Hel", "lo"], "second", [Usage(3, 1), "x", Finish("length")])
    spec = ToolSpec("f", "F.")
    with anyio.fail_after(WATCHDOG):
        first = await _drain(model, [Message.user("a")])
        async with model.stream([Message.user("b")], tools=[spec]) as deltas:
            second = [d async for d in deltas]
        third = await _drain(model, [Message.user("c")])
    assert first == [TextDelta("Hel"), TextDelta("lo"), Finish("stop")]
    assert second == [TextDelta("second"), Finish("stop")]
    assert third == [Usage(3, 1), TextDelta("x"), Finish("length")]
    assert [[m.content for m in call] for call in model.calls] == [["a"], ["b"], ["c"]]
    assert model.tools_seen == [[], [spec], []]
    assert model.remaining == 0
    assert model.emitted == 8


async def test_tool_call_steps_stream_as_chunks_that_assemble() -> None:
    model = ScriptedModel(
        ["Looking.", ToolCallStep("search", {"q": "tea"}), ToolCallStep("clock", id="c2")]
    )
    with anyio.fail_after(WATCHDOG):
        message = await model.complete([Message.user("hi")])
    assert message.content == "Looking."
    assert [(c.id, c.name, c.args) for c in message.tool_calls] == [
        ("call_0_0", "search", {"q": "tea"}),
        ("c2", "clock", {}),
    ]
    assert message.metadata["finish_reason"] == "tool_calls"


async def test_tool_call_arguments_arrive_in_fragments() -> None:
    model = ScriptedModel([ToolCallStep("f", {"a": 1})])
    with anyio.fail_after(WATCHDOG):
        got = await _drain(model, [])
    chunks = [d for d in got if isinstance(d, ToolCallChunk)]
    assert len(chunks) == 3
    assert (chunks[0].id, chunks[0].name) == ("call_0_0", "f")
    assert "".join(c.arguments for c in chunks) == '{"a": 1}'


async def test_running_out_of_turns_raises_a_clear_error() -> None:
    model = ScriptedModel("only")
    with anyio.fail_after(WATCHDOG):
        await _drain(model, [])
        with pytest.raises(ScriptExhaustedError, match="no turn left for call 2"):
            await _drain(model, [])
    assert len(model.calls) == 2  # the failed call was still recorded


async def test_default_reply_answers_once_turns_run_out() -> None:
    model = ScriptedModel(default_reply="fallback")
    with anyio.fail_after(WATCHDOG):
        assert (await model.complete([])).content == "fallback"
        assert (await model.complete([])).content == "fallback"


def test_bad_step_is_rejected_naming_it() -> None:
    with pytest.raises(ValueError, match="42"):
        ScriptedModel([42])  # type: ignore[list-item]  # the wrong type is the point


async def test_gate_blocks_until_released_from_another_thread() -> None:
    gate = Gate()
    model = ScriptedModel(["before", gate, "after"])
    released_by: list[str] = []

    def releaser() -> None:
        assert gate.wait_reached(WATCHDOG)
        released_by.append(threading.current_thread().name)
        gate.release()

    thread = threading.Thread(target=releaser, name="releaser")
    with anyio.fail_after(WATCHDOG):
        async with model.stream([]) as deltas:
            first = await anext(deltas)
            assert not gate.is_reached
            thread.start()
            rest = [d async for d in deltas]
    await anyio.to_thread.run_sync(thread.join, WATCHDOG)
    assert first == TextDelta("before")
    assert rest == [TextDelta("after"), Finish("stop")]
    assert released_by == ["releaser"]


def test_gate_works_across_event_loops() -> None:
    """The stream runs on a portal's loop; a second loop waits for the gate and releases it."""
    gate = Gate()
    model = ScriptedModel(["a", gate, "b"])

    async def consume() -> list[ModelDelta]:
        with anyio.fail_after(WATCHDOG):
            return await _drain(model, [])

    async def release_when_reached() -> None:
        with anyio.fail_after(WATCHDOG):
            await gate.reached()
        gate.release()

    with anyio.from_thread.start_blocking_portal() as portal:
        future = portal.start_task_soon(consume)
        anyio.run(release_when_reached)
        got = future.result(WATCHDOG)
    assert got == [TextDelta("a"), TextDelta("b"), Finish("stop")]


async def test_gate_released_before_it_is_reached_does_not_block() -> None:
    gate = Gate()
    gate.release()
    model = ScriptedModel([gate, "x"])
    with anyio.fail_after(WATCHDOG):
        got = await _drain(model, [])
    assert got == [TextDelta("x"), Finish("stop")]
    assert gate.is_reached


async def test_cancel_at_a_gate_stops_the_stream() -> None:
    gate = Gate()
    model = ScriptedModel(["a", gate, "b"])
    got: list[ModelDelta] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                async with model.stream([]) as deltas:
                    async for delta in deltas:
                        got.append(delta)

            tg.start_soon(consume)
            await gate.reached()
            tg.cancel_scope.cancel()
    assert got == [TextDelta("a")]
    assert gate._released.waiters is None  # the cancelled waiter unregistered itself
    gate.release()  # releasing later wakes nobody and does not fail


async def test_stream_forever_stops_when_cancelled() -> None:
    model = ScriptedModel([stream_forever("t ")])
    with anyio.fail_after(WATCHDOG), anyio.CancelScope() as scope:
        async with model.stream([]) as deltas:
            async for _ in deltas:
                if model.emitted == 100:
                    scope.cancel()
    assert scope.cancelled_caught
    assert model.emitted == 100
