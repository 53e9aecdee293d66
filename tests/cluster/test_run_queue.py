"""The run queue through the Python API: `enqueue_run`, a `Worker` in this process, and stops of
queued runs, on the machine's Postgres and Redis (`test_worker.py` does it with real processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from tether import Agent, ThreadBusyError, UserError
from tether.coordination.redis import RedisRunRegistry
from tether.events import RunFinished
from tether.messages import Message
from tether.storage.postgres import PostgresCheckpointer
from tether.storage.run_queue import PostgresRunQueue, QueuedRun
from tether.testing import Gate, ScriptedModel
from tether.worker import Worker, enqueue_run

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
async def make_app(
    postgres_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[..., Agent]]:
    async with AsyncExitStack() as stack:

        def make(*turns: Any) -> Agent:
            checkpointer = PostgresCheckpointer(postgres_dsn)
            registry = RedisRunRegistry(
                redis_url, prefix=redis_prefix, run_queue=PostgresRunQueue(postgres_dsn)
            )
            stack.push_async_callback(checkpointer.aclose)
            stack.push_async_callback(registry.aclose)
            model = ScriptedModel(*turns, default_reply="ok")
            return Agent(model, checkpointer=checkpointer, registry=registry, name="chat")

        yield make


def said(text: str) -> dict[str, list[Message]]:
    return {"messages": [Message.user(text)]}


async def test_queued_runs_stopped_by_run_or_thread_id_end_cancelled_and_never_run(
    make_app: Callable[..., Agent], postgres_dsn: str
) -> None:
    api, executor = make_app(), make_app()  # two nodes, as two processes would be
    with anyio.fail_after(30) as watchdog:
        by_run = await enqueue_run(api, said("one"), thread_id="t1")
        by_thread = await enqueue_run(api, said("two"), thread_id="t2")
        assert await api.astop(run_id=by_run.run_id, reason="no") is True
        assert await executor.astop(thread_id="t2") is True  # from another node
        assert await api.astop(run_id=by_run.run_id) is False  # ended: nothing to stop
        async with anyio.create_task_group() as tg:
            await tg.start(Worker(executor, poll=0.05).run)
            later = await enqueue_run(api, said("three"), thread_id="t1")
            events = [e async for e in await api.ajoin(later.run_id)]
            tg.cancel_scope.cancel()
        for record in (by_run, by_thread):
            stored = await api.aget_run(record.run_id)
            assert stored is not None and stored.status == "cancelled"
            assert stored.started_at is None
            logged = await api.checkpointer.read_events(record.run_id)
            assert [(type(e), e.seq) for e in logged] == [(RunFinished, 0)]
        assert isinstance(events[-1], RunFinished) and events[-1].status == "completed"
        users = [
            m.content for m in (await api.aget_state("t1")).values["messages"] if m.role == "user"
        ]
        assert users == ["three"]
        assert await PostgresRunQueue(postgres_dsn).size() == 0
    assert not watchdog.cancel_called
    assert api.registry.size() == executor.registry.size() == 0


async def test_enqueue_refuses_bad_input_and_apps_without_a_queue(
    make_app: Callable[..., Agent], postgres_dsn: str
) -> None:
    api = make_app()
    with pytest.raises(UserError, match="cannot store"):
        await enqueue_run(api, {"messages": [object()]}, thread_id="bad")
    with pytest.raises(UserError, match="multitask_strategy 'queue'"):
        await enqueue_run(api, said("x"), thread_id="bad", multitask_strategy="queue")
    assert await PostgresRunQueue(postgres_dsn).size() == 0
    local = Agent(ScriptedModel(), checkpointer=api.checkpointer)
    with pytest.raises(UserError, match="has no run queue"):
        await enqueue_run(local, said("x"))
    with pytest.raises(UserError, match="concurrency"):
        Worker(api, concurrency=0)


async def test_a_queued_reject_run_on_a_busy_thread_is_refused_when_it_is_queued(
    make_app: Callable[..., Agent], postgres_dsn: str
) -> None:
    gate = Gate()
    api, executor = make_app(), make_app(["Hel", gate])
    with anyio.fail_after(30) as watchdog:
        busy = await executor.astart(said("first"), thread_id="t3")
        await gate.reached()
        with pytest.raises(ThreadBusyError) as refused:
            await enqueue_run(api, said("second"), thread_id="t3")  # reject, the default
        assert refused.value.active_run_id == busy.run_id  # the run of the other node
        assert await PostgresRunQueue(postgres_dsn).size() == 0  # nothing queued ...
        assert [r.run_id for r in await api.alist_runs("t3")] == [busy.run_id]  # ... or stored
        gate.release()
        await busy.wait()
        later = await enqueue_run(api, said("third"), thread_id="t3")  # the thread is free now
        async with anyio.create_task_group() as tg:
            await tg.start(Worker(executor, poll=0.05).run)
            events = [e async for e in await api.ajoin(later.run_id)]
            tg.cancel_scope.cancel()
    assert not watchdog.cancel_called
    assert isinstance(events[-1], RunFinished) and events[-1].status == "completed"
    assert busy.status == "completed"
    assert api.registry.size() == executor.registry.size() == 0


async def test_two_reject_runs_queued_at_once_on_one_thread_one_is_refused(
    make_app: Callable[..., Agent], postgres_dsn: str
) -> None:
    nodes = [make_app(), make_app()]  # the two enqueues come from two nodes
    for round in range(5):
        thread = f"race-{round}"
        outcomes: list[str] = []

        async def enqueue(app: Agent, thread: str = thread, out: list[str] = outcomes) -> None:
            try:
                await enqueue_run(app, said("x"), thread_id=thread)
                out.append("queued")
            except ThreadBusyError:
                out.append("busy")

        with anyio.fail_after(30) as watchdog:
            async with anyio.create_task_group() as tg:
                for app in nodes:
                    tg.start_soon(enqueue, app)
        assert not watchdog.cancel_called
        assert sorted(outcomes) == ["busy", "queued"], round
        assert len(await nodes[0].alist_runs(thread)) == 1  # the refused run left nothing
    assert await PostgresRunQueue(postgres_dsn).size() == 5


async def test_queued_enqueue_runs_start_in_the_order_they_were_queued(
    make_app: Callable[..., Agent],
) -> None:
    gate = Gate()
    nodes = [make_app(), make_app()]
    executors = [make_app(["Hel", gate]), make_app()]
    with anyio.fail_after(60) as watchdog:
        busy = await executors[0].astart(said("first"), thread_id="fifo")
        await gate.reached()
        queued = [
            await enqueue_run(
                nodes[i % 2], said(f"q{i}"), thread_id="fifo", multitask_strategy="enqueue"
            )
            for i in range(6)
        ]
        async with anyio.create_task_group() as tg:
            # Two workers with free slots take the queued runs at once; the thread's FIFO,
            # fixed when they were queued, decides the order they run in.
            for executor in executors:
                await tg.start(Worker(executor, poll=0.05).run)
            gate.release()
            ends = [[e async for e in await nodes[0].ajoin(r.run_id)][-1] for r in queued]
            tg.cancel_scope.cancel()
        records = [await nodes[0].aget_run(r.run_id) for r in queued]
    assert not watchdog.cancel_called
    assert busy.status == "completed"
    assert [e.status for e in ends if isinstance(e, RunFinished)] == ["completed"] * 6
    started = [r.started_at for r in records if r is not None]
    assert len(started) == 6 and started == sorted(started)
    users = [m.content for m in (await nodes[0].aget_state("fifo")).values["messages"]]
    assert [u for u in users if u.startswith("q")] == [f"q{i}" for i in range(6)]


async def test_a_place_held_for_a_run_whose_queue_row_never_came_is_freed_by_a_sweep(
    make_app: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_app()
    registry = api.registry
    assert isinstance(registry, RedisRunRegistry)
    with anyio.fail_after(30) as watchdog:
        # As if the process that queued it died between admitting it and committing its row.
        await registry.admit_queued("lost-run", "lost", "reject")
        with pytest.raises(ThreadBusyError):
            await enqueue_run(api, said("x"), thread_id="lost")
        await registry.sweep()  # too recent to be judged
        with pytest.raises(ThreadBusyError):
            await enqueue_run(api, said("x"), thread_id="lost")
        monkeypatch.setattr("tether.coordination.redis.QUEUED_STALE", 0.0)
        await registry.sweep()
        record = await enqueue_run(api, said("x"), thread_id="lost")
    assert not watchdog.cancel_called
    assert record.status == "pending"


async def test_a_stop_that_waits_on_a_worker_taking_the_run_reaches_the_started_run(
    make_app: Callable[..., Agent], postgres_dsn: str
) -> None:
    """The stop finds the queued run's place in Redis and records its intent, then waits on the
    queue row a worker holds; the worker registers the run, reads the intent as it does, and the
    run ends `cancelled` without running: the stop is never lost between "queued" and "running"."""
    gate = Gate()
    api, executor = make_app(), make_app(["Hel", gate])
    queue = PostgresRunQueue(postgres_dsn)
    worker = Worker(executor)
    holding, proceed = anyio.Event(), anyio.Event()
    stopped: list[bool] = []

    async def start_late(job: QueuedRun) -> None:
        holding.set()  # the row is locked by this "worker", the run not registered yet
        await proceed.wait()
        await worker._start(job)

    async def stop() -> None:
        stopped.append(await api.astop(run_id=queued.run_id, reason="racing"))

    with anyio.fail_after(30) as watchdog:
        queued = await enqueue_run(api, said("x"), thread_id="t4")
        async with queue.connection() as conn, anyio.create_task_group() as tg:
            worker._tg = tg
            tg.start_soon(queue.take, conn, start_late, ["chat"])
            await holding.wait()
            tg.start_soon(stop)
            await lock_waiter(postgres_dsn)  # the stop's queue delete waits on the row lock
            proceed.set()
        record = await api.aget_run(queued.run_id)
        events = await api.checkpointer.read_events(queued.run_id)
    assert not watchdog.cancel_called
    assert stopped == [True]
    assert record is not None and record.status == "cancelled" and record.stop_reason == "racing"
    assert [e.type for e in events] == ["run_finished"]  # it never ran
    assert await queue.size() == 0


async def lock_waiter(dsn: str) -> None:
    """Return once a session waits on a row lock of the run queue (polls pg_stat_activity)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'DELETE FROM tether_run_queue%%'"
            )
            if await cur.fetchone() is not None:
                return
            await anyio.sleep(0.01)


async def test_a_thread_whose_turn_belongs_to_a_queued_run_is_busy_for_reject_runs(
    make_app: Callable[..., Agent], postgres_dsn: str
) -> None:
    gate = Gate()
    api, executor = make_app(["Hel", gate]), make_app()
    with anyio.fail_after(30) as watchdog:
        first = await api.astart(said("first"), thread_id="turn")
        await gate.reached()
        waiting = await enqueue_run(
            api, said("queued"), thread_id="turn", multitask_strategy="enqueue"
        )
        gate.release()
        await first.wait()  # the thread's owner is gone; its next turn is the queued run's
        with pytest.raises(ThreadBusyError) as refused:
            await api.astart(said("now"), thread_id="turn")  # reject, in this process
        assert refused.value.active_run_id == waiting.run_id
        with pytest.raises(ThreadBusyError):
            await enqueue_run(executor, said("later"), thread_id="turn")  # reject, queued
        async with anyio.create_task_group() as tg:
            await tg.start(Worker(executor, poll=0.05).run)
            events = [e async for e in await api.ajoin(waiting.run_id)]
            tg.cancel_scope.cancel()
    assert not watchdog.cancel_called
    assert isinstance(events[-1], RunFinished) and events[-1].status == "completed"
    assert first.status == "completed"
    assert await PostgresRunQueue(postgres_dsn).size() == 0
    assert api.registry.size() == executor.registry.size() == 0
