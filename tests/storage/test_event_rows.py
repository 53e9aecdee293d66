"""The coalesced event log (`_rows.encode_events`): many token rows in, the same events out.

SQLite stores runs of consecutive text deltas of one message as one row. These tests check, for
random event sequences committed in random batches, that a re-join from every event id reads
exactly the events after it (S8: gapless, no duplicates, same values), that the log really is
coalesced, and that a malformed coalesced row is reported as corrupt.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.errors import CorruptRecordError, UserError
from tether.events import CustomEvent, Event, MessageDeltaEvent, NodeStarted, replace
from tether.messages import ToolCallDelta
from tether.storage._rows import DELTAS_PER_ROW, decode_event_rows, encode_events
from tether.storage.sqlite import SqliteCheckpointer

RUN, THREAD = "run-1", "thread-1"

# One event kind per draw: a plain text delta of message "a" or "b" (from node "x" or "y"; "@sub":
# forwarded from a child run, with that `path`), a delta with a tool-call fragment, or another
# event type; `seq` and `ts` are filled in later.
_KIND = st.sampled_from(
    ["a/x", "a/x", "a/x", "a/y", "b/x", "a/x@sub", "a/x@sub", "tool", "custom", "node"]
)


def _events(kinds: list[str], start: int = 0) -> list[Event]:
    out: list[Event] = []
    for i, kind in enumerate(kinds, start):
        base = {"run_id": RUN, "thread_id": THREAD, "seq": i, "ts": 1_700_000_000.125 + i / 7}
        if kind == "tool":
            frag = (ToolCallDelta(index=0, id="c1", name="f", arguments='{"'),)
            out.append(MessageDeltaEvent(**base, node="x", message_id="a", tool_calls=frag))
        elif kind == "custom":
            out.append(CustomEvent(**base, data={"i": i}))
        elif kind == "node":
            out.append(NodeStarted(**base, node="x", step=i))
        else:
            kind, _, sub = kind.partition("@")
            message_id, node = kind.split("/")
            content = f"t{i} é👋 " if i % 3 else ""
            path = (sub,) if sub else ()
            out.append(
                MessageDeltaEvent(
                    **base, node=node, path=path, message_id=message_id, content=content
                )
            )
    return out


def _rows(path: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        found: int = conn.execute("SELECT count(*) FROM tether_events").fetchone()[0]
        return found


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kinds=st.lists(_KIND, min_size=1, max_size=60), cuts=st.lists(st.integers(0, 60)))
def test_rejoin_from_every_event_id_is_exact_and_gapless(
    tmp_path: Path, kinds: list[str], cuts: list[int]
) -> None:
    events = _events(kinds)
    path = os.fspath(tmp_path / f"{uuid.uuid4().hex}.db")  # one file per example

    async def main() -> None:
        with anyio.fail_after(30) as watchdog:
            async with SqliteCheckpointer(path) as store:
                # Commit in the random batches the engine's flushes would make.
                bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
                for lo, hi in itertools.pairwise(bounds):
                    await store.commit(events=events[lo:hi])
                for after in range(-1, len(events) + 1):
                    assert await store.read_events(RUN, after_seq=after) == events[after + 1 :]
        assert not watchdog.cancel_called

    anyio.run(main)


def test_a_streamed_answer_is_stored_in_few_rows(tmp_path: Path) -> None:
    n = 3 * DELTAS_PER_ROW + 5
    events = _events(["a/x"] * n)
    path = os.fspath(tmp_path / "t.db")

    async def main() -> None:
        with anyio.fail_after(30) as watchdog:
            async with SqliteCheckpointer(path) as store:
                await store.commit(events=events)
                assert await store.read_events(RUN) == events
        assert not watchdog.cancel_called

    anyio.run(main)
    assert _rows(path) == 4


@pytest.mark.parametrize(
    "body",
    [
        '{"deltas": {"run_id": 1}, "ts": [], "content": []}',
        '{"deltas": {"run_id": "r", "thread_id": "t", "node": null, "message_id": "m", '
        '"role": "assistant", "seq": 0}, "ts": [1.0], "content": []}',
        '{"deltas": {"run_id": "r", "thread_id": "t", "node": null, "message_id": "m", '
        '"role": "assistant", "seq": 0}, "ts": ["x"], "content": [1]}',
    ],
)
def test_malformed_coalesced_row_is_corrupt(body: str) -> None:
    with pytest.raises(CorruptRecordError, match=r"tether_events row 7 \(run 'r'\)"):
        decode_event_rows("r", [(7, body)])


def test_encoding_keeps_other_events_and_tool_fragments_one_per_row() -> None:
    events = _events(["a/x", "tool", "a/x", "custom", "a/x", "a/x", "node", "b/x", "a/x"])
    rows = encode_events(events)
    # Only the two adjacent "a/x" deltas (seq 4, 5) share a row; its seq is the last one's.
    assert [seq for _, _, seq, _ in rows] == [0, 1, 2, 3, 5, 6, 7, 8]
    decoded = decode_event_rows(RUN, [(i, body) for i, (_, _, _, body) in enumerate(rows)])
    assert decoded == events


def test_unstorable_token_raises_user_error_and_stores_nothing(tmp_path: Path) -> None:
    events = _events(["a/x", "a/x", "a/x"])
    assert isinstance(events[1], MessageDeltaEvent)
    events[1] = replace(events[1], content="half a pair \ud800")
    path = os.fspath(tmp_path / "t.db")

    async def main() -> None:
        with anyio.fail_after(30) as watchdog:
            async with SqliteCheckpointer(path) as store:
                with pytest.raises(UserError, match="events 0-2 of run 'run-1' cannot be stored"):
                    await store.commit(events=events)
                assert await store.read_events(RUN) == []
        assert not watchdog.cancel_called

    anyio.run(main)
