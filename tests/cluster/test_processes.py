"""Real `uvicorn` processes on one Postgres schema and one Redis prefix (the app is `_node.py`).

Sync points are HTTP calls: `/_test/gates/NAME/reached` answers once the model is blocked at that
gate in the process that runs the run, and a join answers its last event once the run ended.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests._services import require_redis
from tests.cluster.conftest import fresh_schema
from tests.server._client import SSE, Server, read_sse, serve

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis]

HERE = Path(__file__).resolve().parent
WATCHDOG = 30
LEASE = 2.0  # seconds; short so a kill -9 is noticed quickly
KILL_TRIALS = int(os.environ.get("TETHER_KILL_TRIALS", "2"))  # reliability/ runs more


def user(text: str) -> dict[str, Any]:
    return {"input": {"messages": [{"role": "user", "content": text}]}}


@contextmanager
def node(env: dict[str, str]) -> Iterator[Server]:
    with serve("_node:api", app_dir=HERE, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def cluster_env() -> Iterator[dict[str, str]]:
    url = require_redis()
    prefix = f"tether-cluster-{secrets.token_hex(6)}"
    with fresh_schema() as dsn:
        yield {
            "TETHER_DATABASE_URL": dsn,
            "TETHER_REDIS_URL": url,
            "TETHER_REDIS_PREFIX": prefix,
            "TETHER_LEASE": str(LEASE),
        }
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def nodes(cluster_env: dict[str, str]) -> Iterator[list[Server]]:
    """Three processes: A, B, C."""
    with ExitStack() as stack:
        yield [stack.enter_context(node(cluster_env)) for _ in range(3)]


async def start(c: httpx.AsyncClient, url: str, thread: str, turn: list[str], **kw: Any) -> str:
    """Script `turn` on the node at `url` and start a background run there; returns its id."""
    (await c.post(f"{url}/_test/script", json={"turns": [turn]})).raise_for_status()
    r = await c.post(f"{url}/threads/{thread}/runs", json={**user("hi"), **kw})
    r.raise_for_status()
    run_id: str = r.json()["run_id"]
    return run_id


async def join(
    c: httpx.AsyncClient, url: str, thread: str, run_id: str, after: int = -1
) -> list[SSE]:
    path = f"{url}/threads/{thread}/runs/{run_id}/stream?after_seq={after}"
    async with c.stream("GET", path) as r:
        assert r.status_code == 200
        return [e async for e in read_sse(r.aiter_lines())]


async def sizes(c: httpx.AsyncClient, nodes: list[Server]) -> list[int]:
    return [(await c.get(f"{n.url}/_test/state")).json()["size"] for n in nodes]


@pytest.mark.parametrize("mode", ["now", "after_step", "rollback"])
async def test_stop_through_another_process_while_a_third_is_joined(
    nodes: list[Server], mode: str
) -> None:
    a, b, cc = (n.url for n in nodes)
    thread, gate = f"t-{mode}", f"g-{mode}"
    async with httpx.AsyncClient(timeout=WATCHDOG) as c, anyio.create_task_group() as tg:
        with anyio.fail_after(WATCHDOG) as watchdog:
            turn = ["Hel", "lo", f"@gate:{gate}", '@tool:lookup:{"query": "q"}']
            run_id = await start(c, a, thread, turn)
            await c.get(f"{a}/_test/gates/{gate}/reached")
            joined: list[SSE] = []

            async def watch() -> None:
                joined.extend(await join(c, cc, thread, run_id))

            tg.start_soon(watch)
            wait = "false" if mode == "after_step" else "true"
            r = await c.post(
                f"{b}/threads/{thread}/runs/{run_id}/cancel?mode={mode}&wait={wait}&reason=b"
            )
            assert r.status_code == 200 and r.json()["stopped"] is True
            if mode == "after_step":
                await c.post(f"{a}/_test/gates/{gate}/release")
            else:  # wait=true answered once the run ended, wherever it ran
                assert r.json()["run"]["status"] == "cancelled"
        assert not watchdog.cancel_called
    assert [e.event for e in joined].count("run_finished") == 1
    assert joined[-1].event == "run_finished" and joined[-1].data["status"] == "cancelled"
    assert [int(e.id or -1) for e in joined] == list(range(len(joined)))
    async with httpx.AsyncClient(timeout=WATCHDOG) as c:
        logged = await join(c, b, thread, run_id)
        assert [e.data for e in logged] == [e.data for e in joined]
        run = (await c.get(f"{cc}/threads/{thread}/runs/{run_id}")).json()
        assert run["status"] == "cancelled" and run["stop_mode"] == mode
        assert await sizes(c, nodes) == [0, 0, 0]


async def frames_until(ws: ClientConnection, done: Any) -> list[dict[str, Any]]:
    """WebSocket frames up to and including the first one `done(frame)` accepts."""
    frames: list[dict[str, Any]] = []
    while not frames or not done(frames[-1]):
        frames.append(json.loads(await ws.recv()))
    return frames


async def test_websocket_on_one_process_joins_and_stops_a_run_on_another(
    nodes: list[Server],
) -> None:
    a, b = nodes[0].url, nodes[1].url
    thread = "ws-across"
    async with httpx.AsyncClient(timeout=WATCHDOG) as c:
        with anyio.fail_after(WATCHDOG) as watchdog:
            run_id = await start(c, a, thread, ["Hel", "lo", "@gate:ws", " never"])
            await c.get(f"{a}/_test/gates/ws/reached")  # A's run blocks after "Hello"
            seen_on_b = (await c.get(f"{b}/threads/{thread}")).json()
            async with connect(b.replace("http://", "ws://") + f"/threads/{thread}/ws") as ws:
                await ws.send(json.dumps({"type": "join", "run_id": run_id, "after_seq": -1}))
                live = await frames_until(ws, lambda f: f.get("content") == "lo")  # run goes on
                await ws.send(json.dumps({"type": "message", "content": "too soon"}))
                busy = await frames_until(ws, lambda f: f["type"] == "error")
                await ws.send(json.dumps({"type": "stop", "mode": "now", "reason": "ws"}))
                rest = await frames_until(ws, lambda f: f["type"] == "run_finished")
                # After the end a join is served from the event log, from any event id.
                await ws.send(json.dumps({"type": "join", "run_id": run_id, "after_seq": 2}))
                again = await frames_until(ws, lambda f: f["type"] == "run_finished")
        assert not watchdog.cancel_called
        frames = [*live, *busy, *rest]
        assert busy[-1]["error"]["type"] == "thread_busy"
        assert busy[-1]["error"]["active_run_id"] == run_id  # the run on A, named on B
        assert (seen_on_b["status"], seen_on_b["active_run_id"]) == ("busy", run_id)
        results = [f for f in frames if f["type"] == "stop_result"]
        assert results == [{"type": "stop_result", "stopped": True, "run_id": run_id}]
        events = [f for f in frames if "seq" in f]
        assert [e["seq"] for e in events] == list(range(len(events)))  # gapless, in order
        assert [e["type"] for e in events].count("run_finished") == 1
        assert events[-1]["status"] == "cancelled" and events[-1]["run_id"] == run_id
        assert "".join(e["content"] for e in events if e["type"] == "message_delta") == "Hello"
        logged = [e.data for e in await join(c, b, thread, run_id)]
        assert events == logged  # what the socket got live is the durable record
        assert again == logged[3:]
        run = (await c.get(f"{b}/threads/{thread}/runs/{run_id}")).json()
        assert run["status"] == "cancelled" and run["stop_reason"] == "ws"
        assert await sizes(c, nodes) == [0, 0, 0]


async def test_thread_policies_hold_across_processes(nodes: list[Server]) -> None:
    a, b, cc = (n.url for n in nodes)
    async with httpx.AsyncClient(timeout=WATCHDOG) as c:
        with anyio.fail_after(WATCHDOG):
            first = await start(c, a, "policies", ["one", "@gate:p1"])
            await c.get(f"{a}/_test/gates/p1/reached")
            r = await c.post(f"{b}/threads/policies/runs", json=user("two"))
            assert r.status_code == 409  # reject, decided atomically in Redis
            queued = [
                await start(c, url, "policies", [f"q{i}"], multitask_strategy="enqueue")
                for i, url in enumerate([b, cc, b])
            ]
            newest = await start(c, cc, "policies", ["new"], multitask_strategy="interrupt")
            finished = await join(c, b, "policies", first)
            assert finished[-1].data["status"] == "cancelled"
            ends = [(await join(c, a, "policies", run))[-1] for run in [newest, *queued]]
        assert [e.data["status"] for e in ends] == ["completed"] * 4
        runs = {r["run_id"]: r for r in (await c.get(f"{a}/threads/policies/runs")).json()}
        order = [runs[run]["started_at"] for run in [newest, *queued]]
        assert order == sorted(order)  # interrupt went first, then the queue in FIFO order
        assert runs[first]["stop_requested_by"] == "superseded"
        assert await sizes(c, nodes) == [0, 0, 0]


async def test_100_runs_over_3_processes_stopped_through_random_others(
    nodes: list[Server],
) -> None:
    rng = random.Random(11)
    async with httpx.AsyncClient(timeout=WATCHDOG) as c:
        with anyio.fail_after(120):
            for i in range(100):
                runner, stopper = rng.sample(nodes, 2)
                thread = f"many-{i}"
                run_id = await start(c, runner.url, thread, ["x", f"@gate:m{i}"])
                await c.get(f"{runner.url}/_test/gates/m{i}/reached")
                r = await c.post(f"{stopper.url}/threads/{thread}/stop?wait=true")
                assert r.json()["stopped"] is True, i
                run = (await c.get(f"{stopper.url}/threads/{thread}/runs/{run_id}")).json()
                assert run["status"] == "cancelled", (i, run)
            assert await sizes(c, nodes) == [0, 0, 0]


@pytest.mark.parametrize("trial", range(KILL_TRIALS))
async def test_kill_9_marks_the_run_worker_lost_keeps_its_output_and_frees_the_thread(
    nodes: list[Server], cluster_env: dict[str, str], trial: int
) -> None:
    b, cc = nodes[1].url, nodes[2].url
    thread = f"killed-{trial}-{secrets.token_hex(3)}"
    with node(cluster_env) as doomed:
        async with httpx.AsyncClient(timeout=WATCHDOG) as c:
            with anyio.fail_after(WATCHDOG):
                run_id = await start(c, doomed.url, thread, ["Hel", "lo", "@gate:k"])
                await c.get(f"{doomed.url}/_test/gates/k/reached")
                path = f"{cc}/threads/{thread}/runs/{run_id}/stream"
                async with c.stream("GET", path) as r:
                    seen: list[SSE] = []
                    async for event in read_sse(r.aiter_lines()):
                        seen.append(event)
                        if event.event == "message_delta" and event.data["content"] == "lo":
                            os.kill(doomed.process.pid, signal.SIGKILL)  # mid-answer
                            doomed.process.wait()
    # C's join went on after the kill and ended with the sweeper's terminal event.
    assert seen[-1].event == "run_finished" and seen[-1].data["reason"] == "worker_lost"
    async with httpx.AsyncClient(timeout=WATCHDOG) as c:
        run = (await c.get(f"{b}/threads/{thread}/runs/{run_id}")).json()
        assert run["status"] == "failed" and run["error"].startswith("worker_lost")
        events = await join(c, b, thread, run_id)
        assert [int(e.id or -1) for e in events] == list(range(len(events)))
        assert events[-1].event == "run_finished" and events[-1].data["reason"] == "worker_lost"
        again = await join(c, cc, thread, run_id, after=2)
        assert again[-1].data == events[-1].data
        state = (await c.get(f"{b}/threads/{thread}")).json()
        last = state["messages"][-1]
        assert (last["content"], last["status"]) == ("Hello", "stopped")
        (await c.post(f"{b}/_test/script", json={"turns": [["fine"]]})).raise_for_status()
        r = await c.post(f"{b}/threads/{thread}/runs/wait", json=user("again"))
        assert r.status_code == 200, r.text
