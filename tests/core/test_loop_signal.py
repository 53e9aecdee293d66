"""The one loop-affinity object of a run (`tether._loop`): its flag and its change signal work from
the run's loop, from another event loop and from a plain thread, and a waiter that is cancelled
leaves nothing registered. The handle's readers, its `wait()` and `stop(wait=True)` all use it.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.from_thread
import pytest

from tether import InMemoryCheckpointer, RunFinished, StateGraph
from tether._loop import RunLoop, Signal

pytestmark = pytest.mark.anyio

WATCHDOG = 10.0


async def test_notify_wakes_every_waiter_on_the_loop_and_only_waiters_allocate() -> None:
    signal = Signal()
    assert signal.waiters is None  # nobody waits: nothing allocated
    woken: list[int] = []

    async def waiter(n: int) -> None:
        await signal.wait_change()
        woken.append(n)

    with anyio.fail_after(WATCHDOG) as watchdog:
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(waiter, n)
            await anyio.wait_all_tasks_blocked()
            assert signal.waiters is not None and len(signal.waiters) == 3
            signal.notify()
    assert not watchdog.cancelled_caught
    assert sorted(woken) == [0, 1, 2]
    assert signal.waiters is None and not signal.flag


async def test_a_cancelled_waiter_unregisters() -> None:
    signal = Signal()
    with anyio.fail_after(WATCHDOG) as watchdog:
        async with anyio.create_task_group() as tg:
            tg.start_soon(signal.wait_change)
            await anyio.wait_all_tasks_blocked()
            assert signal.waiters is not None
            tg.cancel_scope.cancel()
    assert not watchdog.cancelled_caught
    assert signal.waiters is None


async def test_set_wakes_a_waiter_on_another_loop_and_a_blocked_thread() -> None:
    """A flag set on this loop wakes a waiter on a second event loop (its own thread) and a thread
    blocked in `wait_sync`; after that, every wait returns at once."""
    signal = Signal()
    results: dict[str, Any] = {}
    registered = threading.Event()

    def other_loop() -> None:
        async def main() -> None:
            with anyio.fail_after(WATCHDOG):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(signal.wait)
                    await anyio.wait_all_tasks_blocked()
                    registered.set()
            results["async"] = signal.flag

        anyio.run(main)

    def blocked() -> None:
        results["sync"] = signal.wait_sync(WATCHDOG)

    threads = [threading.Thread(target=other_loop), threading.Thread(target=blocked)]
    for thread in threads:
        thread.start()
    assert await anyio.to_thread.run_sync(registered.wait, WATCHDOG)
    signal.set()
    signal.set()  # idempotent
    for thread in threads:
        await anyio.to_thread.run_sync(thread.join, WATCHDOG)
    assert results == {"async": True, "sync": True}
    with anyio.fail_after(WATCHDOG):
        await signal.wait()
        await signal.wait_change()  # the flag is set: no further change to wait for
    assert signal.wait_sync(0)


async def test_wait_change_from_a_worker_thread_loop_is_woken_by_notify_on_the_run_loop() -> None:
    loop = RunLoop()
    loop.bind()
    got = threading.Event()
    registered = threading.Event()

    def other_loop() -> None:
        async def main() -> None:
            with anyio.fail_after(WATCHDOG):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(loop.wait_change)
                    await anyio.wait_all_tasks_blocked()
                    registered.set()
            got.set()

        anyio.run(main)

    thread = threading.Thread(target=other_loop)
    thread.start()
    assert await anyio.to_thread.run_sync(registered.wait, WATCHDOG)
    loop.notify()
    assert await anyio.to_thread.run_sync(got.wait, WATCHDOG)
    await anyio.to_thread.run_sync(thread.join, WATCHDOG)
    assert not loop.flag


async def test_a_run_is_awaited_from_another_event_loop_without_a_worker_thread() -> None:
    """`RunHandle.wait()` from a second event loop: the run's signal wakes that loop directly."""

    async def node(state: dict[str, Any]) -> Any:
        yield "tok "
        await anyio.sleep(WATCHDOG * 2)

    g = StateGraph()
    g.add_node("n", node)
    g.set_entry_point("n")
    app = g.compile(InMemoryCheckpointer())
    handle = await app.astart("go")
    await handle.wait_for_events(1)
    ended = threading.Event()
    registered = threading.Event()

    def other_loop() -> None:
        async def main() -> None:
            with anyio.fail_after(WATCHDOG):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(handle.wait)
                    await anyio.wait_all_tasks_blocked()
                    registered.set()
            ended.set()

        anyio.run(main)

    thread = threading.Thread(target=other_loop)
    thread.start()
    assert await anyio.to_thread.run_sync(registered.wait, WATCHDOG)
    assert handle._loop.waiters  # the other loop waits on the run's own signal
    assert not ended.is_set()
    assert await handle.astop()
    assert await anyio.to_thread.run_sync(ended.wait, WATCHDOG)
    await anyio.to_thread.run_sync(thread.join, WATCHDOG)
    assert isinstance(handle.events[-1], RunFinished)
    assert handle.events[-1].status == "cancelled"
    assert handle._loop.waiters is None


async def test_a_reader_past_the_end_of_a_live_run_ends_with_its_terminal_event() -> None:
    """A live re-join after a seq the run never reaches (a client that saw more than was logged)
    gets the run's one `run_finished` when it ends, and the stream ends there."""

    async def node(state: dict[str, Any]) -> Any:
        yield "tok "
        await anyio.sleep(WATCHDOG * 2)

    g = StateGraph()
    g.add_node("n", node)
    g.set_entry_point("n")
    app = g.compile(InMemoryCheckpointer())
    handle = await app.astart("go")
    await handle.wait_for_events(1)
    got: list[Any] = []

    async def read() -> None:
        async for event in handle.events_after(50):
            got.append(event)

    with anyio.fail_after(WATCHDOG) as watchdog:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            assert await handle.astop()
    assert not watchdog.cancelled_caught
    assert len(got) == 1 and isinstance(got[0], RunFinished)
    assert got[0] is handle.events[-1] and got[0].status == "cancelled"
