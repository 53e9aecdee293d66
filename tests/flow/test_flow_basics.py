"""Flows without stops: wiring, values, events, sync handlers, stored state, typed events."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from tether import (
    CustomEvent,
    NodeFinished,
    NodeStarted,
    RunFailedError,
    RunFinished,
    UserError,
    _portal,
)
from tether.events import Event
from tether.flow import START, FlowData

from ._support import WATCHDOG, check_run, check_terminal, items_of, new_flow

pytestmark = pytest.mark.anyio


async def test_chain_passes_each_return_value_on_and_end_sets_the_result() -> None:
    flow = new_flow()
    seen: list[tuple[str, Any, str]] = []

    async def double(data: FlowData) -> int:
        seen.append(("double", data.value, data.event))
        return int(data.value) * 2

    def add_one(data: FlowData) -> int:  # sync: runs in a worker thread
        seen.append(("add_one", data.value, data.event))
        return int(data.value) + 1

    flow.to(double).to(add_one).end()
    run = await flow.astart(20)
    with anyio.fail_after(WATCHDOG):
        values = await run.result()
    assert values == {"result": 41, "stream": [], "state": {}}
    assert seen == [("double", 20, START), ("add_one", 40, START)]
    final = await check_run(flow, run)
    assert final.status == "completed"
    started = [e.node for e in run.events if isinstance(e, NodeStarted)]
    finished = [e.node for e in run.events if isinstance(e, NodeFinished)]
    assert started == finished == ["double", "add_one"]


async def test_emit_starts_every_chain_of_the_event_with_its_value() -> None:
    flow = new_flow()
    got: list[tuple[str, Any]] = []

    async def first(data: FlowData) -> None:
        await data.emit("Fan", {"n": 1})
        await data.async_emit("Nobody", "listens")  # dropped, not an error

    async def left(data: FlowData) -> None:
        got.append(("left", data.value))

    async def right(data: FlowData) -> None:
        got.append(("right", data.value))

    flow.to(first)
    flow.when("Fan").to(left)
    flow.when("Fan").to(right, name="right_side")
    with anyio.fail_after(WATCHDOG):
        await flow.ainvoke("go")
    assert sorted(got) == [("left", {"n": 1}), ("right", {"n": 1})]


async def test_a_loop_through_events_completes_when_no_handler_is_left() -> None:
    flow = new_flow()
    calls: list[int] = []

    async def tick(data: FlowData) -> int:
        calls.append(data.value)
        if data.value < 300:
            await data.emit("Tick", data.value + 1)
        return int(data.value)

    flow.to(tick)
    flow.when("Tick").to(tick)
    run = await flow.astart(0)
    final = await check_run(flow, run)
    assert final.status == "completed"
    assert calls == list(range(301))


async def test_a_sync_handler_runs_in_a_worker_thread_and_can_stream_and_emit() -> None:
    flow = new_flow()
    loop_thread = threading.get_ident()
    threads: list[int] = []
    got: list[Any] = []

    def work(data: FlowData) -> str:
        threads.append(threading.get_ident())
        data.put_into_stream("from a thread")
        data.emit("Done", 7)  # no await needed in a sync handler
        return "worked"

    async def done(data: FlowData) -> None:
        got.append(data.value)

    flow.to(work).end()
    flow.when("Done").to(done)
    run = await flow.astart()
    with anyio.fail_after(WATCHDOG):
        values = await run.result()
    assert threads
    assert threads[0] != loop_thread
    assert got == [7]
    assert values["result"] == "worked"
    assert values["stream"] == ["from a thread"]
    await check_run(flow, run)


async def test_a_handler_that_raises_fails_the_run_with_its_error() -> None:
    flow = new_flow()

    async def bad(data: FlowData) -> None:
        data.put_into_stream("before")
        raise ValueError("boom")

    flow.to(bad)
    run = await flow.astart()
    final = await check_run(flow, run)
    assert final.status == "failed"
    assert final.error is not None
    assert "boom" in final.error
    with pytest.raises(RunFailedError) as info:
        await run.result()
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert "in flow handler 'bad'" in (cause.__notes__ or [])
    record = await flow.aget_run(run.run_id)
    assert record is not None
    assert record.status == "failed"


async def test_state_is_checkpointed_and_the_next_run_on_the_thread_sees_it() -> None:
    flow = new_flow()

    async def count(data: FlowData) -> int:
        data.state["n"] = data.state.get("n", 0) + 1
        data.put_into_stream(data.state["n"])
        return int(data.state["n"])

    flow.to(count).end()
    with anyio.fail_after(WATCHDOG):
        first = await flow.ainvoke(None, thread_id="t")
        second = await flow.ainvoke(None, thread_id="t")
    assert first == {"result": 1, "stream": [1], "state": {"n": 1}}
    assert second == {"result": 2, "stream": [2], "state": {"n": 2}}
    snapshot = await flow.aget_state("t")
    assert snapshot.values == second
    assert (await flow.aget_state("never-ran")).values == {
        "result": None,
        "stream": [],
        "state": {},
    }


async def test_a_stream_item_that_cannot_be_stored_is_rejected_where_it_is_put() -> None:
    flow = new_flow()

    async def bad(data: FlowData) -> None:
        data.put_into_stream({"ok": 1})
        data.put_into_stream(object())

    flow.to(bad)
    run = await flow.astart()
    final = await check_run(flow, run)
    assert final.status == "failed"
    assert final.error is not None
    assert "cannot store" in final.error
    assert items_of(list(run.events)) == [{"ok": 1}]


async def test_wiring_mistakes_raise_user_errors_that_say_what_to_do() -> None:
    flow = new_flow()

    async def agen(data: FlowData) -> Any:
        yield 1

    async def fine(data: FlowData) -> None:
        return None

    with pytest.raises(UserError, match="put_into_stream"):
        flow.to(agen)
    with pytest.raises(UserError, match="function"):
        flow.to(42)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="event name"):
        flow.when("")
    chain = flow.to(fine).end()
    with pytest.raises(UserError, match="already ended"):
        chain.to(fine)
    with pytest.raises(UserError, match="no handler"):
        flow.when("Empty").end()
    with pytest.raises(UserError, match="timeout"):
        flow.aget_runtime_stream(timeout=0)


async def test_astream_yields_typed_events_items_as_custom_events_and_run_finished_last() -> None:
    flow = new_flow()

    async def steps(data: FlowData) -> str:
        for i in range(3):
            data.put_into_stream({"step": i + 1})
        return "done"

    flow.to(steps).end()
    events: list[Event] = []
    with anyio.fail_after(WATCHDOG):
        async for event in flow.astream("go"):
            events.append(event)
    final = check_terminal(events)
    assert isinstance(events[-1], RunFinished)
    assert final.status == "completed"
    customs = [e for e in events if isinstance(e, CustomEvent)]
    assert [e.data for e in customs] == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert {e.node for e in customs} == {"steps"}


def test_the_sync_api_runs_a_flow_on_the_background_loop() -> None:
    flow = new_flow()

    async def echo(data: FlowData) -> Any:
        data.put_into_stream(data.value)
        return data.value

    flow.to(echo).end()
    assert flow.invoke("hi")["result"] == "hi"
    events = list(flow.stream("there"))
    assert items_of(events) == ["there"]
    check_terminal(events)


def test_a_sync_started_run_takes_input_from_the_main_thread() -> None:
    flow = new_flow()

    async def ask(data: FlowData) -> Any:
        return await data.wait_for("Answer")

    flow.to(ask).end()
    run = flow.start("question")
    assert run.send("Answer", 42) is True
    values = _portal.call(run.result)  # the sync API has no result(); wait on tether's loop
    assert values["result"] == 42
    record = flow.get_run(run.run_id)
    assert record is not None
    assert record.status == "completed"
    assert run.send("Answer", 43) is False  # the run ended
    assert flow.stop(run_id=run.run_id) is False
