"""`Flow.asend` reaches a flow run that executes on another node (its own checkpointer, Redis
registry and worker id, as another process would have), through the run's inbox in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from tether import UserError
from tether.coordination.redis import RedisRunRegistry
from tether.flow import Flow, FlowData
from tether.storage.postgres import PostgresCheckpointer

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis]


async def ask_twice(data: FlowData) -> Any:
    return [await data.wait_for("Answer"), await data.wait_for("Answer")]


@pytest.fixture
async def node(
    postgres_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[[], Flow]]:
    async with AsyncExitStack() as stack:

        def make() -> Flow:
            checkpointer = PostgresCheckpointer(postgres_dsn)
            registry = RedisRunRegistry(redis_url, prefix=redis_prefix)
            stack.push_async_callback(checkpointer.aclose)
            stack.push_async_callback(registry.aclose)
            flow = Flow(checkpointer=checkpointer, registry=registry, name="asker")
            flow.to(ask_twice).end()
            return flow

        yield make


async def test_asend_reaches_a_flow_run_on_another_node_in_order(
    node: Callable[[], Flow],
) -> None:
    a, b = node(), node()
    with anyio.fail_after(20) as watchdog:
        run = await a.astart("question", thread_id="f1")
        assert b.send(run.run_id, "Answer", 0) is False  # sync send: this process only
        assert await b.asend(run.run_id, "Answer", {"n": 1}) is True
        assert await b.asend(run.run_id, "Answer", {"n": 2}) is True
        values = await run.result()
        assert values["result"] == [{"n": 1}, {"n": 2}]  # in the order sent
        assert await b.asend(run.run_id, "Answer", 3) is False  # the run ended
        assert await b.asend("no-such-run", "Answer", 3) is False
    assert not watchdog.cancel_called
    assert a.registry.size() == b.registry.size() == 0


async def test_asend_refuses_bad_names_and_values_before_sending(
    node: Callable[[], Flow],
) -> None:
    a, b = node(), node()
    with anyio.fail_after(20) as watchdog:
        run = await a.astart("question", thread_id="f2")
        with pytest.raises(UserError, match="input name"):
            await b.asend(run.run_id, "", 1)
        with pytest.raises(UserError, match="cannot store"):
            await b.asend(run.run_id, "Answer", object())
        assert await b.astop(run_id=run.run_id) is True
        assert (await a.aget_run(run.run_id)).status == "cancelled"  # type: ignore[union-attr]
    assert not watchdog.cancel_called
