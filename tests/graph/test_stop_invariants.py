"""The stop contract, checked by invariant at random stop points (hypothesis).

Each example builds a fresh graph (an async-generator node, then a sync node in a worker thread in
parallel with a node blocked in a long await, then an async router, then a final node), stops one
run at a random point with a random mode, and checks S1–S7 afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, TypedDict

import anyio
from anyio.lowlevel import checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import InMemoryCheckpointer, MessageDeltaEvent, NodeStarted, StateGraph
from tether.events import Event

from ._scenario import TOKENS, Probe, build, check_stop_record, check_terminal, check_transcript

POINTS = ["before_start", "agen", "parallel", "between_steps", "after_completion"]


async def wait_until(flag: Any) -> None:
    if hasattr(flag, "is_set") and not isinstance(flag, anyio.Event):
        await anyio.to_thread.run_sync(flag.wait, 10)
    else:
        await flag.wait()


async def scenario(point: str, mode: str, k: int, by_thread: bool) -> None:
    probe = Probe()
    app = build(probe)
    thread = "t"
    baseline_tasks = len(asyncio.all_tasks())
    # A completed first turn, so that rollback has a non-empty state to return to.
    probe.release_all()
    await app.ainvoke("first", thread_id=thread)
    before = (await app.aget_state(thread)).values
    probe = Probe()
    app = build(probe, app.checkpointer)

    blocker = None
    if point == "before_start":  # a run holds the thread, so ours waits in the queue
        blocker_app = build(Probe(), app.checkpointer)
        blocker_app.engine.registry = blocker_app.registry = app.registry
        blocker = await blocker_app.astart("blocker", thread_id=thread)
    if point == "after_completion":
        probe.release_all()
    if point in ("parallel", "between_steps"):
        probe.agen_gate.set()

    events: list[Event] = []
    stream = app.astream("go", thread_id=thread, multitask_strategy="enqueue")
    handle = await stream.start()
    stop_result = None
    if point == "before_start":
        stop_result = await app.astop(run_id=handle.run_id, mode=mode, wait=False)
    with anyio.fail_after(20):
        async for event in stream:
            events.append(event)
            if stop_result is not None:
                continue
            hit = (
                (
                    point == "agen"
                    and isinstance(event, MessageDeltaEvent)
                    and _count_deltas(events) == k
                )
                or (point == "parallel" and isinstance(event, NodeStarted) and event.node == "slow")
                or (
                    point == "between_steps"
                    and isinstance(event, NodeStarted)
                    and event.node == "slow"
                )
            )
            if not hit:
                continue
            if point == "parallel":
                await probe.slow_entered.wait()
                await wait_until(probe.sync_entered)
            if point == "between_steps":
                probe.slow_gate.set()
                probe.sync_gate.set()
                await probe.router_entered.wait()
            target = {"thread_id": thread} if by_thread else {"run_id": handle.run_id}
            stop_result = await app.astop(**target, mode=mode, wait=mode != "after_step")
            if mode == "after_step":
                probe.release_all()
        if blocker is not None:
            await blocker.astop()

    final = check_terminal(events)  # S1
    terminal_log = len(probe.log)
    record = await app.aget_run(handle.run_id)
    assert record is not None

    if point == "after_completion":
        assert final.status == "completed"
        assert await app.astop(run_id=handle.run_id) is False  # S2: finished runs are not stopped
    else:
        assert stop_result is True  # S2
        assert final.status == "cancelled"
        check_stop_record(record, mode=mode)  # S7
        assert await app.astop(run_id=handle.run_id) is False  # S2: idempotent after the end

    # S3: no node code runs after the terminal event (abandoned sync code excepted).
    probe.release_all()
    if probe.sync_entered.is_set():
        await wait_until(probe.sync_exited)
    for _ in range(5):
        await checkpoint()
    late = [entry for entry in probe.log[terminal_log:] if not entry.startswith("sync")]
    assert late == []
    assert len(handle.events) == len(events)

    # S4: consistent state.
    state = (await app.aget_state(thread)).values
    check_transcript(state["messages"])
    if point == "before_start":  # it never ran: it wrote no checkpoint and sent no run_started
        history = await app.aget_state_history(thread)
        assert all(snap.run_id != handle.run_id for snap in history)
        assert [e.type for e in events] == ["run_finished"]
        assert record.started_at is None
    elif final.status == "cancelled" and mode == "rollback":
        assert state == before
    elif final.status == "cancelled":
        new = [m for m in state["messages"][len(before["messages"]) :] if m.role == "assistant"]
        if mode == "now" and point in ("agen", "parallel"):
            assert "sync result" not in {m.content for m in new}  # the abandoned thread's result
        if point == "agen" and mode == "now":
            partial = [m for m in new if m.status == "stopped"]
            assert len(partial) == 1 and partial[0].content.startswith("tok0")
            assert len(partial[0].content.split()) >= k

    # S5: the thread accepts a new run at once, and it sees the stopped answer.
    probe.release_all()
    result = await app.ainvoke("next", thread_id=thread)
    assert result["messages"][-1].content == "done"
    assert result["messages"][: len(state["messages"])] == state["messages"]

    # S6: nothing leaks.
    assert app.registry.size() == 0
    for _ in range(5):
        await checkpoint()
    assert len(asyncio.all_tasks()) <= baseline_tasks + 1  # + the host supervisor, once per loop


def _count_deltas(events: list[Event]) -> int:
    return sum(isinstance(e, MessageDeltaEvent) for e in events)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    point=st.sampled_from(POINTS),
    mode=st.sampled_from(["now", "after_step", "rollback"]),
    k=st.integers(1, TOKENS),
    by_thread=st.booleans(),
)
def test_stop_anywhere_keeps_the_contract(point: str, mode: str, k: int, by_thread: bool) -> None:
    anyio.run(scenario, point, mode, k, by_thread)


class Picky(TypedDict, total=False):
    text: Annotated[str, picky]


def picky(old: str | None, new: str) -> str:
    """A user reducer that raises for one value: user code that fails while a run is stopped."""
    if new == "boom":
        raise ValueError("reducer refuses boom")
    return (old or "") + new


async def faulty_scenario(point: str, mode: str, by_thread: bool) -> None:
    """A stop whose ending runs a raising reducer: the run fails (or is cancelled, where no user
    code runs at the end), the thread keeps its last good checkpoint and takes a new run."""
    entered, gate = anyio.Event(), anyio.Event()
    held, hold_gate = anyio.Event(), anyio.Event()

    async def node(state: dict[str, Any]) -> Any:
        text = state.get("text", "")
        if text.endswith("go"):  # yields what the reducer refuses, then blocks
            yield {"text": "boom"}
            entered.set()
            await gate.wait()
            return
        if text.endswith("hold"):  # holds the thread until released
            held.set()
            await hold_gate.wait()
        yield {"text": "ok"}

    g = StateGraph(Picky)
    g.add_node("n", node)
    g.set_entry_point("n")
    app = g.compile(InMemoryCheckpointer())
    with anyio.fail_after(20) as watchdog:
        await app.ainvoke({"text": "a"}, thread_id="t")
        blocker = None
        if point == "before_start":  # a run holds the thread, so ours waits in the queue
            blocker = await app.astart({"text": "hold"}, thread_id="t")
            await held.wait()
        handle = await app.astart({"text": "go"}, thread_id="t", multitask_strategy="enqueue")
        # By thread id only once it holds the thread (before, the thread's stop goes to the holder).
        by_thread = by_thread and point == "mid"
        target = {"thread_id": "t"} if by_thread else {"run_id": handle.run_id}
        if point == "mid":
            await entered.wait()
        head = await app.aget_state("t")  # the last good checkpoint (the run's input)
        stopped = await app.astop(**target, mode=mode, wait=mode != "after_step")
        gate.set()
        hold_gate.set()
        await handle.wait()
        if blocker is not None:
            await blocker.wait()
        check_terminal(handle.events)  # S1
        assert stopped is True  # S2
        record = await app.aget_run(handle.run_id)
        assert record is not None
        if point == "mid" and mode in ("now", "after_step"):
            assert record.status == "failed"
            assert record.error is not None and "reducer refuses boom" in record.error
            assert record.stop_requested_at is not None
        else:
            check_stop_record(record, mode=mode)  # S7
        if point == "mid" and mode == "now":
            assert (await app.aget_state("t")).checkpoint_id == head.checkpoint_id
        assert app.registry.size() == 0  # S6
        again = await app.ainvoke({"text": "!"}, thread_id="t")  # S5
        assert again["text"].endswith("ok")
    assert not watchdog.cancel_called


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    point=st.sampled_from(["before_start", "mid"]),
    mode=st.sampled_from(["now", "after_step", "rollback"]),
    by_thread=st.booleans(),
)
def test_user_code_failing_during_a_stop_fails_only_that_run(
    point: str, mode: str, by_thread: bool
) -> None:
    anyio.run(faulty_scenario, point, mode, by_thread)
