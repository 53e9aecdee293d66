"""Text spans: the runs of tokens a run's handle logs for one message, which storage keeps in few
rows without comparing them (`RunHandle.text_spans`, `tether.storage.EventBatch`).

A wrong span would store events under another event's node or message, so these tests check the
spans against the events themselves, for random interleavings of tokens of several messages and
nodes with other events, cut into random commit batches.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from tether import StateGraph
from tether.events import CustomEvent, MessageDeltaEvent, RunFinished
from tether.handle import RunHandle, TextKey
from tether.messages import ToolCallDelta
from tether.run import RunRecord
from tether.storage import EventBatch
from tether.storage._rows import decode_event_rows, encode_events
from tether.storage.sqlite import SqliteCheckpointer

KEYS: list[TextKey] = [("x", "a"), ("y", "a"), ("x", "b"), (None, "a")]
_OP = st.one_of(
    st.tuples(st.just("text"), st.integers(0, len(KEYS) - 1)),
    st.tuples(st.just("copy"), st.integers(0, len(KEYS) - 1)),  # an equal key, another object
    st.tuples(st.just("custom"), st.just(0)),
    st.tuples(st.just("tool"), st.just(0)),
)


def _log(ops: list[tuple[str, int]]) -> tuple[RunHandle, list[object | None]]:
    """A handle with `ops` logged, and the `emit_text` key object of each event (None: other)."""
    handle = RunHandle(RunRecord(run_id="r", thread_id="t"))
    keys: list[object | None] = []
    for op, i in ops:
        if op in ("text", "copy"):
            key = KEYS[i] if op == "text" else (KEYS[i][0], "".join(KEYS[i][1]))
            handle.emit_text(key, f"tok{len(keys)} ")
            keys.append(key)
        elif op == "custom":
            handle.emit(CustomEvent, data={"n": len(keys)})
            keys.append(None)
        else:
            fragment = (ToolCallDelta(index=0, id="c", name="f", arguments="{"),)
            handle.emit(MessageDeltaEvent, node="x", message_id="a", tool_calls=fragment)
            keys.append(None)
    return handle, keys


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_OP, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=4))
def test_spans_are_exactly_the_runs_of_one_emit_text_key(
    ops: list[tuple[str, int]], cuts: list[int]
) -> None:
    handle, keys = _log(ops)
    events = handle.events
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    for start, stop in itertools.pairwise(bounds):
        spans = handle.text_spans(start, stop)
        covered = set()
        for first, end in spans:
            assert first >= 0 and first + 2 <= end <= stop - start
            batch = events[start + first : start + end]
            head = batch[0]
            assert isinstance(head, MessageDeltaEvent)
            for k, event in enumerate(batch):
                # Every event of a span may be stored under the first one's fields.
                assert isinstance(event, MessageDeltaEvent)
                assert event.seq == head.seq + k and not event.tool_calls
                assert (event.node, event.message_id, event.path, event.role) == (
                    head.node,
                    head.message_id,
                    head.path,
                    head.role,
                )
                assert keys[event.seq] is keys[head.seq]
            covered |= set(range(start + first, start + end))
        # And spans are maximal: two neighbours logged with the same key share a span.
        for seq in range(start, stop - 1):
            if keys[seq] is not None and keys[seq] is keys[seq + 1]:
                assert seq in covered and seq + 1 in covered
        assert [f for f, _ in spans] == sorted(f for f, _ in spans)


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(_OP, max_size=40), cut=st.integers(0, 40))
def test_a_batch_stored_by_its_spans_decodes_to_its_events(
    ops: list[tuple[str, int]], cut: int
) -> None:
    handle, _ = _log(ops)
    events = handle.events
    for start, stop in ((0, min(cut, len(events))), (min(cut, len(events)), len(events))):
        batch = EventBatch(events[start:stop], handle.text_spans(start, stop))
        rows = encode_events(batch)
        decoded = decode_event_rows("r", [(i, body) for i, (*_, body) in enumerate(rows)])
        assert decoded == events[start:stop]


def test_a_span_that_does_not_fit_its_batch_is_compared_instead() -> None:
    handle, _ = _log([("text", 0)] * 5 + [("custom", 0)])
    events = handle.events
    # Spans that do not match (the batch lost an event, or points past its end) are not trusted.
    gapped = [*events[:2], *events[3:]]
    for listed, wrong in (
        (gapped, [(0, 5)]),
        (gapped, [(1, 7)]),
        (gapped, [(0, 2), (1, 4)]),
        (events, [(0, 3), (1, 4)]),  # each fits, but they overlap
        (events, [(2, 4), (0, 2)]),  # each fits, but out of order
    ):
        batch = EventBatch(listed, wrong)
        rows = encode_events(batch)
        decoded = decode_event_rows("r", [(i, body) for i, (*_, body) in enumerate(rows)])
        assert decoded == batch


def test_a_span_whose_ends_are_different_messages_is_compared_instead() -> None:
    handle, _ = _log([("text", 0), ("text", 0), ("text", 2), ("text", 2)])
    batch = EventBatch(handle.events, [(0, 4)])  # seqs fit, but the ends are messages a and b
    rows = encode_events(batch)
    assert decode_event_rows("r", [(i, body) for i, (*_, body) in enumerate(rows)]) == batch


def test_a_finished_run_logs_no_more_tokens_and_ends_its_span() -> None:
    handle, _ = _log([("text", 0)] * 3)
    handle.finish_events()
    handle.emit_text(KEYS[0], "late")
    final = RunFinished(run_id="r", thread_id="t", seq=3, ts=0.0, status="cancelled")
    handle.events.append(final)
    assert len(handle.events) == 4 and handle.events[-1] is final
    assert handle.text_spans(0, 4) == [(0, 3)]


def test_a_streamed_run_on_sqlite_stores_its_tokens_in_few_rows_and_reads_back_exactly(
    tmp_path: Path,
) -> None:
    # Two parallel nodes interleave their tokens, and one sends custom events between them.
    async def left(state: dict[str, Any]) -> Any:
        for i in range(600):
            yield f"L{i} "
            if i % 200 == 0:
                await asyncio.sleep(0)

    async def right(state: dict[str, Any], ctx: Any) -> Any:
        for i in range(600):
            yield f"R{i} "
            if i % 150 == 0:
                ctx.emit({"i": i})
                await asyncio.sleep(0)

    path = os.fspath(tmp_path / "t.db")

    async def main() -> None:
        with anyio.fail_after(60) as watchdog:
            async with SqliteCheckpointer(path) as store:
                g = StateGraph()
                g.add_node("left", left)
                g.add_node("right", right)
                g.set_entry_point("left")
                g.set_entry_point("right")
                app = g.compile(store)
                live = [event async for event in app.astream("go", thread_id="t")]
                rows = await store._run(
                    lambda c: c.execute("SELECT count(*) FROM tether_events").fetchone()[0]
                )
                assert await store.read_events(live[0].run_id) == live
                tokens = sum(isinstance(e, MessageDeltaEvent) for e in live)
                assert tokens == 1200
                assert rows < len(live) - tokens + tokens // 20  # 1,200 tokens in a few rows
        assert not watchdog.cancel_called

    anyio.run(main)
