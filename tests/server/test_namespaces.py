"""Per-key thread-id namespaces: how a public id maps to storage and back, and what clients see.

With auth on, the id a client sends is stored as `<16 hex digits of its key hash>:<id>` (or, for a
public id too long for that, `<digits>#<sha256 of the id>`); every answer shows the public id.
Threads from before namespaces (stored under their public id, with an owner) stay usable by their
owner. With auth off nothing is mapped.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest

from tether import InMemoryCheckpointer, StateGraph
from tether.context import RunContext
from tether.server import create_app
from tether.server.auth import NAMESPACE_CHARS, PUBLIC_ID_KEY, Principal, hash_key
from tether.server.inputs import header_value
from tether.storage.base import ThreadInfo
from tether.testing import Gate

from .conftest import Served

pytestmark = pytest.mark.anyio

WATCHDOG = 20
KEY_A, KEY_B = "sk-ns-alice-1", "sk-ns-bob-22"
KEYS = {KEY_A: "alice", KEY_B: "bob"}
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
ALICE = Principal(owner=hash_key(KEY_A))
HI = {"input": {"messages": [{"role": "user", "content": "hi"}]}}


def _sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


async def test_ids_map_into_the_keys_namespace_and_back() -> None:
    namespace = ALICE.owner[:NAMESPACE_CHARS]  # type: ignore[index]
    assert ALICE.internal_id("chat-1") == f"{namespace}:chat-1"
    assert ALICE.public_id(f"{namespace}:chat-1", {}) == "chat-1"
    assert ALICE.in_namespace(f"{namespace}:chat-1")
    # A public id that would not fit App's 200 characters is stored by its digest.
    long_id = "é" * 200
    internal = ALICE.internal_id(long_id)
    assert internal.startswith(f"{namespace}#") and len(internal) <= 200
    assert ALICE.public_id(internal, {PUBLIC_ID_KEY: long_id}) == long_id
    assert ALICE.internal_id("x" * 183) == f"{namespace}:{'x' * 183}"  # exactly 200
    assert ALICE.internal_id("x" * 184).startswith(f"{namespace}#")
    # Another key's namespace, and ids that are not namespaced, map to themselves.
    bob = Principal(owner=hash_key(KEY_B))
    assert bob.internal_id("chat-1") != ALICE.internal_id("chat-1")
    assert not bob.in_namespace(ALICE.internal_id("chat-1"))
    assert bob.public_id(ALICE.internal_id("chat-1"), {}) == ALICE.internal_id("chat-1")
    assert ALICE.public_id("legacy", {}) == "legacy"
    anonymous = Principal(owner=None)
    assert anonymous.internal_id("chat-1") == "chat-1"
    assert anonymous.public_id(ALICE.internal_id("chat-1"), {}) == ALICE.internal_id("chat-1")


async def test_every_answer_shows_the_public_id(make_served: Any) -> None:
    gate = Gate()
    served: Served = await make_served(["Hel", gate, "lo"], api_keys=KEYS)
    c = served.client
    tid = "日本 chat·1"
    path = f"/threads/{quote(tid, safe='')}"
    with anyio.fail_after(WATCHDOG):
        r = await c.post(f"{path}/runs", json=HI, headers=A)
        assert r.status_code == 200 and r.json()["thread_id"] == tid
        run_id = r.json()["run_id"]
        assert r.headers["x-tether-thread-id"] == header_value(tid)
        assert r.headers["content-location"] == header_value(f"/threads/{tid}/runs/{run_id}")
        await gate.reached()
        # A second run is refused (409): its message names the public id.
        busy = await c.post(f"{path}/runs", json=HI, headers=A)
        gate.release()
        joined = _sse_events((await c.get(f"{path}/runs/{run_id}/stream", headers=A)).text)
        r = await c.post(f"{path}/runs/stream", json=HI, headers=A)
        assert r.headers["x-tether-thread-id"] == header_value(tid)
        events = _sse_events(r.text)
        record = (await c.get(f"/runs/{run_id}", headers=A)).json()
        runs = (await c.get(f"{path}/runs", headers=A)).json()
        thread = (await c.get(path, headers=A)).json()
        listed = (await c.get("/threads", headers=A)).json()
        v1 = await c.post(
            "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "more"}]},
            headers={**A, "X-Tether-Thread-Id": quote(tid)},
        )
        stopped = (await c.post(f"{path}/stop", headers=A)).json()
        deleted = (await c.delete(path, headers=A)).json()
    assert busy.status_code == 409
    assert repr(tid) in busy.json()["error"]["message"]
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "completed"
    assert joined[-1]["type"] == "run_finished" and joined[-1]["status"] == "completed"
    assert {e["thread_id"] for e in events} == {tid} == {e["thread_id"] for e in joined}
    assert record["thread_id"] == tid and [r["thread_id"] for r in runs] == [tid, tid]
    assert thread["thread_id"] == tid and [t["thread_id"] for t in listed] == [tid]
    assert set(thread["metadata"]) == {"app", "title"}
    assert v1.json()["tether"]["thread_id"] == tid
    assert v1.headers["x-tether-thread-id"] == header_value(tid)
    assert stopped["stopped"] is False
    assert deleted == {"thread_id": tid, "deleted": True}
    # Stored under Alice's namespace; the Python API sees that id.
    assert await served.app.checkpointer.get_thread(ALICE.internal_id(tid)) is None  # deleted
    assert ALICE.owner is not None
    everything = json.dumps([events, joined, record, runs, thread, listed, v1.json(), busy.json()])
    assert ALICE.owner[:NAMESPACE_CHARS] not in everything


async def test_an_id_too_long_for_the_namespace_prefix_still_works(make_served: Any) -> None:
    served: Served = await make_served(api_keys=KEYS)
    c = served.client
    tid = "t" * 200
    with anyio.fail_after(WATCHDOG):
        r = await c.post("/threads", json={"thread_id": tid}, headers=A)
        assert r.status_code == 200 and r.json()["thread_id"] == tid
        r = await c.post(f"/threads/{tid}/runs/wait", json=HI, headers=A)
        assert r.status_code == 200 and r.json()["run"]["thread_id"] == tid
        # Bob's id of the same text is Bob's own thread.
        r = await c.post("/threads", json={"thread_id": tid}, headers=B)
        assert r.status_code == 200
        listed = (await c.get("/threads", headers=A)).json()
        bob = (await c.get(f"/threads/{tid}", headers=B)).json()
    assert [t["thread_id"] for t in listed] == [tid]
    assert "public_id" not in listed[0]["metadata"]
    assert bob["messages"] == []
    internal = ALICE.internal_id(tid)
    info = await served.app.checkpointer.get_thread(internal)
    assert info is not None and len(internal) <= 200 and info.metadata[PUBLIC_ID_KEY] == tid
    state = await served.app.aget_state(internal)
    assert [m.content for m in state.values["messages"]] == ["hi", "ok"]


async def test_a_thread_from_before_namespaces_stays_its_owners(make_served: Any) -> None:
    served: Served = await make_served(api_keys=KEYS)
    c = served.client
    # Stored as the server stored threads before namespaces: under the public id, with an owner.
    old = ThreadInfo(thread_id="old-1", metadata={"owner": ALICE.owner, "app": "chat"})
    await served.app.checkpointer.create_thread(old)
    with anyio.fail_after(WATCHDOG):
        assert (await c.get("/threads/old-1", headers=A)).json()["thread_id"] == "old-1"
        assert [t["thread_id"] for t in (await c.get("/threads", headers=A)).json()] == ["old-1"]
        r = await c.post("/threads/old-1/runs/wait", json=HI, headers=A)
        assert r.status_code == 200 and r.json()["run"]["thread_id"] == "old-1"
        taken = await c.post("/threads", json={"thread_id": "old-1"}, headers=A)
        same = await c.post(
            "/threads", json={"thread_id": "old-1", "if_exists": "do_nothing"}, headers=A
        )
        # For Bob it is a free id: his own thread.
        missing = (await c.get("/threads/old-1", headers=B)).json()
        free = (await c.get("/threads/never-1", headers=B)).json()
        mine = await c.post("/threads/old-1/runs/wait", json=HI, headers=B)
        alice_view = (await c.get("/threads/old-1", headers=A)).json()
    assert taken.status_code == 409
    assert same.status_code == 200 and same.json()["thread_id"] == "old-1"
    assert missing == json.loads(json.dumps(free).replace("never-1", "old-1"))
    assert mine.status_code == 200 and mine.json()["run"]["thread_id"] == "old-1"
    assert [m["content"] for m in alice_view["messages"]] == ["hi", "ok"]
    # Alice's run used the old stored id; Bob's thread is in his namespace.
    assert await served.app.checkpointer.get_thread(ALICE.internal_id("old-1")) is None
    bob = Principal(owner=hash_key(KEY_B))
    assert await served.app.checkpointer.get_thread(bob.internal_id("old-1")) is not None
    messages = (await served.app.aget_state("old-1")).values["messages"]
    assert [m.content for m in messages] == ["hi", "ok"]


async def test_with_auth_off_ids_are_stored_as_they_are(make_served: Any) -> None:
    served: Served = await make_served()
    with anyio.fail_after(WATCHDOG):
        r = await served.client.post("/threads/plain-1/runs/wait", json=HI)
    assert r.json()["run"]["thread_id"] == "plain-1"
    info = await served.app.checkpointer.get_thread("plain-1")
    assert info is not None and "owner" not in info.metadata and PUBLIC_ID_KEY not in info.metadata
    assert [t.thread_id for t in await served.app.checkpointer.list_threads()] == ["plain-1"]


async def test_a_failure_that_names_the_stored_id_shows_the_public_one() -> None:
    async def fail(state: dict[str, Any], ctx: RunContext) -> Any:
        raise ValueError(f"no luck on thread {ctx.thread_id!r}")

    graph = StateGraph()
    graph.add_node("fail", fail)
    graph.set_entry_point("fail")
    app = graph.compile(InMemoryCheckpointer(), name="g")
    api = create_app(app, api_keys=KEYS)
    v1 = {"model": "g", "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as c:
        with anyio.fail_after(WATCHDOG):
            waited = (await c.post("/threads/g1/runs/wait", json=HI, headers=A)).json()
            streamed = _sse_events(
                (await c.post("/threads/g1/runs/stream", json=HI, headers=A)).text
            )
            record = (await c.get(f"/runs/{waited['run']['run_id']}", headers=A)).json()
            v1_plain = await c.post(
                "/v1/chat/completions", json=v1, headers={**A, "X-Tether-Thread-Id": "g1"}
            )
            v1_stream = await c.post(
                "/v1/chat/completions",
                json={**v1, "stream": True},
                headers={**A, "X-Tether-Thread-Id": "g1"},
            )
    expected = "ValueError: no luck on thread 'g1'"
    assert waited["run"]["error"] == expected == record["error"]
    assert streamed[-1]["type"] == "run_finished" and streamed[-1]["error"] == expected
    assert v1_plain.status_code == 500 and v1_plain.json()["error"]["message"] == expected
    assert f'"message":"{expected}"' in v1_stream.text.replace("\\'", "'")
    # The stored record keeps the stored id: that is what the app's own code saw.
    stored = await app.aget_run(record["run_id"])
    assert (
        stored is not None
        and stored.error == f"ValueError: no luck on thread {ALICE.internal_id('g1')!r}"
    )
