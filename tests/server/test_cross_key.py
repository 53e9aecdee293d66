"""Key B against key A's threads and runs, on every endpoint: 0 successes, and no difference
from a thread or run that does not exist. And the create race, 100 times per backend.

Thread ids are one namespace for all keys, so the endpoints that *create* a thread (`POST
/threads`, a run on a new id, `/v1` with a thread id, a WebSocket `message`) cannot answer for
another key's id what they answer for a free one (they would create it). There they refuse (409
or 404) and change nothing; every other endpoint answers exactly as for a missing id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.testclient import TestClient

from tether.server import create_app
from tether.storage.sqlite import SqliteCheckpointer
from tether.testing import Gate, ScriptedModel

from ._chat import chat_app

WATCHDOG = 20
A = {"Authorization": "Bearer sk-key-alice-1"}
B = {"Authorization": "Bearer sk-key-bob-22"}
KEYS = {"sk-key-alice-1": "alice", "sk-key-bob-22": "bob"}
HI = {"input": {"messages": [{"role": "user", "content": "hi"}]}}


def _probes(thread: str, run: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, body) of every endpoint that reads, joins or stops a thread or run."""
    return [
        ("GET", f"/threads/{thread}", None),
        ("GET", f"/threads/{thread}/runs", None),
        ("GET", f"/threads/{thread}/runs/{run}", None),
        ("GET", f"/runs/{run}", None),
        ("GET", f"/threads/{thread}/runs/{run}/stream", None),
        ("POST", f"/threads/{thread}/runs/{run}/cancel", None),
        ("POST", f"/threads/{thread}/runs/{run}/cancel?action=rollback&wait=true", None),
        ("POST", f"/threads/{thread}/stop", None),
        ("POST", f"/threads/{thread}/stop?mode=rollback&wait=true", None),
        ("DELETE", f"/threads/{thread}", None),
    ]


def _answer(r: httpx.Response, thread: str, run: str) -> tuple[int, str]:
    return r.status_code, r.text.replace(thread, "<thread>").replace(run, "<run>")


@pytest.mark.anyio
async def test_another_keys_thread_and_run_look_exactly_like_missing_ones() -> None:
    gate = Gate()
    app = chat_app(ScriptedModel("done", ["Hel", gate, "lo"], default_reply="ok"))
    api = create_app(app, api_keys=KEYS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://tether") as c:
        with anyio.fail_after(WATCHDOG):
            done = (await c.post("/threads/a-done/runs/wait", json=HI, headers=A)).json()
            finished_run = done["run"]["run_id"]
            r = await c.post("/threads/a-live/runs", json=HI, headers=A)
            live_run = r.json()["run_id"]
            await gate.reached()
            before = {
                t: (await c.get(f"/threads/{t}", headers=A)).json() for t in ("a-done", "a-live")
            }
            differences, successes = [], []
            for thread, run in (("a-done", finished_run), ("a-live", live_run)):
                for (method, path, body), (_, missing_path, _) in zip(
                    _probes(thread, run), _probes("nobody-here", "no-such-run"), strict=True
                ):
                    foreign = await c.request(method, path, json=body, headers=B)
                    missing = await c.request(method, missing_path, json=body, headers=B)
                    if foreign.status_code < 400:
                        successes.append((method, path))
                    if _answer(foreign, thread, run) != _answer(
                        missing, "nobody-here", "no-such-run"
                    ):
                        differences.append((method, path, foreign.text, missing.text))
                # Creating endpoints refuse and change nothing.
                for path in ("/runs", "/runs/stream", "/runs/wait"):
                    r = await c.post(f"/threads/{thread}{path}", json=HI, headers=B)
                    if r.status_code < 400:
                        successes.append(("POST", path))
                r = await c.post("/threads", json={"thread_id": thread}, headers=B)
                if r.status_code < 400:
                    successes.append(("POST", "/threads"))
                r = await c.post(
                    "/threads",
                    json={"thread_id": thread, "if_exists": "do_nothing"},
                    headers=B,
                )
                if r.status_code < 400:
                    successes.append(("POST", "/threads do_nothing"))
                r = await c.post(
                    "/v1/chat/completions",
                    json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
                    headers={**B, "X-Tether-Thread-Id": thread},
                )
                if r.status_code < 400:
                    successes.append(("POST", "/v1/chat/completions"))
            listed = (await c.get("/threads", headers=B)).json()
            after = {
                t: (await c.get(f"/threads/{t}", headers=A)).json() for t in ("a-done", "a-live")
            }
            gate.release()
            await app.registry.local(live_run).wait()  # type: ignore[union-attr]
            final = (await c.get(f"/runs/{live_run}", headers=A)).json()
    assert successes == []
    assert differences == []
    assert [t["thread_id"] for t in listed] == []
    assert after == before
    assert final["status"] == "completed"  # B's stops never reached it


def test_another_keys_thread_over_websocket_looks_like_a_missing_one() -> None:
    app = chat_app(ScriptedModel(default_reply="ok"))
    with TestClient(create_app(app, api_keys=KEYS)) as client:
        r = client.post("/threads/ws-a/runs/wait", json=HI, headers=A)
        run_id = r.json()["run"]["run_id"]
        answers = {}
        for thread in ("ws-a", "ws-free"):
            url = f"/threads/{thread}/ws?api_key=sk-key-bob-22"
            with client.websocket_connect(url) as ws:
                got = []
                for frame in (
                    {"type": "stop"},
                    {"type": "stop", "mode": "rollback"},
                    {"type": "join", "run_id": run_id},
                    {"type": "join", "run_id": run_id, "after_seq": 3},
                ):
                    ws.send_json(frame)
                    got.append(str(ws.receive_json()).replace(thread, "<thread>"))
            answers[thread] = got
        assert answers["ws-a"] == answers["ws-free"]
        assert all("not_found" in a for a in answers["ws-a"])
        with client.websocket_connect("/threads/ws-a/ws?api_key=sk-key-bob-22") as ws:
            ws.send_json({"type": "message", "content": "mine now?"})
            assert ws.receive_json()["error"]["type"] == "not_found"
        thread = client.get("/threads/ws-a", headers=A).json()
        assert [m["content"] for m in thread["messages"]] == ["hi", "ok"]


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_the_create_race_between_two_keys_has_one_winner_100_times(
    backend: str, tmp_path: Path
) -> None:
    store = SqliteCheckpointer(str(tmp_path / "race.db")) if backend == "sqlite" else None
    app = chat_app(ScriptedModel(default_reply="ok"), checkpointer=store)
    api = create_app(app, api_keys=KEYS)
    takeovers, both_won, cross_reads = 0, 0, 0
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api), base_url="http://tether"
        ) as c:
            with anyio.fail_after(120):
                for trial in range(100):
                    tid = f"race-{trial}"
                    replies: dict[str, httpx.Response] = {}

                    async def call(
                        who: str,
                        headers: dict[str, str],
                        run: bool,
                        t: str = tid,
                        replies: dict[str, httpx.Response] = replies,
                    ) -> None:
                        if run:  # A starts a run on the new id while B creates it
                            replies[who] = await c.post(
                                f"/threads/{t}/runs/wait", json=HI, headers=headers
                            )
                        else:
                            replies[who] = await c.post(
                                "/threads", json={"thread_id": t}, headers=headers
                            )

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(call, "A", A, trial % 2 == 1)
                        tg.start_soon(call, "B", B, False)
                    wins = [w for w, r in replies.items() if r.status_code == 200]
                    both_won += len(wins) != 1
                    owner_a = (await c.get(f"/threads/{tid}", headers=A)).status_code == 200
                    owner_b = (await c.get(f"/threads/{tid}", headers=B)).status_code == 200
                    if (wins == ["A"] and owner_b) or (wins == ["B"] and owner_a):
                        takeovers += 1
                    if owner_a and owner_b:
                        cross_reads += 1
    finally:
        if store is not None:
            await store.aclose()
    assert (both_won, takeovers, cross_reads) == (0, 0, 0)
