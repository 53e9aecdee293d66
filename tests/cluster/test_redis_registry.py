"""`RedisRunRegistry` between two nodes that share one Postgres schema and one Redis prefix.

Each node is an `Agent` with its own `PostgresCheckpointer` and its own `RedisRunRegistry` (its own
worker id, Redis clients and subscription), as two processes would have; they share this test's
event loop only so the test can drive both deterministically. `test_processes.py` repeats the
key contracts with real `tether serve` processes.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from tether import Agent, RunFinished, ThreadBusyError, tool
from tether.coordination.lost import WORKER_LOST
from tether.coordination.redis import RedisRunRegistry
from tether.events import MessageDeltaEvent, RunStarted
from tether.handle import RunHandle
from tether.run import RunRecord
from tether.storage.postgres import PostgresCheckpointer
from tether.testing import Gate, ScriptedModel, ToolCallStep, stream_forever

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis]

Node = Callable[..., Agent]


@pytest.fixture
async def node(postgres_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Node]:
    """Makes nodes (agents) on the test's schema and prefix; closes them at the end."""
    async with AsyncExitStack() as stack:

        def make(
            *turns: Any, lease: float = 10.0, tools: Sequence[Any] = (), dsn: str | None = None
        ) -> Agent:
            checkpointer = PostgresCheckpointer(dsn or postgres_dsn)
            registry = RedisRunRegistry(redis_url, prefix=redis_prefix, lease=lease)
            stack.push_async_callback(checkpointer.aclose)
            stack.push_async_callback(registry.aclose)
            model = ScriptedModel(*turns, default_reply="ok")
            return Agent(model, tools=tools, checkpointer=checkpointer, registry=registry)

        yield make


@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text


async def started(handle: RunHandle, gate: Gate) -> None:
    with anyio.fail_after(10):
        await gate.reached()
    assert handle.status == "running"


@pytest.mark.parametrize("mode", ["now", "after_step", "rollback"])
async def test_stop_by_run_id_from_another_node_cancels_the_run_where_it_executes(
    node: Node, mode: str
) -> None:
    gate = Gate()
    a = node(["partial ", gate, ToolCallStep("echo", {"text": "x"})], tools=[echo])
    b = node()
    handle = await a.astart("hi", thread_id="t1")
    await started(handle, gate)
    with anyio.fail_after(10) as watchdog:
        if mode == "after_step":  # the step (blocked at the gate) must end first
            assert await b.astop(run_id=handle.run_id, mode=mode, reason="from b", wait=False)
            gate.release()
            await handle.wait()
        else:
            assert await b.astop(run_id=handle.run_id, mode=mode, reason="from b")
            assert handle.done  # b's stop waited until the run released its thread (S5)
    assert not watchdog.cancel_called
    assert handle.status == "cancelled"
    record = await b.aget_run(handle.run_id)
    assert record is not None and record.status == "cancelled"
    assert record.stop_reason == "from b" and record.stop_mode == mode
    messages = await b.aget_messages("t1")
    if mode == "rollback":
        assert messages == []
    elif mode == "now":
        assert [(m.content, m.status) for m in messages[1:]] == [("partial ", "stopped")]
    else:  # the model step ended; its tool call got a synthetic cancelled result
        assert [(m.role, m.content) for m in messages[1:2]] == [("assistant", "partial ")]
        assert messages[-1].role == "tool" and messages[-1].status == "cancelled"
    assert a.registry.size() == 0 and b.registry.size() == 0
    # the thread accepts a new run at once, from either node
    again = await b.ainvoke("again", thread_id="t1")
    assert again["messages"][-1].content == "ok"


async def test_stop_by_thread_id_from_another_node_reaches_the_running_run(node: Node) -> None:
    a, b = node([stream_forever()]), node()
    handle = await a.astart("hi", thread_id="t2")
    with anyio.fail_after(10):
        await handle.wait_for_events(2)
        assert await b.astop(thread_id="t2", wait=False)
        await handle.wait()
    assert handle.status == "cancelled"


async def test_stop_of_unknown_or_finished_runs_returns_false_everywhere(node: Node) -> None:
    a, b = node(), node()
    handle = await a.astart("hi", thread_id="t3")
    with anyio.fail_after(10):
        await handle.wait()
    assert handle.status == "completed"
    assert not await b.astop(run_id=handle.run_id)
    assert not await b.astop(thread_id="t3")
    assert not await b.astop(run_id="no-such-run")
    assert not await a.astop(run_id=handle.run_id)


async def test_reject_holds_across_nodes(node: Node) -> None:
    gate = Gate()
    a, b = node([gate]), node()
    first = await a.astart("one", thread_id="t4")
    await started(first, gate)
    with pytest.raises(ThreadBusyError):
        await b.astart("two", thread_id="t4")
    gate.release()
    with anyio.fail_after(10):
        await first.wait()
    assert first.status == "completed"
    assert b.registry.size() == 0


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_interrupt_and_rollback_stop_the_run_on_the_other_node(
    node: Node, strategy: str
) -> None:
    gate = Gate()
    a, b = node(["old ", gate]), node()
    old = await a.astart("one", thread_id="t5")
    await started(old, gate)
    with anyio.fail_after(10):
        new = await b.astart("two", thread_id="t5", multitask_strategy=strategy)
        await new.wait()
    assert old.status == "cancelled" and new.status == "completed"
    record = await b.aget_run(old.run_id)
    assert record is not None and record.stop_requested_by == "superseded"
    contents = [m.content for m in await b.aget_messages("t5")]
    assert ("old " in contents) == (strategy == "interrupt")


async def test_enqueue_keeps_fifo_order_across_nodes(node: Node) -> None:
    gate = Gate()
    a, b, c = node([gate]), node(), node()
    first = await a.astart("1", thread_id="t6")
    await started(first, gate)
    queued: list[RunHandle] = []
    for i, n in enumerate([b, c, b, c]):
        queued.append(await n.astart(str(i + 2), thread_id="t6", multitask_strategy="enqueue"))
        with anyio.fail_after(10):  # each one is in the Redis queue before the next arrives
            while await n.registry._redis.llen(f"{n.registry.prefix}:queue:t6") < i + 1:  # type: ignore[union-attr]
                await anyio.sleep(0.01)
    gate.release()
    with anyio.fail_after(20):
        for handle in queued:
            await handle.wait()
    started_at = [h.record.started_at for h in [first, *queued]]
    assert all(h.status == "completed" for h in queued)
    assert started_at == sorted(started_at)  # type: ignore[type-var]
    assert all(n.registry.size() == 0 for n in (a, b, c))


async def test_a_thread_id_with_spaces_is_freed_for_waiters_on_other_nodes_at_once(
    node: Node,
) -> None:
    """A `free` notification names the thread and the run; a thread id may hold spaces. With a
    lease of minutes, a waiter that missed its notification would only re-check minutes later."""
    gate, second_gate = Gate(), Gate()
    a, b = node(["old ", gate], ["held ", second_gate], lease=600.0), node(lease=600.0)
    old = await a.astart("one", thread_id="my chat 8")
    await started(old, gate)
    with anyio.fail_after(10) as watchdog:
        # b waits for the thread (`interrupt` stops the old run on a, then waits for its free).
        new = await b.astart("two", thread_id="my chat 8", multitask_strategy="interrupt")
        await new.wait()
        held = await a.astart("three", thread_id="my chat 8")
        await started(held, second_gate)
        # b's stop returns once the run released its thread (the run's free, on a).
        assert await b.astop(run_id=held.run_id)
    assert not watchdog.cancel_called
    assert old.status == "cancelled" and new.status == "completed"
    assert held.status == "cancelled"
    assert a.registry.size() == 0 and b.registry.size() == 0


async def test_waiting_for_the_release_of_runs_leaves_no_waiter_behind(node: Node) -> None:
    a = node()
    await a.engine.ensure_ready()
    registry = a.registry
    assert isinstance(registry, RedisRunRegistry)
    with anyio.fail_after(10) as watchdog:
        for i in range(20):
            await registry.wait_released(f"no-such-run-{i}")  # released already: returns at once
    assert not watchdog.cancel_called
    assert registry._waiters.ended == {}


async def test_a_join_on_another_node_is_live_gapless_and_ends_with_one_run_finished(
    node: Node,
) -> None:
    gate = Gate()
    a, b = node(["one ", "two ", gate, "three"]), node()
    handle = await a.astart("hi", thread_id="t7")
    await started(handle, gate)
    stream = await b.ajoin(handle.run_id)
    seen = []
    with anyio.fail_after(10):
        async for event in stream:
            seen.append(event)
            if isinstance(event, MessageDeltaEvent) and event.content == "two ":
                gate.release()  # everything so far arrived live, while the run was blocked
    assert [e.seq for e in seen] == list(range(len(seen)))
    assert [e.type for e in seen] == [e.type for e in handle.events]
    assert sum(isinstance(e, RunFinished) for e in seen) == 1
    rejoined = [e async for e in await b.ajoin(handle.run_id, after_seq=2)]
    assert [e.seq for e in rejoined] == list(range(3, len(seen)))


async def test_a_dead_workers_run_is_failed_worker_lost_with_its_streamed_output_kept(
    node: Node, postgres_dsn: str
) -> None:
    """The worker registers a run, streams into Redis and dies (its registry goes silent, its
    run never ends); the other node's sweep recovers it within the lease."""
    a, b = node(lease=0.5), node(lease=0.5)
    await a.engine.ensure_ready()
    record = RunRecord(run_id="lost-run", thread_id="t8", status="running")
    handle = RunHandle(record)
    await a.checkpointer.commit(run=record)
    await a.registry.register(handle)
    await a.registry.acquire(handle, "reject")
    handle.emit(RunStarted)
    key = ("agent", "m1")
    handle.emit_text(key, "half an ")
    handle.emit_text(key, "answer")
    await a.checkpointer.commit(events=handle.events[:1])  # the log has run_started only
    registry = a.registry
    assert isinstance(registry, RedisRunRegistry)
    with anyio.fail_after(10):  # the pump copied the deltas into the run's stream
        while len(await registry.read_stream("lost-run", -1) or []) < 3:
            await anyio.sleep(0.01)
    await registry.aclose()  # the worker dies: no more heartbeats, no release
    other = b.registry
    assert isinstance(other, RedisRunRegistry)
    with anyio.fail_after(10):
        await other._client()  # its heartbeat sweeps too: whichever sweep claims it recovers it
        while (await b.aget_run("lost-run")).status != "failed":  # type: ignore[union-attr]
            await other.sweep()
            await anyio.sleep(0.05)
        await other.wait_released("lost-run")  # the sweep releases the thread after the commit
    lost = await b.aget_run("lost-run")
    assert lost is not None and lost.status == "failed" and lost.error == WORKER_LOST
    events = await b.checkpointer.read_events("lost-run")
    assert [e.seq for e in events] == list(range(len(events)))
    assert isinstance(events[-1], RunFinished) and events[-1].reason == "worker_lost"
    assert sum(isinstance(e, RunFinished) for e in events) == 1
    messages = await b.aget_messages("t8")
    assert [(m.content, m.status) for m in messages] == [("half an answer", "stopped")]
    again = await b.astart("next", thread_id="t8")  # the thread was released
    with anyio.fail_after(10):
        await again.wait()
    assert again.status == "completed"


async def test_postgres_connections_killed_mid_run_leave_no_record_running(
    node: Node, postgres_dsn: str
) -> None:
    """Every Postgres connection of the node is terminated while its run streams; the run still
    ends, and its stored record is not left `running`."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"tether-kill-{secrets.token_hex(4)}"  # only our own connections are terminated
    dsn = make_conninfo(postgres_dsn, application_name=name)
    gate = Gate()
    a = node(["before ", gate, "after"], dsn=dsn)
    handle = await a.astart("hi", thread_id="pg1")
    await started(handle, gate)
    admin = {k: v for k, v in conninfo_to_dict(postgres_dsn).items() if k != "options"}
    with psycopg.connect(make_conninfo(**admin), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (name,),
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    gate.release()
    with anyio.fail_after(30):
        await handle.wait()
    record = await a.aget_run(handle.run_id)
    assert record is not None and record.status == handle.status != "running"
    assert a.registry.size() == 0
