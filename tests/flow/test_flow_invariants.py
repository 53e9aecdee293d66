"""The stop contract for flows, by invariant, at random stop points (hypothesis).

Each example runs a flow whose handler ticks through a loop of emitted events, putting one stream
item per tick. The run is stopped at a random tick
with a random mode, by run id or by thread id; in half of the examples a handler's `finally` block
raises while the stop unwinds it (user code that fails during the stop). Afterwards: S1 (one
terminal event), S2 (the stop was accepted), S3 (no handler code after the terminal event), S5
(the thread takes a new run at once), S6 (no registry entries), S7 (the stop is recorded, or the
failure is).
"""

from __future__ import annotations

import anyio
from anyio.lowlevel import checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import InMemoryCheckpointer, RunFinished
from tether.events import Event
from tether.flow import Flow, FlowData

from ._support import check_stop_record, check_terminal

TICKS = 20


async def scenario(stop_at: int, mode: str, by_thread: bool, raising: bool) -> None:
    flow = Flow(checkpointer=InMemoryCheckpointer())
    log: list[str] = []
    reached = anyio.Event()
    gate = anyio.Event()

    async def tick(data: FlowData) -> str:
        value = int(data.value or 0)
        log.append(f"tick:{value}")
        data.put_into_stream(value)
        if value == stop_at:
            reached.set()
            try:
                await gate.wait()
            finally:
                if raising and data.stop_requested:
                    raise RuntimeError("cleanup failed during the stop")
        if value < TICKS:
            await data.emit("Tick", value + 1)
        return "done"

    flow.to(tick).end()
    flow.when("Tick").to(tick)
    events: list[Event] = []
    with anyio.fail_after(20) as watchdog:
        stream = flow.astream(0, thread_id="t")
        handle = await stream.start()
        stop_result = None
        async for event in stream:
            events.append(event)
            if stop_result is None and reached.is_set():
                target = {"thread_id": "t"} if by_thread else {"run_id": handle.run_id}
                stop_result = await flow.astop(**target, mode=mode, wait=False)
                gate.set()
        # S3: no handler code after the terminal event, even with every gate open.
        seen = len(log)
        gate.set()
        for _ in range(5):
            await checkpoint()
        assert log[seen:] == []
        final = check_terminal(events)  # S1
        assert stop_result is True  # S2
        record = await flow.aget_run(handle.run_id)
        assert record is not None
        if final.status == "failed":  # the handler's finally raised while the stop unwound it
            assert raising
            assert record.error is not None and "cleanup failed" in record.error
            assert record.stop_requested_at is not None
        elif mode == "after_step" and final.status == "completed":
            pass  # an after_step stop lets running handlers end; the loop may have ended too
        else:
            assert final.status == "cancelled"
            check_stop_record(record, mode=mode)  # S7
        assert await flow.astop(run_id=handle.run_id) is False  # S2: not after the end
        # S5: the thread takes a new run at once.
        gate.set()
        again = await flow.astart(TICKS, thread_id="t")
        assert await again.result() is not None
        assert isinstance(again.events[-1], RunFinished)
        assert again.events[-1].status == "completed"
    assert not watchdog.cancel_called
    assert flow.registry.size() == 0  # S6


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stop_at=st.integers(0, TICKS),
    mode=st.sampled_from(["now", "after_step", "rollback"]),
    by_thread=st.booleans(),
    raising=st.booleans(),
)
def test_flow_stopped_anywhere_keeps_the_contract(
    stop_at: int, mode: str, by_thread: bool, raising: bool
) -> None:
    anyio.run(scenario, stop_at, mode, by_thread, raising)
