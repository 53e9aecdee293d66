"""The run queue through the Python API: `enqueue_run`, a `Worker` in this process, and stops of
queued runs, on the machine's Postgres and Redis (`test_worker.py` does it with real processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from tether import Agent, UserError
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


async def test_a_queued_reject_run_whose_thread_is_busy_ends_failed_when_a_worker_takes_it(
    make_app: Callable[..., Agent],
) -> None:
    gate = Gate()
    api, executor = make_app(), make_app(["Hel", gate])
    with anyio.fail_after(30) as watchdog:
        busy = await executor.astart(said("first"), thread_id="t3")
        await gate.reached()
        queued = await enqueue_run(api, said("second"), thread_id="t3")  # reject, the default
        async with anyio.create_task_group() as tg:
            await tg.start(Worker(executor, poll=0.05).run)
            events = [e async for e in await api.ajoin(queued.run_id)]
            tg.cancel_scope.cancel()
        gate.release()
        await busy.wait()
        stored = await api.aget_run(queued.run_id)
    assert not watchdog.cancel_called
    assert len(events) == 1 and isinstance(events[0], RunFinished)
    assert events[0].status == "failed" and "ThreadBusyError" in (events[0].error or "")
    assert stored is not None and stored.status == "failed" and stored.started_at is None
    assert busy.status == "completed"


async def test_a_stop_that_waits_on_a_worker_taking_the_run_reaches_the_started_run(
    make_app: Callable[..., Agent], postgres_dsn: str
) -> None:
    """The stop misses the run in Redis, then waits on the queue row a worker holds; once the
    worker registered the run and committed, the stop finds it in Redis: never lost between."""
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
    assert [e.type for e in events].count("run_started") == 1  # it started, then was stopped
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
