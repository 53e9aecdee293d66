"""Postgres connections killed under a running server: no phantom run, no 500 afterwards.

Defect: after `pg_terminate_backend` on the pool's connections mid-run, the stream ended `failed`
but the stored record stayed `running`, a re-join got no `run_finished`, and the next requests were
500 until the pool dropped its dead connections. Only this test's own connections are killed
(they carry a unique `application_name`): the database is shared.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tether.server import create_app
from tether.storage.postgres import PostgresCheckpointer
from tether.testing import Gate, ScriptedModel

from ._chat import chat_app

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]
WATCHDOG = 30
HI = {"input": {"messages": [{"role": "user", "content": "hi"}]}}


def _kill_backends(dsn: str, application_name: str) -> int:
    """Terminate the backends of `application_name`; returns once they have exited."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        )
        pids = [row[0] for row in cur.fetchall()]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # Termination is asynchronous; a bounded poll of the server (another process) until the
        # backends are gone, so each one has told its client socket before the test goes on.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cur = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
            row = cur.fetchone()
            if row is not None and row[0] == 0:
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"backends {pids} did not exit")
    return len(pids)


async def test_killed_connections_leave_no_phantom_run_and_no_500(postgres_dsn: str) -> None:
    name = f"tether-drop-{secrets.token_hex(4)}"
    store = PostgresCheckpointer(make_conninfo(postgres_dsn, application_name=name), min_size=2)
    gate = Gate()
    model = ScriptedModel(["Hel", gate, "lo"], default_reply="ok")
    api = create_app(chat_app(model, checkpointer=store))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api), base_url="http://tether"
        ) as client:
            with anyio.fail_after(WATCHDOG):
                r = await client.post("/threads/t1/runs", json=HI)
                assert r.status_code == 200, r.text
                run_id = r.json()["run_id"]
                await gate.reached()
                assert _kill_backends(postgres_dsn, name) >= 1
                gate.release()
                # The run's next commits meet dead connections; it must end, recorded.
                joined = await client.get(f"/threads/t1/runs/{run_id}/stream")
                assert "event: run_finished" in joined.text
                statuses: list[Any] = []
                for path in (f"/runs/{run_id}", "/threads/t1", "/threads"):
                    reply = await client.get(path)
                    assert reply.status_code == 200, (path, reply.text)
                    statuses.append(reply.json())
                assert statuses[0]["status"] == "completed"
                # The stored record, read past the server's memory, agrees.
                record = await store.get_run(run_id)
                assert record is not None
                assert record.status == "completed"
                # Killed while idle: the pool replaces them; nothing fails.
                assert _kill_backends(postgres_dsn, name) >= 1
                r = await client.post("/threads/t1/runs/wait", json=HI)
                assert r.status_code == 200, r.text
                assert r.json()["run"]["status"] == "completed"
    finally:
        await store.aclose()


async def test_a_run_whose_end_cannot_be_committed_is_not_left_running(postgres_dsn: str) -> None:
    store = PostgresCheckpointer(postgres_dsn)
    gate = Gate()
    model = ScriptedModel(["Hel", gate, "lo"], default_reply="ok")
    api = create_app(chat_app(model, checkpointer=store))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api), base_url="http://tether"
        ) as client:
            with anyio.fail_after(WATCHDOG):
                r = await client.post("/threads/t1/runs", json=HI)
                run_id = r.json()["run_id"]
                await gate.reached()
                # The event log goes away: every commit that appends events now fails.
                with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                    conn.execute("DROP TABLE tether_events")
                gate.release()
                joined = await client.get(f"/threads/t1/runs/{run_id}/stream")
                assert "event: run_finished" in joined.text
                # The engine's repair stores the ended record in the background (the event log
                # still refuses writes); a bounded readiness poll, under the watchdog.
                record = await store.get_run(run_id)
                while record is not None and record.status in ("running", "pending"):
                    await anyio.sleep(0.05)
                    record = await store.get_run(run_id)
    finally:
        await store.aclose()
    assert record is not None
    assert record.status not in ("running", "pending")
