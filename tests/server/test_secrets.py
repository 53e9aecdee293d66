"""No answer, event or stored record shows a database password or an internal failure's details.

Defect: a `StorageError` carried `PostgresCheckpointer('postgresql://root:s3cretPW@…') failed: …`
into the stream's `run_finished.error`, the run record, WebSocket events and `/v1` error chunks.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tether.errors import StorageError
from tether.failures import public_error, redact
from tether.server import create_app
from tether.storage.postgres import PostgresCheckpointer
from tether.testing import Gate, ScriptedModel

from ._chat import chat_app

SECRET = "s3cretPW"
WATCHDOG = 20


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://root:{SECRET}@127.0.0.1:5432/db",
        f"postgres://root:{SECRET}@db.internal/db?sslmode=require",
        f"host=127.0.0.1 user=root password={SECRET} dbname=db",
        f"host=127.0.0.1 password='{SECRET} x' dbname=db",
        f"redis://:{SECRET}@127.0.0.1:6379/0",
    ],
)
def test_redact_removes_every_password_form(dsn: str) -> None:
    assert SECRET not in redact(dsn)
    assert "***" in redact(dsn)


def test_postgres_checkpointer_repr_holds_no_password() -> None:
    store = PostgresCheckpointer(f"postgresql://root:{SECRET}@127.0.0.1:5432/db")
    assert SECRET not in repr(store)
    assert "root" in repr(store)  # still says which database it is


def test_internal_failure_summary_is_generic_with_an_id_the_log_carries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exc = StorageError(f"PostgresCheckpointer('postgresql://root:{SECRET}@h/db') failed: boom")
    with caplog.at_level(logging.ERROR, logger="tether.failures"):
        text = public_error(exc)
    assert SECRET not in text
    assert "boom" not in text
    assert text.startswith("internal error (StorageError); error id ")
    error_id = text.split("error id ")[1].split(";")[0]
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)


def test_user_failure_summary_is_type_and_message_scrubbed() -> None:
    assert public_error(ValueError("bad value 3")) == "ValueError: bad value 3"
    text = public_error(RuntimeError(f"cannot reach postgresql://u:{SECRET}@h/db"))
    assert text == "RuntimeError: cannot reach postgresql://u:***@h/db"


def _has_secret(value: Any) -> bool:
    return SECRET in str(value)


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_storage_failure_mid_run_shows_no_password_anywhere(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Trust auth ignores the password, so the DSN works and still holds a secret to leak.
    dsn = make_conninfo(postgres_dsn, password=SECRET)
    gate = Gate()
    model = ScriptedModel(["Hel", gate, "lo"], default_reply="ok")
    store = PostgresCheckpointer(dsn)
    app = chat_app(model, checkpointer=store)
    api = create_app(app)
    seen: list[str] = []
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api), base_url="http://tether"
        ) as client:
            with anyio.fail_after(WATCHDOG):
                body = {"input": {"messages": [{"role": "user", "content": "hi"}]}}
                replies: list[httpx.Response] = []

                async def stream() -> None:
                    replies.append(await client.post("/threads/t1/runs/stream", json=body))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(stream)
                    await gate.reached()
                    # Break the storage under the running run: every later commit fails.
                    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                        conn.execute("DROP TABLE tether_events")
                    gate.release()
                r = replies[0]
                assert r.status_code == 200
                run_id = r.headers["x-tether-run-id"]
                seen.append(r.text)
                finished = seen[0].rsplit("event: run_finished", 1)[1]
                assert '"status":"failed"' in finished
                assert "error id" in finished
                seen.append((await client.get(f"/runs/{run_id}")).text)
                seen.append((await client.get(f"/threads/t1/runs/{run_id}")).text)
                seen.append((await client.get("/threads/t1")).text)
                r = await client.post(
                    "/v1/chat/completions",
                    json={"model": "chat", "messages": [{"role": "user", "content": "again"}]},
                )
                seen.append(r.text)
    finally:
        await store.aclose()
    for text in seen:
        assert not _has_secret(text), text
    for record in caplog.records:
        if record.levelno >= logging.ERROR and record.name.startswith("tether.server"):
            assert not _has_secret(record.getMessage())
