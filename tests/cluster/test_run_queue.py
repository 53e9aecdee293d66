"""The run queue through the Python API: `enqueue_run`, a `Worker` in this process, and stops of
queued runs, on the machine's Postgres and Redis (`test_worker.py` does it with real processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import anyio
import pytest

from tether import Agent, UserError
from tether.coordination.redis import RedisRunRegistry
from tether.events import RunFinished
from tether.messages import Message
from tether.storage.postgres import PostgresCheckpointer
from tether.storage.run_queue import PostgresRunQueue
from tether.testing import ScriptedModel
from tether.worker import Worker, enqueue_run

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
async def make_app(
    postgres_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[[], Agent]]:
    async with AsyncExitStack() as stack:

        def make() -> Agent:
            checkpointer = PostgresCheckpointer(postgres_dsn)
            registry = RedisRunRegistry(
                redis_url, prefix=redis_prefix, run_queue=PostgresRunQueue(postgres_dsn)
            )
            stack.push_async_callback(checkpointer.aclose)
            stack.push_async_callback(registry.aclose)
            model = ScriptedModel(default_reply="ok")
            return Agent(model, checkpointer=checkpointer, registry=registry, name="chat")

        yield make


def said(text: str) -> dict[str, list[Message]]:
    return {"messages": [Message.user(text)]}


async def test_queued_runs_stopped_by_run_or_thread_id_end_cancelled_and_never_run(
    make_app: Callable[[], Agent], postgres_dsn: str
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
    make_app: Callable[[], Agent], postgres_dsn: str
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
