"""Background runs queued by an API process and executed by `tether worker` processes.

Real processes: the API is `uvicorn _queued:api` (background runs queued), the workers are
`tether worker tests/cluster/_queued.py:agent`, all on one Postgres schema and one Redis prefix.
Sync points are the events a join through the API process receives (the model blocks on the
input "block" until the run is stopped); a worker that is not started cannot take anything.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest

from tests._services import require_redis
from tests.cluster.conftest import fresh_schema
from tests.server._client import SSE, Server, read_sse, serve

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TETHER = str(Path(sys.executable).parent / "tether")
WATCHDOG = 30


def user(text: str) -> dict[str, Any]:
    return {"input": {"messages": [{"role": "user", "content": text}]}}


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    url = require_redis()
    prefix = f"tether-queue-{secrets.token_hex(6)}"
    with fresh_schema() as dsn:
        yield {
            "TETHER_DATABASE_URL": dsn,
            "TETHER_REDIS_URL": url,
            "TETHER_REDIS_PREFIX": prefix,
            "TETHER_LEASE": "2",
        }
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def api(env: dict[str, str]) -> Iterator[Server]:
    with serve("_queued:api", app_dir=HERE, env=env) as server:
        yield server


@contextmanager
def worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A `tether worker` process, yielded once it printed that it is ready (its signal handlers
    are installed then); stopped with SIGTERM (its exit code is left to the test)."""
    proc = subprocess.Popen(
        [TETHER, "worker", "tests/cluster/_queued.py:agent", "--concurrency", "4"],
        cwd=ROOT,
        env={**os.environ, **env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
    )
    drain: threading.Thread | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"ready" in line:
                break
        else:
            pytest.fail(f"the worker exited before it was ready (code {proc.wait()})")
        # Drain the rest so the worker never blocks on a full pipe.
        drain = threading.Thread(target=proc.stdout.read, daemon=True)
        drain.start()
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if drain is not None:
            drain.join(timeout=30)  # the pipe's end was reached: the process is gone
        if proc.stdout is not None:
            proc.stdout.close()


async def enqueue(c: httpx.AsyncClient, api: Server, thread: str, text: str) -> str:
    r = await c.post(f"{api.url}/threads/{thread}/runs", json=user(text))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending"
    run_id: str = r.json()["run_id"]
    return run_id


async def join(c: httpx.AsyncClient, api: Server, thread: str, run_id: str) -> list[SSE]:
    async with c.stream("GET", f"{api.url}/threads/{thread}/runs/{run_id}/stream") as r:
        assert r.status_code == 200
        return [e async for e in read_sse(r.aiter_lines())]


def queued(env: dict[str, str]) -> int:
    with psycopg.connect(env["TETHER_DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM tether_run_queue").fetchone()
        return int(row[0]) if row else -1


def executed_by(env: dict[str, str], run_id: str) -> int:
    """The pid of the process that executed the run (from its stored record's `worker`)."""
    with psycopg.connect(env["TETHER_DATABASE_URL"]) as conn:
        row = conn.execute("SELECT record FROM tether_runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None
    return int(json.loads(row[0])["worker"].split(":")[1])


async def test_queued_run_executes_on_a_worker_joined_and_stopped_through_the_api(
    api: Server, env: dict[str, str]
) -> None:
    thread = "q-stop"
    with worker(env) as proc:
        async with httpx.AsyncClient(timeout=WATCHDOG) as c, anyio.create_task_group() as tg:
            with anyio.fail_after(WATCHDOG) as watchdog:
                run_id = await enqueue(c, api, thread, "block")
                path = f"{api.url}/threads/{thread}/runs/{run_id}/stream"
                seen: list[SSE] = []
                streaming = anyio.Event()

                async def watch() -> None:
                    async with c.stream("GET", path) as r:
                        async for event in read_sse(r.aiter_lines()):
                            seen.append(event)
                            if event.event == "message_delta" and event.data["content"] == "lo":
                                streaming.set()

                tg.start_soon(watch)
                await streaming.wait()  # the worker runs it, and the API's join sees it live
                r = await c.post(f"{api.url}/threads/{thread}/runs/{run_id}/cancel?wait=true")
                assert r.status_code == 200 and r.json()["stopped"] is True
                assert r.json()["run"]["status"] == "cancelled"
            assert not watchdog.cancel_called
        async with httpx.AsyncClient(timeout=WATCHDOG) as c:
            record = (await c.get(f"{api.url}/runs/{run_id}")).json()
            state = (await c.get(f"{api.url}/threads/{thread}")).json()
    assert proc.returncode == 0
    assert executed_by(env, run_id) == proc.pid and record["status"] == "cancelled"
    assert [e.event for e in seen].count("run_finished") == 1
    assert seen[-1].event == "run_finished" and seen[-1].data["status"] == "cancelled"
    assert [int(e.id or -1) for e in seen] == list(range(len(seen)))
    last = state["messages"][-1]
    assert (last["content"], last["status"]) == ("Hello", "stopped")
    assert queued(env) == 0


async def test_queued_run_stopped_before_a_worker_takes_it_never_runs(
    api: Server, env: dict[str, str]
) -> None:
    thread = "q-early"
    async with httpx.AsyncClient(timeout=WATCHDOG) as c:
        with anyio.fail_after(WATCHDOG) as watchdog:
            early = await enqueue(c, api, thread, "never")  # no worker runs yet
            r = await c.post(f"{api.url}/threads/{thread}/stop?wait=true&reason=early")
            assert r.json()["stopped"] is True and r.json()["run_id"] == early
            assert r.json()["run"]["status"] == "cancelled"
            with worker(env) as proc:
                later = await enqueue(c, api, thread, "later")
                ended = await join(c, api, thread, later)
                assert ended[-1].data["status"] == "completed"
            events = await join(c, api, thread, early)
            record = (await c.get(f"{api.url}/runs/{early}")).json()
            state = (await c.get(f"{api.url}/threads/{thread}")).json()
        assert not watchdog.cancel_called
    assert proc.returncode == 0
    assert [(e.event, e.data["status"], e.data["reason"]) for e in events] == [
        ("run_finished", "cancelled", "early")
    ]
    assert record["status"] == "cancelled" and record["started_at"] is None
    assert record["stop_requested_by"] == "user"
    users = [m["content"] for m in state["messages"] if m["role"] == "user"]
    assert users == ["later"]  # the stopped run never reached the model


async def test_two_reject_runs_queued_at_once_through_two_api_processes_one_gets_409(
    api: Server, env: dict[str, str]
) -> None:
    """Admission of a queued `reject` run happens when it is queued, atomically in Redis: of two
    requests racing on one free thread through two API processes, one is queued (200), the
    other refused (409, naming the queued run); no worker is needed for either answer."""
    with serve("_queued:api", app_dir=HERE, env=env) as other:
        async with httpx.AsyncClient(timeout=WATCHDOG) as c:
            with anyio.fail_after(WATCHDOG) as watchdog:
                for round in range(5):
                    thread = f"q-race-{round}"
                    answers: list[httpx.Response] = []
                    # The thread exists first: two processes creating one thread at once is a
                    # race of its own (the refused request would delete the thread it thinks
                    # it created).
                    r = await c.post(f"{api.url}/threads", json={"thread_id": thread})
                    assert r.status_code == 200, r.text

                    async def post(
                        url: str, thread: str = thread, out: list[httpx.Response] = answers
                    ) -> None:
                        out.append(await c.post(f"{url}/threads/{thread}/runs", json=user("x")))

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(post, api.url)
                        tg.start_soon(post, other.url)
                    assert sorted(r.status_code for r in answers) == [200, 409], round
                    ok = next(r for r in answers if r.status_code == 200).json()
                    busy = next(r for r in answers if r.status_code == 409).json()
                    assert busy["error"]["type"] == "thread_busy"
                    assert busy["error"]["active_run_id"] == ok["run_id"]
                    runs = (await c.get(f"{api.url}/threads/{thread}/runs")).json()
                    assert [r["run_id"] for r in runs] == [ok["run_id"]]
                    stop = await c.post(f"{other.url}/threads/{thread}/stop?wait=true")
                    assert stop.json()["stopped"] is True  # never ran: no worker is up
                    assert stop.json()["run"]["status"] == "cancelled"
            assert not watchdog.cancel_called
    assert queued(env) == 0


async def test_two_workers_never_take_the_same_run(api: Server, env: dict[str, str]) -> None:
    with worker(env) as one, worker(env) as two:
        async with httpx.AsyncClient(timeout=WATCHDOG) as c:
            with anyio.fail_after(60) as watchdog:
                runs = [
                    (f"q-many-{i}", await enqueue(c, api, f"q-many-{i}", f"m{i}"))
                    for i in range(12)
                ]
                logs = [await join(c, api, thread, run_id) for thread, run_id in runs]
                records = [(await c.get(f"{api.url}/runs/{r}")).json() for _, r in runs]
            assert not watchdog.cancel_called
    assert (one.returncode, two.returncode) == (0, 0)
    for events in logs:
        kinds = [e.event for e in events]
        assert kinds.count("run_started") == 1 and kinds.count("run_finished") == 1
        assert events[-1].data["status"] == "completed"
    assert {executed_by(env, r) for _, r in runs} <= {one.pid, two.pid}
    assert all(r["status"] == "completed" for r in records)
    assert queued(env) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "tests/cluster/_queued.py:agent"], "tether worker needs --database-url"),
        (["serve", "tests/cluster/_queued.py:agent", "--run-queue"], "--run-queue needs"),
    ],
)
def test_worker_and_run_queue_without_postgres_and_redis_are_refused_clearly(
    args: list[str], message: str
) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("TETHER_DATABASE_URL", "TETHER_REDIS_URL")
    }
    done = subprocess.run(
        [TETHER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert message in " ".join(done.stderr.split())
