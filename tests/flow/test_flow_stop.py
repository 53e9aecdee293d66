"""The stop contract (S1–S8) for flows: handlers, pending emissions, worker threads, stored state."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from tether import CustomEvent, NodeStarted, RunCancelledError
from tether.flow import FlowData, FlowRun

from ._support import (
    WATCHDOG,
    Log,
    check_run,
    check_stop_record,
    items_of,
    new_flow,
    settle,
    task_count,
)

pytestmark = pytest.mark.anyio


def assert_nothing_after(log: Log, terminal_seq: int) -> None:
    """S3: every recorded handler activity happened before the terminal event."""
    late = [(what, seq) for what, seq in log.entries if seq > terminal_seq]
    assert late == [], f"handler code ran after the terminal event: {late!r}"


async def test_stopping_a_1000_event_loop_midway_runs_no_handler_after_the_terminal_event() -> None:
    flow = new_flow()
    log = Log(flow)
    halfway = anyio.Event()
    never = anyio.Event()

    async def tick(data: FlowData) -> None:
        log.add(data, f"tick:{data.value}")
        data.put_into_stream(data.value)
        if data.value == 500:
            halfway.set()
            try:
                await never.wait()  # the stop finds the loop here
            finally:
                log.add(data, "tick:finally")
        if data.value < 999:
            await data.emit("Tick", data.value + 1)

    flow.to(tick)
    flow.when("Tick").to(tick)
    baseline = task_count()
    with anyio.fail_after(WATCHDOG):
        run = await flow.astart(0, thread_id="loop")
        await halfway.wait()
        assert await flow.astop(run_id=run.run_id, reason="enough") is True
    final = await check_run(flow, run)
    assert final.status == "cancelled"
    assert final.reason == "enough"
    check_stop_record(await flow.aget_run(run.run_id))

    names = log.names()
    assert names == [*(f"tick:{i}" for i in range(501)), "tick:finally"]
    assert_nothing_after(log, final.seq)
    never.set()
    await settle()
    assert len(log.entries) == 502  # still nothing, with every gate open
    # Items already streamed are kept, in the event log and in the stored values.
    stored = await flow.checkpointer.read_events(run.run_id)
    assert items_of(stored) == list(range(501))
    assert (await flow.aget_state("loop")).values["stream"] == list(range(501))
    # S6: nothing leaks.
    assert flow.registry.size() == 0
    await settle()
    assert task_count() <= baseline + 1  # + the host supervisor, once per loop


async def test_pending_emissions_are_cancelled_before_any_of_their_handlers_runs() -> None:
    flow = new_flow()
    log = Log(flow)
    holder: dict[str, FlowRun] = {}
    ready = anyio.Event()

    async def burst(data: FlowData) -> None:
        await ready.wait()
        for j in range(10):
            data.emit("Side", j)  # not awaited: ten chains are pending, none has run
        holder["run"].stop(reason="mid-burst")  # the run's scope is cancelled right here
        log.add(data, "burst:after-stop")  # synchronous code still runs until the next await
        await anyio.lowlevel.checkpoint()
        log.add(data, "burst:unreachable")

    async def side(data: FlowData) -> None:
        log.add(data, f"side:{data.value}")

    flow.to(burst)
    flow.when("Side").to(side)
    run = await flow.astart()
    holder["run"] = run
    ready.set()
    final = await check_run(flow, run)
    assert final.status == "cancelled"
    assert final.reason == "mid-burst"
    assert log.names() == ["burst:after-stop"]
    assert [e.node for e in run.events if isinstance(e, NodeStarted)] == ["burst"]


async def test_a_stop_while_a_handler_awaits_a_long_call_ends_the_run_at_once() -> None:
    flow = new_flow()
    log = Log(flow)
    entered = anyio.Event()

    async def slow(data: FlowData) -> None:
        data.put_into_stream("thinking")
        data.state["partial"] = "half an answer"
        entered.set()
        try:
            await anyio.sleep_forever()  # a model call, a tool, a long HTTP request
        finally:
            log.add(data, "slow:finally")
            data.state["closed"] = True  # recorded by the stop's checkpoint

    flow.to(slow)
    run = await flow.astart(None, thread_id="t")
    with anyio.fail_after(WATCHDOG):
        await entered.wait()
        assert await run.astop(reason="user pressed stop") is True
    final = await check_run(flow, run)
    assert final.status == "cancelled"
    assert log.names() == ["slow:finally"]
    assert_nothing_after(log, final.seq)
    # S2: idempotent, and False once the run ended.
    assert run.stop() is False
    assert await flow.astop(run_id=run.run_id) is False
    assert await flow.astop(thread_id="t") is False
    with pytest.raises(RunCancelledError):
        await run.result()
    # S4: the stored values hold what the stopped handler produced.
    values = (await flow.aget_state("t")).values
    assert values["stream"] == ["thinking"]
    assert values["state"] == {"partial": "half an answer", "closed": True}
    # S5: the thread takes a new run at once, and it sees the stored state.
    seen: list[dict[str, Any]] = []

    async def after(data: FlowData) -> None:
        seen.append(dict(data.state))

    flow2 = new_flow()
    flow2.checkpointer = flow2.engine.checkpointer = flow.checkpointer
    flow2.registry = flow2.engine.registry = flow.registry
    flow2.to(after)
    with anyio.fail_after(WATCHDOG):
        await flow2.ainvoke(None, thread_id="t")
    assert seen == [{"partial": "half an answer", "closed": True}]
    assert flow.registry.size() == 0


async def test_a_sync_handler_is_abandoned_on_stop_and_its_later_output_is_discarded() -> None:
    flow = new_flow()
    entered = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def blocking(data: FlowData) -> str:
        data.put_into_stream("before")
        entered.set()
        release.wait(WATCHDOG)
        assert data.stop_requested
        data.put_into_stream("after the stop")  # dropped
        data.emit("Next", 1)  # dropped
        finished.set()
        return "discarded"

    ran_next: list[Any] = []

    async def next_handler(data: FlowData) -> None:
        ran_next.append(data.value)

    flow.to(blocking).end()
    flow.when("Next").to(next_handler)
    run = await flow.astart(None, thread_id="t")
    with anyio.fail_after(WATCHDOG):
        await anyio.to_thread.run_sync(entered.wait, WATCHDOG)
        assert await run.astop() is True  # returns while the thread is still blocked
    final = await check_run(flow, run)
    assert final.status == "cancelled"
    assert not finished.is_set()
    count = len(run.events)
    release.set()
    with anyio.fail_after(WATCHDOG):
        await anyio.to_thread.run_sync(finished.wait, WATCHDOG)
    await settle()
    assert len(run.events) == count
    assert ran_next == []
    values = (await flow.aget_state("t")).values
    assert values == {"result": None, "stream": ["before"], "state": {}}


async def test_a_stop_before_the_run_starts_wins_and_no_handler_runs() -> None:
    flow = new_flow()
    log = Log(flow)
    blocked = anyio.Event()

    async def hold(data: FlowData) -> None:
        blocked.set()
        await data.wait_for("never")

    async def queued(data: FlowData) -> None:
        log.add(data, "queued")

    holder_flow = new_flow()
    holder_flow.checkpointer = holder_flow.engine.checkpointer = flow.checkpointer
    holder_flow.registry = holder_flow.engine.registry = flow.registry
    holder_flow.to(hold)
    flow.to(queued)
    with anyio.fail_after(WATCHDOG):
        blocker = await holder_flow.astart(None, thread_id="t")
        await blocked.wait()
        run = await flow.astart(None, thread_id="t", multitask_strategy="enqueue")
        assert await flow.astop(run_id=run.run_id, wait=False) is True
        final = await check_run(flow, run)
        assert await blocker.astop() is True
    assert final.status == "cancelled"
    assert [e.type for e in run.events] == ["run_finished"]
    assert log.entries == []


async def test_after_step_lets_the_running_handler_finish_and_starts_no_new_one() -> None:
    flow = new_flow()
    log = Log(flow)
    entered = anyio.Event()
    gate = anyio.Event()

    async def first(data: FlowData) -> str:
        entered.set()
        await gate.wait()
        log.add(data, "first:end")
        await data.emit("Next", 1)
        return "first"

    async def second(data: FlowData) -> None:
        log.add(data, "second")

    flow.to(first).to(second)
    flow.when("Next").to(second)
    run = await flow.astart(None, thread_id="t")
    with anyio.fail_after(WATCHDOG):
        await entered.wait()
        assert await flow.astop(thread_id="t", mode="after_step", wait=False) is True
        gate.set()
    final = await check_run(flow, run)
    assert final.status == "cancelled"
    assert log.names() == ["first:end"]
    check_stop_record(await flow.aget_run(run.run_id), mode="after_step")


async def test_rollback_restores_the_state_from_before_the_run() -> None:
    flow = new_flow()
    entered = anyio.Event()

    async def write(data: FlowData) -> None:
        data.state["n"] = data.state.get("n", 0) + 1
        data.put_into_stream(data.state["n"])
        if data.state["n"] == 2:
            await data.wait_for("go")  # commits a checkpoint, then waits
            entered.set()
            await anyio.sleep_forever()

    flow.to(write)
    with anyio.fail_after(WATCHDOG):
        await flow.ainvoke(None, thread_id="t")
        before = (await flow.aget_state("t")).values
        run = await flow.astart(None, thread_id="t")
        async for event in run.events_after(-1):
            if event.type == "checkpoint":  # wait_for() stored the run's progress, then waited
                break
        assert run.send("go") is True
        await entered.wait()
        assert (await flow.aget_state("t")).values["state"] == {"n": 2}
        assert await flow.astop(run_id=run.run_id, mode="rollback") is True
    final = await check_run(flow, run)
    assert final.status == "cancelled"
    assert (
        (await flow.aget_state("t")).values
        == before
        == {
            "result": None,
            "stream": [1],
            "state": {"n": 1},
        }
    )
    check_stop_record(await flow.aget_run(run.run_id), mode="rollback")


async def test_a_handler_failure_cancels_its_siblings() -> None:
    flow = new_flow()
    log = Log(flow)
    waiting = anyio.Event()

    async def waits(data: FlowData) -> None:
        try:
            waiting.set()
            await anyio.sleep_forever()
        finally:
            log.add(data, "waits:finally")

    async def fails(data: FlowData) -> None:
        await waiting.wait()
        raise RuntimeError("broken tool")

    flow.to(waits)
    flow.to(fails)
    run = await flow.astart()
    final = await check_run(flow, run)
    assert final.status == "failed"
    assert "broken tool" in (final.error or "")
    assert log.names() == ["waits:finally"]
    assert_nothing_after(log, final.seq)


def test_the_sync_stop_works_from_another_thread_than_the_run() -> None:
    flow = new_flow()
    entered = threading.Event()

    async def slow(data: FlowData) -> None:
        entered.set()
        await anyio.sleep_forever()

    flow.to(slow)
    run = flow.start(None, thread_id="sync-stop")
    assert entered.wait(WATCHDOG)
    results: list[bool] = []
    stopper = threading.Thread(target=lambda: results.append(flow.stop(thread_id="sync-stop")))
    stopper.start()
    stopper.join(WATCHDOG)
    assert results == [True]
    record = flow.get_run(run.run_id)
    check_stop_record(record)
    events = list(run.events)
    assert events[-1].type == "run_finished"
    assert [e for e in events if isinstance(e, CustomEvent)] == []


async def test_after_step_while_a_handler_waits_for_input_escalates_when_its_grace_runs_out() -> (
    None
):
    flow = new_flow()
    log = Log(flow)

    async def asks(data: FlowData) -> None:
        try:
            await data.wait_for("Answer")  # nobody answers
        finally:
            log.add(data, "asks:finally")

    flow.to(asks)
    run = await flow.astart()
    with anyio.fail_after(WATCHDOG):
        async for event in run.events_after(-1):
            if event.type == "checkpoint":  # wait_for() stored the progress and now waits
                break
        assert await flow.astop(run_id=run.run_id, mode="after_step", grace=0.01) is True
    final = await check_run(flow, run)
    assert final.status == "cancelled"
    assert log.names() == ["asks:finally"]
    assert_nothing_after(log, final.seq)


async def test_after_step_requested_before_a_wait_ends_the_chain_there() -> None:
    flow = new_flow()
    log = Log(flow)
    entered = anyio.Event()
    gate = anyio.Event()

    async def asks(data: FlowData) -> None:
        entered.set()
        await gate.wait()
        log.add(data, "asks:before-wait")
        await data.wait_for("Answer")  # the clean boundary: the chain ends here
        log.add(data, "asks:unreachable")

    flow.to(asks)
    run = await flow.astart(None, thread_id="t")
    with anyio.fail_after(WATCHDOG):
        await entered.wait()
        assert await flow.astop(run_id=run.run_id, mode="after_step", wait=False) is True
        gate.set()
    final = await check_run(flow, run)
    assert final.status == "cancelled"
    assert log.names() == ["asks:before-wait"]
    check_stop_record(await flow.aget_run(run.run_id), mode="after_step")
