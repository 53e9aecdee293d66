"""The loop's host (`tether._host`): runs are tasks of their own that outlive their caller; the host
reports an error that escapes a run without touching the other runs, and a host that ends ends
every run as `cancelled` by `shutdown`.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import anyio
import pytest

from tether import CompiledGraph, InMemoryCheckpointer, RunHandle, StateGraph
from tether._host import current_host
from tether.coordination.local import LocalRunRegistry

pytestmark = pytest.mark.anyio

WATCHDOG = 10.0


class ReleaseFails(LocalRunRegistry):
    """A registry with a bug: releasing a run of thread "bad" raises, after releasing it."""

    async def release(self, handle: RunHandle) -> None:
        await super().release(handle)
        if handle.thread_id == "bad":
            raise RuntimeError("release bug")


def gated_app(gate: anyio.Event, registry: LocalRunRegistry | None = None) -> CompiledGraph:
    """One node: a run on thread "bad" ends at once, any other waits for `gate`."""

    async def node(state: dict[str, Any], config: dict[str, Any]) -> Any:
        yield "tok "
        if config["thread_id"] != "bad":
            await gate.wait()

    g = StateGraph()
    g.add_node("node", node)
    g.set_entry_point("node")
    return g.compile(InMemoryCheckpointer(), registry=registry)


async def test_an_error_escaping_a_run_is_reported_to_the_loop_and_spares_other_runs() -> None:
    gate, reported = anyio.Event(), anyio.Event()
    app = gated_app(gate, ReleaseFails())
    seen: list[dict[str, Any]] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context)
        reported.set()

    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(handler)
    try:
        with anyio.fail_after(WATCHDOG) as watchdog:
            sibling = await app.astart("go", thread_id="ok")
            while len(sibling.events) < 3:  # run_started, node_started, the token
                await sibling.wait_for_events(len(sibling.events))
            bad = await app.astart("go", thread_id="bad")
            await reported.wait()
            assert bad.done and bad.status == "completed"
            [context] = seen
            assert isinstance(context["exception"], RuntimeError)
            assert str(context["exception"]) == "release bug"
            # The sibling still runs, and ends on its own terms.
            assert not sibling.done
            gate.set()
            await sibling.wait()
            assert sibling.status == "completed"
        assert not watchdog.cancel_called
    finally:
        loop.set_exception_handler(previous)


async def test_a_host_that_ends_ends_every_run_cancelled_by_shutdown() -> None:
    gate = anyio.Event()
    app = gated_app(gate)
    with anyio.fail_after(WATCHDOG) as watchdog:
        handles = [await app.astart("go", thread_id=f"t{i}") for i in range(3)]
        for handle in handles:
            while len(handle.events) < 3:
                await handle.wait_for_events(len(handle.events))
        host = await current_host()
        assert host._task is not None
        host._task.cancel()
        for handle in handles:
            await handle.wait()
            record = await app.checkpointer.get_run(handle.run_id)
            assert record is not None
            assert record.status == "cancelled"
            assert record.stop_requested_by == "shutdown"
        with pytest.raises(asyncio.CancelledError):
            await host._task
        # The loop gets a fresh host, and the threads take new runs.
        gate.set()
        assert await current_host() is not host
        values = await app.ainvoke("again", thread_id="t0")
        assert values["messages"][-1].content == "tok "
    assert not watchdog.cancel_called


def test_a_loop_that_ran_runs_is_freed_once_closed() -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one_run() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        gate = anyio.Event()
        gate.set()
        await gated_app(gate).ainvoke("go", thread_id="t")

    asyncio.run(one_run())
    gc.collect()
    assert loops[0]() is None
