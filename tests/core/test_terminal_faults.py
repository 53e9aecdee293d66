"""The end of a run is an error boundary: user code or storage that fails while a run ends fails
that run only. Each test runs sibling runs on the same loop, which must complete untouched, and
then a new run on the faulty run's thread, which must complete too (S5).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

import anyio
import pytest

from tether import (
    END,
    START,
    CompiledGraph,
    InMemoryCheckpointer,
    RunFinished,
    RunHandle,
    StateGraph,
    StorageError,
)
from tether.events import Event
from tether.run import RunRecord
from tether.storage.base import Checkpoint

pytestmark = pytest.mark.anyio

WATCHDOG = 10.0


def picky(old: str | None, new: str) -> str:
    """The issue's reducer: it refuses the value "boom"."""
    if new == "boom":
        raise ValueError("reducer refuses boom")
    return (old or "") + new


class Text(TypedDict, total=False):
    text: Annotated[str, picky]


class Plain(TypedDict, total=False):
    k: int


def picky_app(entered: anyio.Event, gate: anyio.Event, checkpointer: Any = None) -> CompiledGraph:
    """The program from the issue, with its sleeps replaced by an event and a gate."""

    async def node(state: dict[str, Any]) -> Any:
        if state.get("text") == "":  # the first run: yields the value the reducer refuses
            yield {"text": "boom"}
            entered.set()
            await gate.wait()
        else:
            yield {"text": "ok"}

    g = StateGraph(Text)
    g.add_node("n", node)
    g.add_edge(START, "n")
    g.add_edge("n", END)
    return g.compile(checkpointer=checkpointer or InMemoryCheckpointer())


class Siblings:
    """Runs of another app on the same loop, blocked at a gate until `finish()`."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.entered = 0
        self.all_entered = anyio.Event()

        async def wait_then_answer(state: dict[str, Any]) -> dict[str, Any]:
            self.entered += 1
            if self.entered == 3:
                self.all_entered.set()
            await self.gate.wait()
            return {"k": 1}

        g = StateGraph(Plain)
        g.add_node("w", wait_then_answer)
        g.set_entry_point("w")
        self.app = g.compile(InMemoryCheckpointer())
        self.handles: list[RunHandle] = []

    async def start(self) -> None:
        self.handles = [await self.app.astart({}, thread_id=f"sibling-{i}") for i in range(3)]
        await self.all_entered.wait()

    async def finish(self) -> None:
        """Release the siblings: every one must complete, untouched by the faulty run."""
        self.gate.set()
        for handle in self.handles:
            assert await handle.result() == {"k": 1}
            assert handle.status == "completed"
        again = await self.app.ainvoke({}, thread_id="sibling-0")  # the loop still takes runs
        assert again == {"k": 1}


async def test_reducer_failing_during_a_now_stop_fails_the_run_and_spares_siblings() -> None:
    entered, gate = anyio.Event(), anyio.Event()
    app = picky_app(entered, gate)
    siblings = Siblings()
    with anyio.fail_after(WATCHDOG) as watchdog:
        await siblings.start()
        handle = await app.astart({"text": ""}, thread_id="t")
        await entered.wait()
        head = await app.aget_state("t")
        with anyio.fail_after(1):  # the bug: this stop never returned
            assert await app.astop(thread_id="t") is True
        record = await app.aget_run(handle.run_id)
        assert record is not None
        assert record.status == "failed"
        assert record.error is not None and "reducer refuses boom" in record.error
        assert record.stop_requested_by == "user"  # the stop is still recorded (S7)
        final = handle.events[-1]
        assert isinstance(final, RunFinished)
        assert final.status == "failed"
        assert final.reason == "stop_failed"
        assert sum(isinstance(e, RunFinished) for e in handle.events) == 1
        # The last good checkpoint stays the thread's head.
        assert (await app.aget_state("t")).checkpoint_id == head.checkpoint_id
        await siblings.finish()
        # The thread takes a new run at once (S5).
        assert await app.ainvoke({"text": "ok"}, thread_id="t") == {"text": "okok"}
    assert not watchdog.cancel_called
    assert app.registry.size() == 0


async def test_reducer_failing_at_an_after_step_stop_fails_the_run_and_spares_siblings() -> None:
    entered, gate = anyio.Event(), anyio.Event()
    app = picky_app(entered, gate)
    siblings = Siblings()
    with anyio.fail_after(WATCHDOG) as watchdog:
        await siblings.start()
        handle = await app.astart({"text": ""}, thread_id="t")
        await entered.wait()
        assert await app.astop(thread_id="t", mode="after_step", wait=False) is True
        gate.set()  # the step ends; its update meets the reducer, which raises
        await handle.wait()
        assert handle.status == "failed"
        record = await app.checkpointer.get_run(handle.run_id)
        assert record is not None and record.status == "failed"
        assert record.error is not None and "reducer refuses boom" in record.error
        assert record.stop_mode == "after_step"
        await siblings.finish()
        assert await app.ainvoke({"text": "ok"}, thread_id="t") == {"text": "okok"}
    assert not watchdog.cancel_called
    assert app.registry.size() == 0


async def test_parallel_nodes_writing_one_plain_key_stopped_mid_step_fail_the_run() -> None:
    b_entered, gate = anyio.Event(), anyio.Event()

    async def a(state: dict[str, Any]) -> dict[str, Any]:
        return {"k": 1}

    async def b(state: dict[str, Any]) -> Any:
        yield {"k": 2}
        b_entered.set()
        await gate.wait()

    g = StateGraph(Plain)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    app = g.compile(InMemoryCheckpointer())
    siblings = Siblings()
    with anyio.fail_after(WATCHDOG) as watchdog:
        await siblings.start()
        handle = await app.astart({}, thread_id="t")
        await b_entered.wait()
        await anyio.wait_all_tasks_blocked()  # `a` finished its update too
        assert await app.astop(thread_id="t") is True
        assert handle.status == "failed"
        assert handle.record.error is not None and "both wrote 'k'" in handle.record.error
        await siblings.finish()
        gate.set()
        b_entered = anyio.Event()
        assert await app.astop(thread_id="t") is False
    assert not watchdog.cancel_called
    assert app.registry.size() == 0


class FaultyCommits(InMemoryCheckpointer):
    """In-memory storage whose commit of a run's end stalls or raises while `fault` is set."""

    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault  # "stall", "raise", or "" for none
        self.stalled = anyio.Event()
        self.ended: list[str] = []  # run ids whose terminal record was stored
        self.stored_end = anyio.Event()

    async def commit(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        events: Sequence[Event] = (),
        run: RunRecord | None = None,
    ) -> None:
        ending = run is not None and not run.is_active
        if ending and self.fault == "stall":
            self.stalled.set()
            await anyio.sleep_forever()
        if ending and self.fault == "raise":
            raise StorageError("the database is down")
        await super().commit(checkpoint=checkpoint, events=events, run=run)
        if ending and run is not None:
            self.ended.append(run.run_id)
            self.stored_end.set()


@pytest.mark.parametrize("fault", ["stall", "raise"])
async def test_a_final_commit_that_fails_still_ends_the_run_and_is_repaired(fault: str) -> None:
    storage = FaultyCommits(fault)
    entered, gate = anyio.Event(), anyio.Event()
    app = picky_app(entered, gate, storage)
    app.engine.commit_deadline = 0.2  # a stalled commit: give up soon
    siblings = Siblings()
    with anyio.fail_after(WATCHDOG) as watchdog:
        await siblings.start()
        handle = await app.astart({"text": "x"}, thread_id="t")  # `x`: runs to its end at once
        await handle.wait()
        # The stream still ends with exactly one run_finished: failed, with a clear reason.
        final = handle.events[-1]
        assert isinstance(final, RunFinished)
        assert sum(isinstance(e, RunFinished) for e in handle.events) == 1
        assert final.status == "failed"
        assert final.reason == "storage_failed"
        assert final.error is not None and "could not be stored" in final.error
        assert handle.record.status == "failed"
        assert app.registry.size() == 0  # the thread was released
        with pytest.raises(Exception, match="could not be stored"):
            await handle.result()
        await siblings.finish()
        # Storage answers again: the record is repaired by the engine, never left `running`.
        storage.fault = ""
        await storage.stored_end.wait()
        assert handle.run_id in storage.ended
        stored = await storage.get_run(handle.run_id)
        assert stored is not None
        assert stored.status == "failed"
        logged = await storage.read_events(handle.run_id)
        assert [e.seq for e in logged] == list(range(len(logged)))
        assert isinstance(logged[-1], RunFinished) and logged[-1].status == "failed"
        assert app.engine._repairs == {}
        # The thread takes a new run.
        assert await app.ainvoke({"text": "ok"}, thread_id="t") == {"text": "xokokok"}
    assert not watchdog.cancel_called


async def test_a_pending_repair_is_flushed_at_the_next_storage_use() -> None:
    storage = FaultyCommits("raise")
    entered, gate = anyio.Event(), anyio.Event()
    app = picky_app(entered, gate, storage)
    with anyio.fail_after(WATCHDOG) as watchdog:
        handle = await app.astart({"text": "x"}, thread_id="t")
        await handle.wait()
        assert handle.run_id in app.engine._repairs
        storage.fault = ""
        await app.engine.ensure_ready()  # every API call passes here
        stored = await storage.get_run(handle.run_id)
        assert stored is not None and stored.status == "failed"
        assert app.engine._repairs == {}
    assert not watchdog.cancel_called


def test_cancelling_the_loops_host_records_the_run_cancelled_by_shutdown() -> None:
    storage = InMemoryCheckpointer()
    entered = threading.Event()

    async def block(state: dict[str, Any]) -> Any:
        yield {"k": 1}
        entered.set()
        await anyio.sleep_forever()

    g = StateGraph(Plain)
    g.add_node("block", block)
    g.set_entry_point("block")
    app = g.compile(storage)
    started: list[str] = []

    async def start_and_leave() -> None:
        handle = await app.astart({}, thread_id="t")
        while not entered.is_set():
            await anyio.wait_all_tasks_blocked()
        started.append(handle.run_id)
        # Returning ends asyncio.run, which cancels the loop's host and so the run.

    asyncio.run(start_and_leave())
    [run_id] = started

    async def stored() -> tuple[RunRecord | None, list[Event]]:
        return await storage.get_run(run_id), await storage.read_events(run_id)

    record, events = asyncio.run(stored())
    assert record is not None
    assert record.status == "cancelled"
    assert record.stop_requested_by == "shutdown"
    assert record.stopped_at is not None
    assert isinstance(events[-1], RunFinished)
    assert events[-1].status == "cancelled"
    assert events[-1].reason == "shutdown"
