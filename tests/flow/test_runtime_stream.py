"""The runtime stream: items as put, `stop_stream()` vs `stop()`, abandoning, detaching, timeouts,
and outside input with `wait_for` / `send`."""

from __future__ import annotations

import gc
import threading
from typing import Any

import anyio
import pytest

from tether import CustomEvent
from tether.flow import FlowData

from ._support import (
    WATCHDOG,
    check_run,
    check_stop_record,
    items_of,
    new_flow,
    settle,
    wait_ended,
)

pytestmark = pytest.mark.anyio


async def test_stop_stream_ends_the_stream_but_the_run_goes_on_and_completes() -> None:
    flow = new_flow()
    streamed = anyio.Event()
    go_on = anyio.Event()
    tail: list[str] = []

    async def steps(data: FlowData) -> str:
        for i in range(3):
            data.put_into_stream({"step": i + 1, "status": "working"})
        data.stop_stream()
        data.put_into_stream("dropped: the stream is closed")
        streamed.set()
        await go_on.wait()  # work that goes on after the stream ended
        tail.append("finished the work")
        return "done"

    flow.to(steps).end()
    stream = flow.aget_runtime_stream("start")
    items: list[Any] = []
    with anyio.fail_after(WATCHDOG):
        async for item in stream:
            items.append(item)
    assert items == [{"step": i, "status": "working"} for i in (1, 2, 3)]
    run = stream.run
    assert run is not None
    assert stream.finished is None  # the stream ended, not the run
    assert run.status == "running"
    go_on.set()
    final = await check_run(flow, run)
    assert final.status == "completed"  # never failed, never cancelled
    assert tail == ["finished the work"]
    assert items_of(list(run.events)) == items
    assert (await run.result())["stream"] == items


async def test_stop_ends_the_stream_with_a_cancelled_run_unlike_stop_stream() -> None:
    flow = new_flow()
    first = anyio.Event()

    async def forever(data: FlowData) -> None:
        data.put_into_stream("one")
        first.set()
        await anyio.sleep_forever()

    flow.to(forever)
    stream = flow.aget_runtime_stream()
    items: list[Any] = []
    with anyio.fail_after(WATCHDOG):
        async for item in stream:
            items.append(item)
            assert stream.stop(reason="stop button") is True
    assert items == ["one"]
    assert stream.finished is not None
    assert stream.finished.status == "cancelled"
    assert stream.finished.reason == "stop button"
    assert stream.run is not None
    await check_run(flow, stream.run)


async def test_the_stream_ends_with_the_run_when_no_handler_stops_it() -> None:
    flow = new_flow()

    async def fails(data: FlowData) -> None:
        data.put_into_stream("partial")
        raise KeyError("missing")

    flow.to(fails)
    stream = flow.aget_runtime_stream()
    with anyio.fail_after(WATCHDOG):
        items = [item async for item in stream]
    assert items == ["partial"]
    assert stream.finished is not None
    assert stream.finished.status == "failed"


async def test_a_consumer_that_abandons_the_stream_stops_the_run() -> None:
    flow = new_flow()
    cleaned = anyio.Event()

    async def endless(data: FlowData) -> None:
        try:
            i = 0
            while True:
                data.put_into_stream(i)
                i += 1
                await anyio.lowlevel.checkpoint()
        finally:
            cleaned.set()

    flow.to(endless)
    stream = flow.aget_runtime_stream()
    with anyio.fail_after(WATCHDOG):
        async for item in stream:
            if item == 5:
                break
        await stream.aclose()
        run = stream.run
        assert run is not None
        final = await check_run(flow, run)
        await cleaned.wait()
    assert final.status == "cancelled"
    check_stop_record(await flow.aget_run(run.run_id), by="disconnect")


async def test_a_consumer_cancelled_while_waiting_stops_the_run() -> None:
    flow = new_flow()

    async def waits(data: FlowData) -> None:
        data.put_into_stream("hello")
        await data.wait_for("never")

    flow.to(waits)
    stream = flow.aget_runtime_stream()
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                async for _ in stream:
                    pass

            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert stream.run is not None
        final = await check_run(flow, stream.run)
    assert final.status == "cancelled"
    check_stop_record(await flow.aget_run(stream.run.run_id), by="disconnect")


async def test_a_detached_stream_leaves_the_run_running_when_abandoned() -> None:
    flow = new_flow()

    async def asks(data: FlowData) -> str:
        data.put_into_stream("question?")
        answer = await data.wait_for("Answer")
        data.put_into_stream(answer)
        return str(answer)

    flow.to(asks).end()
    stream = flow.aget_runtime_stream(detached=True)
    with anyio.fail_after(WATCHDOG):
        async for item in stream:
            assert item == "question?"
            break
        await stream.aclose()
        run = stream.run
        assert run is not None
        await settle()
        assert run.status == "running"
        assert stream.send("Answer", "42") is True
        values = await run.result()
    assert values["result"] == "42"
    assert values["stream"] == ["question?", "42"]
    await check_run(flow, run)


async def test_a_timeout_stops_the_run_and_the_stream_says_timeout() -> None:
    flow = new_flow()

    async def stuck(data: FlowData) -> None:
        data.put_into_stream("started")
        await anyio.sleep_forever()

    flow.to(stuck)
    stream = flow.aget_runtime_stream(timeout=0.05)
    with anyio.fail_after(WATCHDOG):
        items = [item async for item in stream]
    assert items == ["started"]
    assert stream.timed_out is True
    assert stream.finished is not None
    assert stream.finished.status == "cancelled"
    assert stream.finished.reason == "timeout"
    assert stream.run is not None
    await check_run(flow, stream.run)
    check_stop_record(await flow.aget_run(stream.run.run_id), by="timeout")


async def test_wait_for_gets_values_sent_before_during_and_from_other_threads_in_order() -> None:
    flow = new_flow()
    waiting = anyio.Event()

    async def collect(data: FlowData) -> list[Any]:
        got = [await data.wait_for("In"), await data.wait_for("In")]
        waiting.set()
        got.append(await data.wait_for("In"))
        got.append(await data.wait_for("Other"))
        return got

    flow.to(collect).end()
    stream = flow.aget_runtime_stream()
    assert stream.send("In", "early-1") is True  # before the run starts: queued
    assert stream.send("In", "early-2") is True
    run = await stream.start()
    with anyio.fail_after(WATCHDOG):
        await waiting.wait()
        await anyio.to_thread.run_sync(lambda: run.send("In", "from a thread"))
        assert flow.send(run.run_id, "Other", {"by": "id"}) is True
        values = await run.result()
    assert values["result"] == ["early-1", "early-2", "from a thread", {"by": "id"}]
    assert run.send("In", "too late") is False
    assert flow.send(run.run_id, "In", "too late") is False
    assert flow.send("no-such-run", "In", 1) is False
    await stream.aclose()


async def test_sent_values_never_start_handlers_and_emitted_events_never_end_a_wait() -> None:
    flow = new_flow()
    started: list[Any] = []
    waiting = anyio.Event()

    async def waits(data: FlowData) -> Any:
        await data.emit("Ping", "emitted")  # a handler listens; the wait below must not see it
        waiting.set()
        return await data.wait_for("Ping")

    async def on_ping(data: FlowData) -> None:
        started.append(data.value)

    flow.to(waits).end()
    flow.when("Ping").to(on_ping)
    run = await flow.astart()
    with anyio.fail_after(WATCHDOG):
        await waiting.wait()
        run.send("Ping", "sent")
        values = await run.result()
    assert values["result"] == "sent"
    assert started == ["emitted"]


def test_the_sync_runtime_stream_reads_from_the_main_thread_and_stops_on_break() -> None:
    flow = new_flow()
    finished = threading.Event()

    async def endless(data: FlowData) -> None:
        try:
            i = 0
            while True:
                data.put_into_stream({"i": i})
                i += 1
                await anyio.lowlevel.checkpoint()
        finally:
            finished.set()

    flow.to(endless)
    with flow.get_runtime_stream() as stream:
        for item in stream:
            if item["i"] == 3:
                break
    assert finished.wait(WATCHDOG)
    assert stream.run is not None
    stream.wait()
    record = flow.get_run(stream.run.run_id)
    check_stop_record(record, by="disconnect")


def test_a_dropped_sync_runtime_stream_stops_its_run() -> None:
    flow = new_flow()
    finished = threading.Event()

    async def endless(data: FlowData) -> None:
        try:
            data.put_into_stream("first")
            await anyio.sleep_forever()
        finally:
            finished.set()

    flow.to(endless)
    stream = flow.get_runtime_stream()
    assert next(stream) == "first"
    run_id = stream.run_id
    assert run_id is not None
    del stream
    gc.collect()
    assert finished.wait(WATCHDOG)
    wait_ended(flow, run_id)
    check_stop_record(flow.get_run(run_id), by="disconnect")


def test_the_sync_runtime_stream_timeout_stops_the_run() -> None:
    flow = new_flow()

    async def stuck(data: FlowData) -> None:
        await anyio.sleep_forever()

    flow.to(stuck)
    stream = flow.get_runtime_stream(timeout=0.05)
    assert list(stream) == []
    assert stream.timed_out
    assert stream.finished is not None
    assert stream.finished.reason == "timeout"
    history = flow.get_state_history(stream.finished.thread_id)
    assert [(h.source, h.values) for h in history] == [
        ("stop", {"result": None, "stream": [], "state": {}})
    ]
    assert stream.run is not None
    assert [e for e in stream.run.events if isinstance(e, CustomEvent)] == []
