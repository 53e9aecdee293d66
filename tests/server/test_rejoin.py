"""A re-join ends with the run's terminal event, whatever `Last-Event-ID` it starts from.

Defect: after a crash, the recovered `run_finished` reused a low seq (the live events had not been
stored yet), so `GET .../runs/{id}/stream` with `Last-Event-ID: 22` (the last id the client saw
before the crash) returned an empty body. The crash is reproduced in storage: a run left `running`
by a process that has exited, with only its first events logged; the server's engine recovers it
when it starts, exactly as after a SIGKILL.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tether.events import RunStarted
from tether.run import RunRecord
from tether.server import create_app
from tether.storage import ThreadInfo
from tether.storage.sqlite import SqliteCheckpointer
from tether.testing import ScriptedModel

from ._chat import chat_app
from .test_api import sse_events

pytestmark = pytest.mark.anyio
WATCHDOG = 20


def _dead_worker() -> str:
    """The worker id of a process of this host that has exited."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return f"{socket.gethostname()}:{int(proc.stdout)}:deadbeef"


async def _crashed_run(store: SqliteCheckpointer) -> str:
    await store.put_thread(ThreadInfo(thread_id="t1", metadata={"app": "chat"}))
    record = RunRecord(run_id="r1", thread_id="t1", status="running", worker=_dead_worker())
    started = RunStarted(run_id="r1", thread_id="t1", seq=0, ts=record.created_at)
    await store.commit(events=[started], run=record)
    return record.run_id


@pytest.mark.parametrize("last_event_id", [None, "0", "1", "22", "1000"])
async def test_rejoin_after_a_crash_ends_with_the_terminal_event(
    tmp_path: Path, last_event_id: str | None
) -> None:
    store = SqliteCheckpointer(str(tmp_path / "crash.db"))
    run_id = await _crashed_run(store)
    api = create_app(chat_app(ScriptedModel(default_reply="ok"), checkpointer=store))
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api), base_url="http://tether"
        ) as client:
            with anyio.fail_after(WATCHDOG):
                r = await client.get(f"/threads/t1/runs/{run_id}/stream", headers=headers)
    finally:
        await store.aclose()
    assert r.status_code == 200, r.text
    events: list[tuple[str, str, dict[str, Any]]] = sse_events(r.text)
    assert events, "the re-join got an empty body"
    assert [e for e, _, _ in events].count("run_finished") == 1
    assert events[-1][0] == "run_finished"
    assert events[-1][2]["status"] == "failed"
    assert events[-1][2]["reason"] == "worker_lost"
