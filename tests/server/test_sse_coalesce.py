"""SSE coalescing: a client that is behind gets a backlog of one message's text deltas as one
frame, and its ids still let it re-join exactly after any frame it saw."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tether.events import (
    Event,
    MessageDeltaEvent,
    NodeStarted,
    RunStarted,
    ToolCallStarted,
)
from tether.messages import ToolCallDelta
from tether.server.sse import COALESCE_RUN, coalesce_deltas
from tether.testing import Gate

from .test_api import HI, sse_events

pytestmark = pytest.mark.anyio

WATCHDOG = 10


def delta(seq: int, text: str, message_id: str = "m1", **kw: Any) -> MessageDeltaEvent:
    return MessageDeltaEvent(
        run_id="r", thread_id="t", seq=seq, ts=float(seq), message_id=message_id, content=text, **kw
    )


def test_a_backlog_of_one_message_becomes_one_delta_and_everything_else_stays() -> None:
    batch: list[Event] = [
        RunStarted(run_id="r", thread_id="t", seq=0, ts=0.0),
        NodeStarted(run_id="r", thread_id="t", seq=1, ts=1.0, node="model", step=0),
        *(delta(seq, text) for seq, text in enumerate("abcde", start=2)),  # seqs 2..6
        delta(7, "x", "m2"),  # another message: not merged with m1's run
        delta(8, "y", "m2"),
        delta(9, "", tool_calls=(ToolCallDelta(index=0, id="c1", name="f", arguments=""),)),
        ToolCallStarted(run_id="r", thread_id="t", seq=10, ts=10.0, tool_call_id="c1", name="f"),
    ]
    out = coalesce_deltas(batch)
    assert [e.seq for e in out] == [0, 1, 6, 7, 8, 9, 10]
    merged = out[2]
    assert isinstance(merged, MessageDeltaEvent)
    assert (merged.content, merged.message_id, merged.ts) == ("abcde", "m1", 6.0)
    assert out[3:] == batch[7:]  # shorter runs, tool-call fragments and other events as they were
    text = "".join(e.content for e in out if isinstance(e, MessageDeltaEvent))
    assert text == "".join(e.content for e in batch if isinstance(e, MessageDeltaEvent))


def test_short_runs_and_small_batches_are_left_alone() -> None:
    short = [delta(seq, "t") for seq in range(COALESCE_RUN - 1)]
    assert coalesce_deltas(short) is short
    mixed: list[Event] = [delta(0, "a"), delta(1, "b"), delta(2, "c", "m2"), delta(3, "d")]
    assert coalesce_deltas(mixed) == mixed


async def test_a_client_behind_gets_one_frame_for_the_backlog_and_rejoins_exactly(
    make_served: Any,
) -> None:
    gate = Gate("after five")
    served = await make_served(["a", "b", "c", "d", "e", gate, "f", "g"])
    with anyio.fail_after(WATCHDOG) as watchdog:
        r = await served.client.post("/threads/t1/runs", json=HI)
        run_id = r.json()["run_id"]
        await gate.reached()  # five deltas are logged, nobody has read them: a backlog
        body: dict[str, str] = {}

        async def join() -> None:
            joined = await served.client.get(f"/threads/t1/runs/{run_id}/stream")
            body["text"] = joined.text

        async with anyio.create_task_group() as tg:
            tg.start_soon(join)
            await anyio.wait_all_tasks_blocked()  # the writer sent the backlog and waits
            gate.release()
        # Re-join after the merged frame, as a client that saw it and reconnects does.
        first = sse_events(body["text"])
        merged = [(i, d) for e, i, d in first if e == "message_delta" and d["content"] == "abcde"]
        assert len(merged) == 1
        merged_id, merged_data = merged[0]
        again = await served.client.get(
            f"/threads/t1/runs/{run_id}/stream", headers={"Last-Event-ID": merged_id}
        )
    assert not watchdog.cancelled_caught
    assert merged_data["seq"] == int(merged_id)
    for event, ident, data in first:
        assert ident == str(data["seq"])
        assert event == data["type"]
    ids = [int(i) for _, i, _ in first]
    assert ids == sorted(set(ids))  # increasing; the merged frame skips the seqs it covers
    assert "".join(d["content"] for e, _, d in first if e == "message_delta") == "abcdefg"
    rest = sse_events(again.text)
    assert [int(i) for _, i, _ in rest] == list(range(int(merged_id) + 1, ids[-1] + 1))
    assert "".join(d["content"] for e, _, d in rest if e == "message_delta") == "fg"
    assert [e for e, _, _ in rest].count("run_finished") == 1
    assert rest[-1][2]["status"] == "completed"
