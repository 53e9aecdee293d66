"""Helpers for the flow tests: fresh flows, and the stop-contract invariant checks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

from tether import InMemoryCheckpointer, RunFinished, RunRecord, _portal
from tether.events import CustomEvent, Event
from tether.flow import Flow, FlowData, FlowRun
from tether.storage.base import Checkpointer

WATCHDOG = 10  # seconds; a test that needs more than this hangs

# Every checkpointer a test made with `memory()`: after the test, each stored run must have ended
# with exactly one terminal event (S1), checked by the autouse fixture in conftest.py.
TRACKED: list[Checkpointer] = []


def memory() -> InMemoryCheckpointer:
    """In-memory storage whose runs are checked for S1 after the test."""
    checkpointer = InMemoryCheckpointer()
    TRACKED.append(checkpointer)
    return checkpointer


def new_flow() -> Flow:
    """A flow on in-memory storage (checked for S1 after the test)."""
    return Flow(checkpointer=memory())


async def check_stored_runs(checkpointer: Checkpointer) -> int:
    """S1 for every run in `checkpointer`: it ended, and its log ends with one terminal event
    that matches its record. Returns how many runs there were."""
    runs = await checkpointer.list_runs(limit=10_000)
    for record in runs:
        assert not record.is_active, f"run {record.run_id} is still {record.status}"
        final = check_terminal(await checkpointer.read_events(record.run_id))
        assert final.status == record.status
    return len(runs)


def wait_ended(flow: Flow, run_id: str) -> None:
    """From sync code: block until the run has ended (no-op if it already has)."""
    handle = flow.registry.local(run_id)
    if handle is not None:
        _portal.call(handle.wait)


def check_terminal(events: list[Event]) -> RunFinished:
    """S1: exactly one terminal event, and it is the last; seqs are 0, 1, 2, …"""
    finals = [e for e in events if isinstance(e, RunFinished)]
    assert len(finals) == 1, f"expected one run_finished, got {finals!r}"
    assert events[-1] is finals[0] or events[-1] == finals[0]
    assert [e.seq for e in events] == list(range(len(events)))
    return finals[0]


async def check_run(flow: Flow, run: FlowRun) -> RunFinished:
    """S1 on the live events and on the stored event log; returns the terminal event."""
    with anyio.fail_after(WATCHDOG):
        await run.wait()
    final = check_terminal(list(run.events))
    stored = await flow.checkpointer.read_events(run.run_id)
    assert check_terminal(stored) == final
    assert len(stored) == len(run.events)
    return final


def check_stop_record(record: RunRecord | None, *, mode: str = "now", by: str = "user") -> None:
    """S7: the record shows the stop: when it was requested and took effect, mode, who asked."""
    assert record is not None
    assert record.status == "cancelled"
    assert record.stop_mode == mode
    assert record.stop_requested_by == by
    assert record.stop_requested_at is not None
    assert record.stopped_at is not None
    assert record.stopped_at >= record.stop_requested_at


def items_of(events: list[Event]) -> list[Any]:
    """The data of the run's `custom` events: its stream items."""
    return [e.data for e in events if isinstance(e, CustomEvent)]


async def settle(turns: int = 10) -> None:
    """Give every ready task of the loop a few turns (no sleeping: only checkpoints)."""
    for _ in range(turns):
        await checkpoint()


def task_count() -> int:
    return len(asyncio.all_tasks())


@dataclass
class Log:
    """Records handler activity, with the run's event count at that moment (the seq the run's
    next event gets), so it can be compared with the terminal event's seq."""

    flow: Flow
    entries: list[tuple[str, int]] = field(default_factory=list)

    def add(self, data: FlowData, what: str) -> None:
        handle = self.flow.registry.local(data.run_id)
        # After the terminal event the run is gone from the registry: record that as "after".
        self.entries.append((what, len(handle.events) if handle is not None else 10**9))

    def names(self) -> list[str]:
        return [what for what, _ in self.entries]
