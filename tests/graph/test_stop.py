"""Stop details: modes, grace, idempotence, unknown runs, disconnects, thread policies."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio
import pytest

from tether import (
    CompiledGraph,
    InMemoryCheckpointer,
    Message,
    RunCancelledError,
    RunFinished,
    StateGraph,
    ThreadBusyError,
    UserError,
)

pytestmark = pytest.mark.anyio


def gated_app() -> tuple[CompiledGraph, dict[str, anyio.Event]]:
    """A two-step graph: `talk` streams a token then blocks; `after` appends one message."""
    gates = {"entered": anyio.Event(), "release": anyio.Event()}

    async def talk(state: dict[str, Any]) -> Any:
        yield "partial "
        gates["entered"].set()
        await gates["release"].wait()
        yield "rest"

    async def after(state: dict[str, Any]) -> Message:
        return Message.assistant("after")

    g = StateGraph()
    g.add_node("talk", talk)
    g.add_node("after", after)
    g.set_entry_point("talk")
    g.add_edge("talk", "after")
    return g.compile(InMemoryCheckpointer()), gates


async def test_stop_unknown_or_finished_runs_returns_false_and_never_raises() -> None:
    app, gates = gated_app()
    assert await app.astop(run_id="nope") is False
    assert await app.astop(thread_id="nope") is False
    gates["release"].set()
    await app.ainvoke("x", thread_id="t")
    assert await app.astop(thread_id="t") is False
    with pytest.raises(UserError, match="needs thread_id"):
        await app.astop()
    with pytest.raises(UserError, match="stop mode 'later'"):
        await app.astop(thread_id="t", mode="later")


async def test_stop_is_idempotent_and_the_first_reason_wins() -> None:
    app, gates = gated_app()
    handle = await app.astart("x", thread_id="t")
    await gates["entered"].wait()
    assert handle.stop(reason="first") is True
    assert handle.stop(reason="second") is True
    assert await app.astop(run_id=handle.run_id, reason="third") is True
    record = await app.aget_run(handle.run_id)
    assert record is not None and record.stop_reason == "first" and record.status == "cancelled"
    assert await app.astop(run_id=handle.run_id) is False


async def test_after_step_finishes_the_step_then_stops_at_the_boundary() -> None:
    app, gates = gated_app()
    handle = await app.astart("x", thread_id="t")
    await gates["entered"].wait()
    assert await app.astop(thread_id="t", mode="after_step", wait=False)
    gates["release"].set()
    with pytest.raises(RunCancelledError):
        await handle.result()
    contents = [(m.content, m.status) for m in (await app.aget_state("t")).values["messages"]]
    assert contents == [("x", "complete"), ("partial rest", "complete")]  # "after" never ran


async def test_after_step_escalates_to_now_when_the_grace_runs_out() -> None:
    app, gates = gated_app()
    handle = await app.astart("x", thread_id="t")
    await gates["entered"].wait()
    with anyio.fail_after(10):
        assert await app.astop(thread_id="t", mode="after_step", grace=0.01)
    record = await app.aget_run(handle.run_id)
    assert record is not None and record.stop_mode == "now"
    messages = (await app.aget_state("t")).values["messages"]
    assert (messages[-1].content, messages[-1].status) == ("partial ", "stopped")


async def test_stop_does_not_leak_into_the_next_run() -> None:
    app, gates = gated_app()
    assert not gates["release"].is_set()
    assert await app.astop(thread_id="t") is False  # nothing running: must not poison the next run
    gates["release"].set()
    result = await app.ainvoke("x", thread_id="t")
    assert result["messages"][-1].content == "after"


async def test_breaking_out_of_the_stream_is_a_disconnect_that_stops_the_run() -> None:
    app, _gates = gated_app()
    stream = app.astream("x", thread_id="t")
    async for event in stream:
        if event.type == "message_delta":
            break
    run_id = stream.run_id
    assert run_id is not None
    del stream
    handle = app.registry.local(run_id)
    if handle is not None:
        with anyio.fail_after(10):
            await handle.wait()
    record = await app.aget_run(run_id)
    assert record is not None and record.status == "cancelled"
    assert record.stop_requested_by == "disconnect"


async def test_closing_the_iterator_of_async_for_is_a_disconnect_at_once() -> None:
    # `aiter(stream)` is the stream itself: closing it (as `aclosing` or a framework that closes
    # what it iterates does) abandons the stream there and then, even while it is still held.
    app, _gates = gated_app()
    stream = app.astream("x", thread_id="t")
    async with contextlib.aclosing(aiter(stream)) as events:
        async for event in events:
            if event.type == "message_delta":
                break
    assert stream.handle is not None and stream.handle.token.requested
    with anyio.fail_after(10):
        await stream.handle.wait()
    assert stream.handle.status == "cancelled"
    assert stream.handle.record.stop_requested_by == "disconnect"


async def test_on_disconnect_continue_lets_the_run_finish_and_be_rejoined() -> None:
    app, gates = gated_app()
    stream = app.astream("x", thread_id="t", on_disconnect="continue")
    first = await stream.__anext__()
    await stream.aclose()
    gates["release"].set()
    rejoined = await app.ajoin(first.run_id, after_seq=first.seq)
    events = [e async for e in rejoined]
    assert events[0].seq == first.seq + 1
    assert isinstance(events[-1], RunFinished) and events[-1].status == "completed"
    logged = await app.ajoin(first.run_id, after_seq=3)
    assert [e.seq for e in [e async for e in logged]] == [e.seq for e in events if e.seq > 3]


async def test_cancelling_the_caller_of_astart_leaves_the_background_run_running() -> None:
    app, gates = gated_app()
    with anyio.move_on_after(10) as watchdog:
        async with anyio.create_task_group() as tg:
            handle = await app.astart("x", thread_id="t")
            await gates["entered"].wait()
            tg.cancel_scope.cancel()
    assert not watchdog.cancelled_caught
    # The caller's cancellation did not stop the background run: it is still running.
    assert handle.status == "running"
    await app.astop(run_id=handle.run_id)
    assert handle.status == "cancelled"


async def test_policy_reject_raises_a_clear_error() -> None:
    app, gates = gated_app()
    await app.astart("x", thread_id="t")
    await gates["entered"].wait()
    with pytest.raises(ThreadBusyError, match="multitask_strategy"):
        await app.astart("y", thread_id="t")
    with pytest.raises(UserError, match="'sometimes'"):
        await app.astart("y", thread_id="t", multitask_strategy="sometimes")
    await app.astop(thread_id="t")


async def test_policy_interrupt_keeps_the_old_work_and_runs_the_new_message() -> None:
    app, gates = gated_app()
    old = await app.astart("first", thread_id="t")
    await gates["entered"].wait()
    gates["release"] = anyio.Event()
    new = await app.astart("second", thread_id="t", multitask_strategy="interrupt")
    gates["release"].set()
    await new.result()
    record = await app.aget_run(old.run_id)
    assert (
        record is not None
        and record.stop_requested_by == "superseded"
        and record.status == "cancelled"
    )
    contents = [(m.content, m.status) for m in (await app.aget_state("t")).values["messages"]]
    assert contents[:3] == [("first", "complete"), ("partial ", "stopped"), ("second", "complete")]


async def test_policy_rollback_discards_the_old_work() -> None:
    app, gates = gated_app()
    old = await app.astart("first", thread_id="t")
    await gates["entered"].wait()
    new = await app.astart("second", thread_id="t", multitask_strategy="rollback")
    gates["release"].set()
    await new.result()
    record = await app.aget_run(old.run_id)
    assert record is not None and record.stop_mode == "rollback"
    contents = [m.content for m in (await app.aget_state("t")).values["messages"]]
    assert contents[0] == "second" and "first" not in contents


async def test_policy_enqueue_runs_the_new_message_after_the_old_one() -> None:
    app, gates = gated_app()
    old = await app.astart("first", thread_id="t")
    await gates["entered"].wait()
    new = await app.astart("second", thread_id="t", multitask_strategy="enqueue")
    assert new.status == "pending"
    gates["release"].set()
    await new.result()
    assert old.status == "completed"
    contents = [m.content for m in (await app.aget_state("t")).values["messages"]]
    assert contents == ["first", "partial rest", "after", "second", "partial rest", "after"]


async def test_a_thousand_stopped_runs_leak_no_tasks_or_registry_entries() -> None:
    app, gates = gated_app()
    gates["release"].set()
    await app.ainvoke("warm", thread_id="warm")
    baseline = len(asyncio.all_tasks())

    async def forever(state: dict[str, Any]) -> Any:
        yield "x"
        await anyio.sleep_forever()

    g = StateGraph()
    g.add_node("forever", forever)
    g.set_entry_point("forever")
    leaky = g.compile(app.checkpointer, registry=app.registry)
    for i in range(1000):
        handle = await leaky.astart("go", thread_id=f"t{i % 7}")
        await handle.wait_for_events(2)
        assert await leaky.astop(run_id=handle.run_id) is True
        assert handle.done
    assert app.registry.size() == 0
    await anyio.lowlevel.checkpoint()
    assert len(asyncio.all_tasks()) == baseline


async def test_the_live_record_shows_a_requested_stop_before_it_takes_effect() -> None:
    app, gates = gated_app()
    handle = await app.astart("x", thread_id="t")
    await gates["entered"].wait()
    assert await app.astop(thread_id="t", mode="after_step", reason="soon", wait=False)
    live = await app.aget_run(handle.run_id)
    assert live is not None
    assert live.status == "running"
    assert (live.stop_mode, live.stop_reason, live.stop_requested_by) == (
        "after_step",
        "soon",
        "user",
    )
    assert live.stop_requested_at is not None and live.stopped_at is None
    gates["release"].set()
    await handle.wait()
