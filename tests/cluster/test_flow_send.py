"""`Flow.send` / `asend` and `Flow.stop_stream` / `astop_stream` reach a flow run wherever it
executes: on another node of this process (its own checkpointer, Redis registry and worker id), and
in a real other process (`_flow_node.py`), through the run's inbox in Redis."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.cluster._flow_node import make_flow
from tether import UserError, _portal
from tether.coordination.local import LocalRunRegistry
from tether.coordination.redis import RedisRunRegistry
from tether.flow import Flow, FlowData
from tether.storage.memory import InMemoryCheckpointer
from tether.storage.postgres import PostgresCheckpointer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
HERE = Path(__file__).resolve().parent
WATCHDOG = 30.0


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


@pytest.mark.anyio
async def test_asend_reaches_a_flow_run_on_another_node_in_order(
    node: Callable[[], Flow],
) -> None:
    a, b = node(), node()
    with anyio.fail_after(20) as watchdog:
        run = await a.astart("question", thread_id="f1")
        assert await b.asend(run.run_id, "Answer", {"n": 1}) is True
        # The sync face from a worker thread, while b's registry lives on this loop.
        sent = await anyio.to_thread.run_sync(b.send, run.run_id, "Answer", {"n": 2})
        assert sent is True
        values = await run.result()
        assert values["result"] == [{"n": 1}, {"n": 2}]  # in the order sent
        assert await b.asend(run.run_id, "Answer", 3) is False  # the run ended
        assert await b.asend("no-such-run", "Answer", 3) is False
    assert not watchdog.cancel_called
    assert a.registry.size() == b.registry.size() == 0


@pytest.mark.anyio
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


@pytest.mark.anyio
async def test_the_sync_faces_refuse_to_block_the_loop_their_registry_runs_on(
    node: Callable[[], Flow],
) -> None:
    a, b = node(), node()
    with anyio.fail_after(20) as watchdog:
        run = await a.astart("question", thread_id="f3")
        assert await b.asend(run.run_id, "Answer", 1) is True  # b's registry is on this loop
        with pytest.raises(UserError, match="await the async method"):
            b.send(run.run_id, "Answer", 2)
        with pytest.raises(UserError, match="await the async method"):
            b.stop_stream(run.run_id)
        assert await b.asend(run.run_id, "Answer", 2) is True
        assert (await run.result())["result"] == [1, 2]
    assert not watchdog.cancel_called


@pytest.mark.anyio
async def test_stop_stream_before_the_program_runs_ends_the_stream_and_not_the_run() -> None:
    async def put_three(data: FlowData) -> str:
        for i in range(3):
            data.put_into_stream(i)
        return "done"

    flow = Flow(checkpointer=InMemoryCheckpointer(), registry=LocalRunRegistry())
    flow.to(put_three).end()
    with anyio.fail_after(20) as watchdog:
        stream = flow.aget_runtime_stream()
        run = await stream.start()  # started, its program not yet running
        assert flow.stop_stream(run.run_id) is True
        assert [item async for item in stream] == []
        assert stream.finished is None  # the stream ended, not the run
        assert (await run.result())["result"] == "done"
        assert run.status == "completed"
        assert await flow.astop_stream(run.run_id) is False  # ended
        assert flow.send(run.run_id, "x", 1) is False
        assert flow.send("no-such-run", "x", 1) is False  # local registry: no hop
    assert not watchdog.cancel_called


class _Lines:
    """The JSON lines a child process prints, read by a thread, each awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        out = proc.stdout
        threading.Thread(target=lambda: [self._lines.put(x) for x in out], daemon=True).start()

    def next(self) -> dict[str, Any]:
        line = self._lines.get(timeout=WATCHDOG)  # raises queue.Empty: the watchdog fired
        data: dict[str, Any] = json.loads(line)
        return data


@pytest.fixture
def sync_flow(postgres_dsn: str, redis_url: str, redis_prefix: str) -> Iterator[Flow]:
    """Process B's flow, used only through the sync API (tether's background loop)."""
    flow = make_flow(postgres_dsn, redis_url, redis_prefix)
    yield flow
    flow.registry.call_sync(flow.registry.aclose)
    _portal.call(flow.checkpointer.aclose)


def test_sync_send_and_stop_stream_reach_a_flow_run_in_another_process(
    sync_flow: Flow, postgres_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    b = sync_flow
    child = [sys.executable, str(HERE / "_flow_node.py"), postgres_dsn, redis_url, redis_prefix]
    with subprocess.Popen(child, stdout=subprocess.PIPE, text=True) as proc:
        try:
            a = _Lines(proc)
            run_id = a.next()["run"]
            assert a.next() == {"item": "asking"}
            assert b.send(run_id, "Answer", {"n": 1}) is True
            assert a.next() == {"item": {"n": 1}}
            assert b.stop_stream(run_id) is True  # A's reader ends; its run goes on
            assert a.next() == {"ended": True, "run_done": False}
            assert b.send(run_id, "Answer", {"n": 2}) is True
            # Nothing was streamed after the end: the next line is the run's end.
            assert a.next() == {"status": "completed", "result": [{"n": 1}, {"n": 2}]}
            assert proc.wait(timeout=WATCHDOG) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert b.send(run_id, "Answer", 3) is False  # the run ended
    assert b.stop_stream(run_id) is False
    assert b.send("no-such-run", "Answer", 3) is False
    record = b.get_run(run_id)
    assert record is not None and record.status == "completed"
    assert b.get_state("cross-flow").values["stream"] == ["asking", {"n": 1}]
