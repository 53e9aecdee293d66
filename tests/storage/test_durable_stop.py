"""What a stop produces is durable: a new process that opens the same database sees it.

Runs real engines on SQLite and Postgres, stops them, and reads the result back from a fresh
Python process. A run whose process is killed is marked `failed` (`worker_lost`) by the next one,
and its thread goes on from the last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tether import Agent, tool
from tether.storage.base import Checkpointer
from tether.testing import Gate, ScriptedModel, ToolCallStep

pytestmark = pytest.mark.anyio

READ_BACK = """
import asyncio, json, sys
from tether.storage.sqlite import SqliteCheckpointer

async def main(kind, where, thread_id, run_id):
    if kind == "sqlite":
        store = SqliteCheckpointer(where)
    else:
        from tether.storage.postgres import PostgresCheckpointer
        store = PostgresCheckpointer(where)
    async with store:
        head = await store.get_checkpoint(thread_id)
        run = await store.get_run(run_id)
        events = await store.read_events(run_id)
    print(json.dumps({
        "messages": [m.model_dump(mode="json") for m in head.values["messages"]],
        "run": run.model_dump(mode="json"),
        "last_event": events[-1].type if events else None,
        "terminal": [e.status for e in events if e.type == "run_finished"],
    }))

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "durable.db")
    return "postgres", request.getfixturevalue("postgres_dsn")


def open_store(database: tuple[str, str]) -> Checkpointer:
    kind, where = database
    if kind == "sqlite":
        from tether.storage.sqlite import SqliteCheckpointer

        return SqliteCheckpointer(where)
    from tether.storage.postgres import PostgresCheckpointer

    return PostgresCheckpointer(where)


def read_back(database: tuple[str, str], thread_id: str, run_id: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", READ_BACK, *database, thread_id, run_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@tool
async def slow_search(q: str) -> str:
    """Search, slowly."""
    await anyio.sleep_forever()
    return "unreachable"


async def test_a_now_stop_is_visible_to_a_new_process(database: tuple[str, str]) -> None:
    gate = Gate()
    model = ScriptedModel(
        ["Let me ", "look", gate, ToolCallStep("slow_search", {"q": "x"}, id="c1")]
    )
    store = open_store(database)
    agent = Agent(model, tools=[slow_search], checkpointer=store)
    handle = await agent.astart("hello", thread_id="durable")
    await gate.reached()
    assert await agent.astop(thread_id="durable", reason="user pressed stop")
    await store.aclose()

    seen = await anyio.to_thread.run_sync(read_back, database, "durable", handle.run_id)
    messages = seen["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "hello", "complete"),
        ("assistant", "Let me look", "stopped"),
    ]
    run = seen["run"]
    assert run["status"] == "cancelled"
    assert run["stop_mode"] == "now"
    assert run["stop_reason"] == "user pressed stop"
    assert run["stop_requested_by"] == "user"
    assert run["stop_requested_at"] <= run["stopped_at"]
    assert seen["last_event"] == "run_finished"
    assert seen["terminal"] == ["cancelled"]


async def test_a_stop_mid_tool_leaves_a_repaired_transcript_for_a_new_process(
    database: tuple[str, str],
) -> None:
    model = ScriptedModel([ToolCallStep("slow_search", {"q": "x"}, id="c1")])
    store = open_store(database)
    agent = Agent(model, tools=[slow_search], checkpointer=store)
    handle = await agent.astart("hello", thread_id="tools")
    with anyio.fail_after(10):
        while not any(e.type == "tool_call_started" for e in handle.events):
            await handle.wait_for_events(len(handle.events))
    assert await agent.astop(thread_id="tools")
    await store.aclose()
    seen = await anyio.to_thread.run_sync(read_back, database, "tools", handle.run_id)
    roles = [(m["role"], m["status"], m.get("tool_call_id")) for m in seen["messages"]]
    assert roles == [
        ("user", "complete", None),
        ("assistant", "complete", None),
        ("tool", "cancelled", "c1"),
    ]


async def test_a_rollback_stop_restores_the_state_from_before_the_run(
    database: tuple[str, str],
) -> None:
    gate = Gate()
    model = ScriptedModel("first answer", ["second ", gate, "never"])
    store = open_store(database)
    agent = Agent(model, checkpointer=store)
    await agent.ainvoke("one", thread_id="rb")
    before = [m.model_dump(mode="json") for m in await agent.aget_messages("rb")]
    handle = await agent.astart("two", thread_id="rb")
    await gate.reached()
    assert await agent.astop(thread_id="rb", mode="rollback")
    await store.aclose()
    seen = await anyio.to_thread.run_sync(read_back, database, "rb", handle.run_id)
    assert seen["messages"] == before
    assert seen["run"]["stop_mode"] == "rollback"


CRASHING_RUN = """
import asyncio, sys
from pathlib import Path
from tether import StateGraph, Message
from tether.storage.sqlite import SqliteCheckpointer

async def main(kind, where, marker):
    if kind == "sqlite":
        store = SqliteCheckpointer(where)
    else:
        from tether.storage.postgres import PostgresCheckpointer
        store = PostgresCheckpointer(where)

    async def hang(state):
        yield "partial "
        Path(marker).write_text("entered")
        await asyncio.sleep(3600)

    g = StateGraph()
    g.add_node("hang", hang)
    g.set_entry_point("hang")
    app = g.compile(store)
    handle = await app.astart("before the crash", thread_id="crash")
    print(handle.run_id, flush=True)
    await handle.wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_crashed_run_is_marked_worker_lost_and_the_thread_goes_on(
    database: tuple[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "entered"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RUN, *database, str(marker)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        run_id = (await anyio.to_thread.run_sync(proc.stdout.readline)).strip()
        with anyio.fail_after(30):
            while not marker.exists():  # a file the child writes; polled: it is another process
                await anyio.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]

    store = open_store(database)
    agent = Agent(ScriptedModel("after the crash"), checkpointer=store)
    record = await agent.aget_run(run_id)
    assert record is not None
    assert record.status == "failed"
    assert record.error is not None and record.error.startswith("worker_lost")
    events = [e async for e in await agent.ajoin(run_id)]
    assert events[-1].type == "run_finished"
    assert events[-1].reason == "worker_lost"  # type: ignore[union-attr]
    result = await agent.ainvoke("hello again", thread_id="crash")  # not wedged
    assert [m.content for m in result["messages"]] == [
        "before the crash",
        "hello again",
        "after the crash",
    ]
    await store.aclose()
