"""Key B against key A's threads and runs, on every endpoint: B on A's id behaves exactly like B on
a free id, A's thread is never touched, and no answer shows a stored (internal) id. And the create
race, 100 times per backend: each key gets its own thread.

With auth on, each key has its own thread ids (`tether.server.auth`): key B creating A's id
creates B's own thread, unrelated to A's. So the matrix sends, in the same order, the same
requests with key B for A's id and for a fresh id, and compares the answers after masking what
differs between any two runs (run, message and checkpoint ids, timestamps) and the ids themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import anyio
import httpx
import pytest
from starlette.testclient import TestClient

from tether.server import create_app
from tether.server.auth import NAMESPACE_CHARS, hash_key
from tether.storage.sqlite import SqliteCheckpointer
from tether.testing import Gate, ScriptedModel

from ._chat import chat_app

WATCHDOG = 30
KEY_A, KEY_B = "sk-key-alice-1", "sk-key-bob-22"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
KEYS = {KEY_A: "alice", KEY_B: "bob"}
HI = {"input": {"messages": [{"role": "user", "content": "hi"}]}}
# The stored-id prefixes of both keys' namespaces: no answer may show either.
NAMESPACES = tuple(hash_key(k)[:NAMESPACE_CHARS] for k in KEYS)
A_SAID = ("done", "Hel", "lo")  # the assistant text of A's runs
# Fields whose values differ between any two runs, whatever the thread.
VOLATILE = frozenset(
    {
        "run_id",
        "runId",
        "id",
        "message_id",
        "messageId",
        "checkpoint_id",
        "created_at",
        "started_at",
        "finished_at",
        "stopped_at",
        "stop_requested_at",
        "ts",
        "created",
        "timestamp",
    }
)


def _mask(value: Any, names: dict[str, str]) -> Any:
    """`value` with volatile fields masked and the given ids replaced by their aliases."""
    if isinstance(value, dict):
        return {
            k: "<volatile>" if k in VOLATILE and v is not None else _mask(v, names)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v, names) for v in value]
    if isinstance(value, str):
        for real, alias in sorted(names.items(), key=lambda kv: -len(kv[0])):
            value = value.replace(real, alias)
        return value
    return value


def _body(r: httpx.Response, names: dict[str, str]) -> Any:
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        lines = []
        for line in r.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                lines.append(_mask(json.loads(line.removeprefix("data: ")), names))
            else:
                lines.append(line)
        return lines
    try:
        return _mask(r.json(), names)
    except ValueError:
        return _mask(r.text, names)


def _answer(r: httpx.Response, names: dict[str, str]) -> tuple[Any, ...]:
    """What a client learns from a response, with volatile values masked and ids aliased."""
    names = dict(names)
    if run := r.headers.get("x-tether-run-id"):
        names[run] = "<its run>"
    headers = {
        h: _mask(unquote(r.headers[h]), names)
        for h in ("x-tether-thread-id", "content-location")
        if h in r.headers
    }
    return r.status_code, headers, _body(r, names)


def _reads(thread: str, run: str) -> list[tuple[str, str]]:
    """(method, path) of every endpoint that reads, joins or stops a thread or run."""
    return [
        ("GET", f"/threads/{thread}"),
        ("GET", f"/threads/{thread}/runs"),
        ("GET", f"/threads/{thread}/runs/{run}"),
        ("GET", f"/runs/{run}"),
        ("GET", f"/threads/{thread}/runs/{run}/stream"),
        ("POST", f"/threads/{thread}/runs/{run}/cancel"),
        ("POST", f"/threads/{thread}/runs/{run}/cancel?action=rollback&wait=true"),
        ("POST", f"/threads/{thread}/stop"),
        ("POST", f"/threads/{thread}/stop?mode=rollback&wait=true"),
    ]


def _creates(thread: str) -> Iterator[tuple[str, str, dict[str, Any], dict[str, str]]]:
    """(method, path, body, headers) of every endpoint that creates or runs on a thread, in an
    order whose answers do not depend on timing (each run ends before the next starts)."""
    user = [{"role": "user", "content": "x"}]
    yield "POST", "/threads", {"thread_id": thread}, {}
    yield "POST", "/threads", {"thread_id": thread}, {}  # now B's own: 409
    yield "POST", "/threads", {"thread_id": thread, "if_exists": "do_nothing"}, {}
    yield "POST", f"/threads/{thread}/runs/wait", HI, {}
    yield "POST", f"/threads/{thread}/runs/stream", HI, {}
    v1 = {"model": "chat", "messages": user}
    yield "POST", "/v1/chat/completions", v1, {"X-Tether-Thread-Id": quote(thread)}
    yield "POST", "/v1/chat/completions", {**v1, "stream": True}, {"X-Tether-Thread-Id": thread}
    yield "POST", "/v1/chat/completions", {**v1, "metadata": {"thread_id": thread}}, {}
    ui = {"id": thread, "messages": [{"id": "u1", "role": "user", "parts": [_text("ui")]}]}
    yield "POST", "/ai-sdk/chat", ui, {}
    ag = {
        "threadId": thread,
        "runId": "client-run",
        "messages": [{"id": "u9", "role": "user", "content": "ag"}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }
    yield "POST", "/ag-ui", ag, {}
    yield "POST", f"/threads/{thread}/runs", {**HI, "multitask_strategy": "enqueue"}, {}


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


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
            answers: dict[str, list[tuple[str, str, Any]]] = {}
            texts: list[str] = []  # everything B was sent: no internal id may appear
            b_threads: dict[str, Any] = {}

            async def call(
                who: str, method: str, path: str, names: dict[str, str], **kw: Any
            ) -> httpx.Response:
                headers = {**B, **kw.pop("headers", {})}
                r = await c.request(method, path, headers=headers, **kw)
                answers[who].append((method, path, _answer(r, names)))
                texts.append(f"{r.headers}\n{r.text}")
                return r

            for foreign, run in (("a-done", finished_run), ("a-live", live_run)):
                free = f"free-{foreign}"
                for thread in (foreign, free):
                    answers[thread] = []
                    names = {thread: "<thread>", run: "<A's run>"}
                    # B has no thread of that id yet: every read, join and stop is a 404.
                    for method, path in [*_reads(thread, run), ("DELETE", f"/threads/{thread}")]:
                        await call(thread, method, path, names)
                    # B creates its own thread of that id, and runs on it every way there is.
                    for method, path, body, headers in _creates(thread):
                        r = await call(thread, method, path, names, json=body, headers=headers)
                    background = r.json()["run_id"]
                    names[background] = "<B's run>"
                    await call(thread, "GET", f"/threads/{thread}/runs/{background}/stream", names)
                    # B's own thread and run, and A's run still out of reach.
                    for method, path in [*_reads(thread, run), *_reads(thread, background)]:
                        await call(thread, method, path, names)
                    b_threads[thread] = (await c.get(f"/threads/{thread}", headers=B)).json()
                    await call(thread, "DELETE", f"/threads/{thread}", names)
                    await call(thread, "GET", f"/threads/{thread}", names)
            listed = (await c.get("/threads", headers=B)).json()
            after = {
                t: (await c.get(f"/threads/{t}", headers=A)).json() for t in ("a-done", "a-live")
            }
            gate.release()
            await app.registry.local(live_run).wait()  # type: ignore[union-attr]
            final = (await c.get(f"/runs/{live_run}", headers=A)).json()
            a_listed = [t["thread_id"] for t in (await c.get("/threads", headers=A)).json()]
    for foreign in ("a-done", "a-live"):
        got, expected = answers[foreign], answers[f"free-{foreign}"]
        assert len(got) == len(expected) > 40
        for (method, path, answer), (_, _, free_answer) in zip(got, expected, strict=True):
            assert answer == free_answer, (method, path)
        statuses = [a[2][0] for a in got]
        assert statuses[:10] == [404] * 10  # before B made its own thread
        assert 200 in statuses and 409 in statuses  # B's own thread, then B's own id taken
        # B's thread holds B's conversation only, under the id B chose.
        b_thread = b_threads[foreign]
        assert b_thread["thread_id"] == foreign
        contents = [m["content"] for m in b_thread["messages"]]
        assert contents[:2] == ["hi", "ok"] and len(contents) == 16
        assert not set(contents) & set(A_SAID)
    assert not [t for t in texts for ns in NAMESPACES if ns in t]
    assert listed == []  # B deleted its own threads; A's were never listed for B
    assert after == before
    assert final["status"] == "completed"  # B's stops never reached it
    assert sorted(a_listed) == ["a-done", "a-live"]
    assert [m["content"] for m in after["a-done"]["messages"]] == ["hi", "done"]


class _Socket:
    """Reads a test WebSocket's frames: keeps each one's text, and its masked form."""

    def __init__(self, ws: Any, names: dict[str, str], got: list[Any], frames: list[str]) -> None:
        self.ws, self.names, self.got, self.frames = ws, names, got, frames

    def receive(self) -> dict[str, Any]:
        text = self.ws.receive_text()
        self.frames.append(text)
        data: dict[str, Any] = json.loads(text)
        self.got.append(_mask(data, self.names))
        return data

    def until_finished(self) -> list[dict[str, Any]]:
        events = [self.receive()]
        while events[-1]["type"] not in ("run_finished", "error"):
            events.append(self.receive())
        return events


def test_another_keys_thread_over_websocket_looks_like_a_free_one() -> None:
    app = chat_app(ScriptedModel(default_reply="ok"))
    with TestClient(create_app(app, api_keys=KEYS)) as client:
        r = client.post("/threads/ws-a/runs/wait", json=HI, headers=A)
        a_run = r.json()["run"]["run_id"]
        before = client.get("/threads/ws-a", headers=A).json()
        answers: dict[str, list[Any]] = {}
        frames: list[str] = []
        for thread in ("ws-a", "ws-free"):
            names = {thread: "<thread>", a_run: "<A's run>"}
            got: list[Any] = []
            url = f"/threads/{quote(thread)}/ws?api_key={KEY_B}"
            with client.websocket_connect(url) as ws:
                sock = _Socket(ws, names, got, frames)
                for frame in (
                    {"type": "stop"},
                    {"type": "join", "run_id": a_run},
                    {"type": "join", "run_id": a_run, "after_seq": 3},
                ):
                    ws.send_json(frame)
                    sock.receive()
                ws.send_json({"type": "message", "content": "mine?"})
                b_run = sock.until_finished()[-1]["run_id"]
                names[b_run] = "<B's run>"
                ws.send_json({"type": "join", "run_id": b_run})
                sock.until_finished()
                ws.send_json({"type": "stop", "mode": "rollback"})
                sock.receive()
                ws.send_json({"type": "join", "run_id": a_run})
                sock.receive()
            answers[thread] = got
            b_view = client.get(f"/threads/{thread}", headers=B).json()
            assert [m["content"] for m in b_view["messages"]] == ["mine?", "ok"]
            assert b_view["thread_id"] == thread
        after = client.get("/threads/ws-a", headers=A).json()
    assert answers["ws-a"] == answers["ws-free"]
    kinds = [a["type"] for a in answers["ws-a"]]
    assert kinds[:3] == ["error"] * 3 and "run_finished" in kinds
    assert all(a["error"]["type"] == "not_found" for a in answers["ws-a"][:3])
    events = [a for a in answers["ws-a"] if a["type"] not in ("error", "stop_result")]
    assert events and all(e["thread_id"] == "<thread>" for e in events)
    assert not [f for f in frames for ns in NAMESPACES if ns in f]
    assert after == before


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_the_create_race_between_two_keys_gives_each_its_own_thread_100_times(
    backend: str, tmp_path: Path
) -> None:
    store = SqliteCheckpointer(str(tmp_path / "race.db")) if backend == "sqlite" else None
    app = chat_app(ScriptedModel(default_reply="ok"), checkpointer=store)
    api = create_app(app, api_keys=KEYS)
    refused, crossed = 0, 0
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api), base_url="http://tether"
        ) as c:
            with anyio.fail_after(120):
                for trial in range(100):
                    tid = f"race-{trial}"
                    a_runs = trial % 2 == 1  # A starts a run on the new id while B creates it
                    replies: dict[str, httpx.Response] = {}

                    async def call(
                        who: str,
                        headers: dict[str, str],
                        run: bool,
                        t: str = tid,
                        replies: dict[str, httpx.Response] = replies,
                    ) -> None:
                        if run:
                            replies[who] = await c.post(
                                f"/threads/{t}/runs/wait", json=HI, headers=headers
                            )
                        else:
                            body = {"thread_id": t, "metadata": {"who": who}}
                            replies[who] = await c.post("/threads", json=body, headers=headers)

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(call, "A", A, a_runs)
                        tg.start_soon(call, "B", B, False)
                    refused += any(r.status_code != 200 for r in replies.values())
                    seen_a = (await c.get(f"/threads/{tid}", headers=A)).json()
                    seen_b = (await c.get(f"/threads/{tid}", headers=B)).json()
                    a_own = (
                        [m["content"] for m in seen_a["messages"]] == ["hi", "ok"]
                        if a_runs
                        else seen_a["metadata"]["who"] == "A"
                    )
                    b_own = seen_b["metadata"].get("who") == "B" and seen_b["messages"] == []
                    crossed += not (a_own and b_own)
    finally:
        if store is not None:
            await store.aclose()
    assert (refused, crossed) == (0, 0)
