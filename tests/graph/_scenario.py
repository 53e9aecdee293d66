"""A graph that can be stopped at every kind of point, and the S1–S8 invariant checks."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import anyio

from tether import (
    END,
    CompiledGraph,
    InMemoryCheckpointer,
    Message,
    RunFinished,
    RunRecord,
    StateGraph,
)
from tether.events import Event
from tether.transcript import dangling_tool_calls

TOKENS = 5


@dataclass
class Probe:
    """Records what node code ran, and holds the gates that block each stop point."""

    log: list[str] = field(default_factory=list)
    agen_gate: anyio.Event = field(default_factory=anyio.Event)
    slow_entered: anyio.Event = field(default_factory=anyio.Event)
    slow_gate: anyio.Event = field(default_factory=anyio.Event)
    sync_entered: threading.Event = field(default_factory=threading.Event)
    sync_gate: threading.Event = field(default_factory=threading.Event)
    sync_exited: threading.Event = field(default_factory=threading.Event)
    router_entered: anyio.Event = field(default_factory=anyio.Event)
    router_gate: anyio.Event = field(default_factory=anyio.Event)

    def release_all(self) -> None:
        for gate in (self.agen_gate, self.slow_gate, self.router_gate):
            gate.set()
        self.sync_gate.set()


def build(probe: Probe, checkpointer: Any = None) -> CompiledGraph:
    async def talk(state: dict[str, Any]) -> Any:
        for i in range(TOKENS):
            probe.log.append(f"talk:{i}")
            yield f"tok{i} "
            await anyio.lowlevel.checkpoint()
        probe.log.append("talk:gate")
        await probe.agen_gate.wait()
        probe.log.append("talk:end")

    def blocking(state: dict[str, Any]) -> dict[str, Any]:
        probe.sync_entered.set()
        probe.sync_gate.wait(30)
        probe.log.append("sync:end")
        probe.sync_exited.set()
        return {"messages": [Message.assistant("sync result")]}

    async def slow(state: dict[str, Any]) -> dict[str, Any]:
        probe.slow_entered.set()
        await probe.slow_gate.wait()
        probe.log.append("slow:end")
        return {"messages": [Message.assistant("slow result")]}

    async def route(state: dict[str, Any]) -> str:
        probe.router_entered.set()
        await probe.router_gate.wait()
        probe.log.append("route:end")
        return "final"

    async def final(state: dict[str, Any]) -> Message:
        probe.log.append("final")
        return Message.assistant("done")

    g = StateGraph()
    g.add_node("talk", talk)
    g.add_node("sync", blocking)
    g.add_node("slow", slow)
    g.add_node("final", final)
    g.set_entry_point("talk")
    g.add_edge("talk", "sync")
    g.add_edge("talk", "slow")
    g.add_conditional_edges("slow", route)
    g.add_edge("final", END)
    return g.compile(checkpointer or InMemoryCheckpointer())


def check_terminal(events: list[Event]) -> RunFinished:
    """S1: seqs are 0..n-1 and exactly one run_finished ends the stream."""
    assert [e.seq for e in events] == list(range(len(events)))
    finals = [e for e in events if isinstance(e, RunFinished)]
    assert len(finals) == 1, finals
    assert events[-1] is finals[0]
    return finals[0]


def check_transcript(messages: list[Message]) -> None:
    """S4: the saved transcript is valid OpenAI-style input."""
    assert dangling_tool_calls(messages) == []
    ids = [m.id for m in messages]
    assert len(ids) == len(set(ids))
    for m in messages:
        assert m.status in ("complete", "stopped", "cancelled")


def check_stop_record(record: RunRecord, *, mode: str, requested_by: str = "user") -> None:
    """S7: the stop is recorded."""
    assert record.status == "cancelled"
    assert record.stop_mode == mode
    assert record.stop_requested_by == requested_by
    assert record.stop_requested_at is not None and record.stopped_at is not None
    assert record.stop_requested_at <= record.stopped_at
    assert record.finished_at is not None
