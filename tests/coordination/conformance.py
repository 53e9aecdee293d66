"""The coordination conformance suite: what every `RunRegistry` backend must do.

Each test takes the `registry` fixture (`conftest.py`), parametrized over the backends;
`test_conformance.py` collects them. The tests play the engine's part by hand, as
`Engine._execute` does: `register` a run, `acquire` its thread, and at its end `release` it and
then wake its waiters (`handle._finish()`). They cover admission under each multitask strategy,
FIFO order for `enqueue`, stop before start, stop by run id and by thread id, release idempotence,
and `size()` back to zero.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from tether.coordination import RunRegistry, StopResult
from tether.errors import ThreadBusyError
from tether.handle import RunHandle
from tether.ids import new_id
from tether.run import MultitaskStrategy, RunRecord
from tether.stop import StopRequest

pytestmark = pytest.mark.anyio

WATCHDOG = 10.0  # seconds; a test that needs it has hung


def run_on(thread_id: str) -> RunHandle:
    """A fresh pending run on `thread_id`."""
    return RunHandle(RunRecord(run_id=new_id(), thread_id=thread_id))


async def settle(condition: Callable[[], bool] = lambda: True) -> None:
    """Let every task run until it blocks, until `condition()` holds (under the test's watchdog)."""
    await wait_all_tasks_blocked()
    while not condition():
        await checkpoint()
        await wait_all_tasks_blocked()


async def end(registry: RunRegistry, handle: RunHandle) -> None:
    """What the engine does when a run ended: release its thread, then wake its waiters."""
    await registry.release(handle)
    handle._finish()


async def admitted(
    registry: RunRegistry,
    handle: RunHandle,
    strategy: MultitaskStrategy,
    order: list[str],
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Register `handle`, wait for its thread, and record when it got it."""
    await registry.register(handle)
    task_status.started()
    await registry.acquire(handle, strategy)
    order.append(handle.run_id)


async def test_reject_refuses_a_busy_thread_and_holds_nothing(registry: RunRegistry) -> None:
    thread = new_id()
    holder, late = run_on(thread), run_on(thread)
    with anyio.fail_after(WATCHDOG) as watchdog:
        await registry.register(holder)
        await registry.acquire(holder, "reject")
        await registry.register(late)
        with pytest.raises(ThreadBusyError) as caught:
            await registry.acquire(late, "reject")
        assert caught.value.active_run_id == holder.run_id
        assert registry.active_on(thread) is holder
        await end(registry, late)
        await end(registry, holder)
    assert not watchdog.cancel_called
    assert registry.size() == 0


async def test_reject_waits_for_a_holder_that_is_already_stopping(registry: RunRegistry) -> None:
    thread = new_id()
    holder, late = run_on(thread), run_on(thread)
    order: list[str] = []
    with anyio.fail_after(WATCHDOG) as watchdog:
        await registry.register(holder)
        await registry.acquire(holder, "reject")
        assert await registry.request_stop(StopRequest(), run_id=holder.run_id)
        async with anyio.create_task_group() as tg:
            await tg.start(admitted, registry, late, "reject", order)
            await settle()
            assert order == []  # waits, is not refused
            await end(registry, holder)
        assert order == [late.run_id]
        assert registry.active_on(thread) is late
        await end(registry, late)
    assert not watchdog.cancel_called
    assert registry.size() == 0


@pytest.mark.parametrize(("strategy", "mode"), [("interrupt", "now"), ("rollback", "rollback")])
async def test_interrupt_and_rollback_stop_the_holder_and_go_first(
    registry: RunRegistry, strategy: MultitaskStrategy, mode: str
) -> None:
    thread = new_id()
    holder, queued, newcomer = run_on(thread), run_on(thread), run_on(thread)
    order: list[str] = []
    with anyio.fail_after(WATCHDOG) as watchdog:
        await registry.register(holder)
        await registry.acquire(holder, "reject")
        async with anyio.create_task_group() as tg:
            await tg.start(admitted, registry, queued, "enqueue", order)
            await settle()
            assert not holder.token.requested  # enqueue stops nobody
            await tg.start(admitted, registry, newcomer, strategy, order)
            await settle(lambda: holder.token.requested)
            request = holder.token.request
            assert request is not None
            assert request.requested_by == "superseded"
            assert holder.token.mode == mode
            assert newcomer.run_id in (request.reason or "")
            assert order == []  # the holder still holds the thread
            await end(registry, holder)
            await settle(lambda: len(order) == 1)
            assert order == [newcomer.run_id]  # before the run that queued earlier
            await end(registry, newcomer)
        assert order == [newcomer.run_id, queued.run_id]
        await end(registry, queued)
    assert not watchdog.cancel_called
    assert registry.size() == 0


async def test_enqueue_admits_waiting_runs_in_fifo_order(registry: RunRegistry) -> None:
    thread = new_id()
    holder = run_on(thread)
    waiting = [run_on(thread) for _ in range(4)]
    order: list[str] = []
    with anyio.fail_after(WATCHDOG) as watchdog:
        await registry.register(holder)
        await registry.acquire(holder, "enqueue")
        async with anyio.create_task_group() as tg:
            for handle in waiting:
                await tg.start(admitted, registry, handle, "enqueue", order)
                await settle()  # queued before the next one arrives
            assert order == []
            for handle in [holder, *waiting[:-1]]:
                await end(registry, handle)
                await settle(lambda h=handle: registry.active_on(thread) not in (None, h))
        await end(registry, waiting[-1])
    assert not watchdog.cancel_called
    assert order == [h.run_id for h in waiting]
    assert registry.size() == 0


async def test_acquire_cancelled_while_waiting_leaves_the_queue(registry: RunRegistry) -> None:
    thread = new_id()
    holder, quitter, next_run = run_on(thread), run_on(thread), run_on(thread)
    order: list[str] = []
    with anyio.fail_after(WATCHDOG) as watchdog:
        await registry.register(holder)
        await registry.acquire(holder, "enqueue")
        async with anyio.create_task_group() as tg:
            quitting = anyio.CancelScope()

            async def quit_waiting() -> None:
                with quitting:
                    await admitted(registry, quitter, "enqueue", order)

            tg.start_soon(quit_waiting)
            await settle()
            await tg.start(admitted, registry, next_run, "enqueue", order)
            await settle()
            quitting.cancel()
            await settle()
            await end(registry, quitter)
            await end(registry, holder)
        assert order == [next_run.run_id]
        await end(registry, next_run)
    assert not watchdog.cancel_called
    assert registry.size() == 0


@pytest.mark.parametrize("by", ["run_id", "thread_id"])
async def test_stop_before_start_is_accepted_and_names_the_run(
    registry: RunRegistry, by: str
) -> None:
    thread = new_id()
    pending = run_on(thread)
    with anyio.fail_after(WATCHDOG) as watchdog:
        await registry.register(pending)
        target = {by: pending.run_id if by == "run_id" else thread}
        result = await registry.request_stop(StopRequest(reason="early"), **target)
        assert result == StopResult(accepted=True, run_id=pending.run_id, handle=pending)
        assert pending.token.requested
        assert pending.token.request is not None
        assert pending.token.request.reason == "early"
        await end(registry, pending)
    assert not watchdog.cancel_called
    assert registry.size() == 0


async def test_stop_by_thread_id_reaches_the_holder_not_a_waiter(registry: RunRegistry) -> None:
    thread = new_id()
    holder, queued = run_on(thread), run_on(thread)
    order: list[str] = []
    with anyio.fail_after(WATCHDOG) as watchdog:
        await registry.register(holder)
        await registry.acquire(holder, "enqueue")
        async with anyio.create_task_group() as tg:
            await tg.start(admitted, registry, queued, "enqueue", order)
            await settle()
            result = await registry.request_stop(StopRequest(), thread_id=thread)
            assert result.accepted
            assert result.run_id == holder.run_id
            assert result.handle is holder
            assert holder.token.requested
            assert not queued.token.requested
            await end(registry, holder)
        await end(registry, queued)
    assert not watchdog.cancel_called
    assert registry.size() == 0


async def test_stop_by_run_id_stops_only_that_run(registry: RunRegistry) -> None:
    one, other = run_on(new_id()), run_on(new_id())
    with anyio.fail_after(WATCHDOG) as watchdog:
        for handle in (one, other):
            await registry.register(handle)
            await registry.acquire(handle, "reject")
        result = await registry.request_stop(StopRequest(), run_id=other.run_id)
        assert result == StopResult(accepted=True, run_id=other.run_id, handle=other)
        assert not one.token.requested
        # The run id on another thread than the one named: not that run, so nothing is stopped.
        wrong = await registry.request_stop(
            StopRequest(), run_id=one.run_id, thread_id=other.thread_id
        )
        assert wrong == StopResult(accepted=False)
        assert not one.token.requested
        await end(registry, one)
        await end(registry, other)
    assert not watchdog.cancel_called
    assert registry.size() == 0


async def test_stop_of_an_unknown_or_ended_run_is_not_accepted(registry: RunRegistry) -> None:
    thread = new_id()
    ended = run_on(thread)
    with anyio.fail_after(WATCHDOG) as watchdog:
        assert not await registry.request_stop(StopRequest(), run_id=new_id())
        assert not await registry.request_stop(StopRequest(), thread_id=new_id())
        await registry.register(ended)
        await registry.acquire(ended, "reject")
        await end(registry, ended)
        for target in ({"run_id": ended.run_id}, {"thread_id": thread}):
            result = await registry.request_stop(StopRequest(), **target)
            assert result == StopResult(accepted=False)
            assert result.run_id is None  # never the id of a run that did not accept it
        assert not ended.token.requested
    assert not watchdog.cancel_called
    assert registry.size() == 0


async def test_a_repeated_stop_is_accepted_and_the_first_reason_wins(
    registry: RunRegistry,
) -> None:
    handle = run_on(new_id())
    with anyio.fail_after(WATCHDOG) as watchdog:
        await registry.register(handle)
        await registry.acquire(handle, "reject")
        first = await registry.request_stop(StopRequest(reason="first"), run_id=handle.run_id)
        again = await registry.request_stop(
            StopRequest(reason="second"), thread_id=handle.thread_id
        )
        assert first.accepted
        assert again.accepted
        assert again.run_id == handle.run_id
        assert handle.token.request is not None
        assert handle.token.request.reason == "first"
        await end(registry, handle)
    assert not watchdog.cancel_called
    assert registry.size() == 0


async def test_local_views_list_exactly_the_active_local_runs(registry: RunRegistry) -> None:
    thread = new_id()
    holder, pending = run_on(thread), run_on(new_id())
    with anyio.fail_after(WATCHDOG) as watchdog:
        assert registry.local_runs() == []
        await registry.register(holder)
        await registry.acquire(holder, "reject")
        await registry.register(pending)
        assert {h.run_id for h in registry.local_runs()} == {holder.run_id, pending.run_id}
        assert registry.local(holder.run_id) is holder
        assert registry.local(pending.run_id) is pending
        assert registry.active_on(thread) is holder
        assert registry.active_on(pending.thread_id) is None  # registered, not admitted
        await end(registry, holder)
        assert registry.local(holder.run_id) is None
        assert registry.active_on(thread) is None
        assert [h.run_id for h in registry.local_runs()] == [pending.run_id]
        await end(registry, pending)
        assert registry.local_runs() == []
    assert not watchdog.cancel_called


async def test_release_is_idempotent_and_size_returns_to_zero(registry: RunRegistry) -> None:
    thread = new_id()
    handles = [run_on(thread) for _ in range(3)]
    never_registered = run_on(thread)
    with anyio.fail_after(WATCHDOG) as watchdog:
        assert registry.size() == 0
        for handle in handles:
            await registry.register(handle)
        await registry.acquire(handles[0], "reject")
        assert registry.size() > 0
        for _ in range(2):
            for handle in [*handles, never_registered]:
                await registry.release(handle)
        await registry.release(never_registered)
        assert registry.size() == 0
        # The thread is free again: a new run takes it at once.
        fresh = run_on(thread)
        await registry.register(fresh)
        await registry.acquire(fresh, "reject")
        await end(registry, fresh)
    assert not watchdog.cancel_called
    assert registry.size() == 0


# What `test_conformance.py` star-imports: every test above.
__all__ = ["pytestmark", *(name for name in dict(globals()) if name.startswith("test_"))]
