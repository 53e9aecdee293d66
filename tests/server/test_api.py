"""The REST API through httpx's ASGI transport: wire formats, stop/cancel, errors, limits, auth.

Streams block on scripted `Gate`s, so every "while it runs" moment is deterministic; each test that
could hang runs under `anyio.fail_after`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import httpx
import pytest

from tether.testing import Gate, ScriptedModel

from .conftest import Served

pytestmark = pytest.mark.anyio

HI = {"input": {"messages": [{"role": "user", "content": "hi"}]}}
WATCHDOG = 10


def sse_events(text: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(event, id, data) for each SSE message of a complete body."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        out.append((fields["event"], fields["id"], json.loads(fields["data"])))
    return out


async def messages_of(served: Served, thread_id: str) -> list[dict[str, Any]]:
    r = await served.client.get(f"/threads/{thread_id}")
    assert r.status_code == 200, r.text
    return list(r.json()["messages"])


async def started_run(served: Served, gate: Gate, thread_id: str = "t1") -> str:
    """Start a background run on `thread_id` and wait until its stream is blocked on `gate`."""
    r = await served.client.post(f"/threads/{thread_id}/runs", json=HI)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("pending", "running")
    await gate.reached()
    return str(r.json()["run_id"])


async def test_thread_is_created_read_and_listed(make_served: Any) -> None:
    served = await make_served()
    r = await served.client.post("/threads", json={"metadata": {"topic": "x"}})
    assert r.status_code == 200
    thread = r.json()
    assert thread["status"] == "idle"
    assert thread["metadata"] == {"topic": "x", "app": "chat"}
    r = await served.client.get(f"/threads/{thread['thread_id']}")
    assert r.json()["messages"] == []
    r = await served.client.get("/threads")
    assert [t["thread_id"] for t in r.json()] == [thread["thread_id"]]
    r = await served.client.post("/threads", json={"thread_id": thread["thread_id"]})
    assert r.status_code == 409
    assert r.json()["error"]["type"] == "conflict"
    r = await served.client.post(
        "/threads", json={"thread_id": thread["thread_id"], "if_exists": "do_nothing"}
    )
    assert r.status_code == 200


async def test_sse_stream_wire_format_ends_with_one_run_finished(make_served: Any) -> None:
    served = await make_served(["Hel", "lo"])
    with anyio.fail_after(WATCHDOG):
        r = await served.client.post("/threads/t1/runs/stream", json=HI)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    run_id = r.headers["x-tether-run-id"]
    events = sse_events(r.text)
    for event, ident, data in events:
        assert event == data["type"]
        assert ident == str(data["seq"])
        assert data["run_id"] == run_id
        assert data["thread_id"] == "t1"
    assert [int(i) for _, i, _ in events] == list(range(len(events)))
    assert [e for e, _, _ in events].count("run_finished") == 1
    last = events[-1]
    assert last[0] == "run_finished"
    assert last[2]["status"] == "completed"
    assert "reason" in last[2]
    deltas = [d["content"] for e, _, d in events if e == "message_delta"]
    assert deltas == ["Hel", "lo"]
    msgs = await messages_of(served, "t1")
    assert [(m["role"], m["content"], m["status"]) for m in msgs] == [
        ("user", "hi", "complete"),
        ("assistant", "Hello", "complete"),
    ]
    r = await served.client.get("/threads/t1")
    assert r.json()["metadata"]["title"] == "hi"


async def test_background_run_can_be_joined_from_its_log_after_any_seq(make_served: Any) -> None:
    served = await make_served(["a", "b", "c"])
    with anyio.fail_after(WATCHDOG):
        r = await served.client.post("/threads/t1/runs", json=HI)
        run_id = r.json()["run_id"]
        handle = served.app.registry.local(run_id)
        if handle is not None:
            await handle.wait()
        r = await served.client.get(f"/runs/{run_id}")
        assert r.json()["status"] == "completed"
        assert r.json() == (await served.client.get(f"/threads/t1/runs/{run_id}")).json()
        full = sse_events((await served.client.get(f"/threads/t1/runs/{run_id}/stream")).text)
        after = sse_events(
            (await served.client.get(f"/threads/t1/runs/{run_id}/stream?after_seq=4")).text
        )
        header = sse_events(
            (
                await served.client.get(
                    f"/threads/t1/runs/{run_id}/stream?after_seq=0",
                    headers={"Last-Event-ID": "4"},
                )
            ).text
        )
    assert full[-1][0] == "run_finished"
    assert [i for _, i, _ in after] == [i for _, i, _ in full if int(i) > 4]
    assert header == after
    runs = (await served.client.get("/threads/t1/runs")).json()
    assert [x["run_id"] for x in runs] == [run_id]


async def test_wait_answers_with_the_final_messages(make_served: Any) -> None:
    served = await make_served("Hello")
    with anyio.fail_after(WATCHDOG):
        r = await served.client.post("/threads/t1/runs/wait", json=HI)
    assert r.status_code == 200
    body = r.json()
    assert body["run"]["status"] == "completed"
    assert [m["content"] for m in body["messages"]] == ["hi", "Hello"]


async def test_busy_thread_rejects_with_409_and_names_the_active_run(make_served: Any) -> None:
    gate = Gate()
    served = await make_served(["Hel", gate, "lo"])
    with anyio.fail_after(WATCHDOG):
        run_id = await started_run(served, gate)
        for path in ("/threads/t1/runs", "/threads/t1/runs/stream", "/threads/t1/runs/wait"):
            r = await served.client.post(path, json=HI)
            assert r.status_code == 409, path
            assert r.json()["error"]["type"] == "thread_busy"
            assert r.json()["error"]["active_run_id"] == run_id
        gate.release()
        await served.app.registry.local(run_id).wait()  # type: ignore[union-attr]


async def test_cancel_keeps_the_partial_answer_marked_stopped(make_served: Any) -> None:
    gate = Gate()
    served = await make_served(["Hel", "lo", gate, " world"])
    with anyio.fail_after(WATCHDOG):
        run_id = await started_run(served, gate)
        r = await served.client.post(
            f"/threads/t1/runs/{run_id}/cancel?wait=true&reason=user+pressed+stop"
        )
    assert r.status_code == 200
    body = r.json()
    assert body["stopped"] is True
    run = body["run"]
    assert run["status"] == "cancelled"
    assert run["stop_mode"] == "now"
    assert run["stop_requested_by"] == "user"
    assert run["stop_reason"] == "user pressed stop"
    assert run["stop_requested_at"] is not None
    assert run["stopped_at"] is not None
    msgs = await messages_of(served, "t1")
    assert msgs[-1]["role"] == "assistant"
    assert msgs[-1]["content"] == "Hello"
    assert msgs[-1]["status"] == "stopped"
    events = sse_events((await served.client.get(f"/threads/t1/runs/{run_id}/stream")).text)
    assert events[-1][2]["status"] == "cancelled"
    # A stop of a finished run is not an error: 200 with stopped=false.
    r = await served.client.post(f"/threads/t1/runs/{run_id}/cancel")
    assert r.status_code == 200
    assert r.json()["stopped"] is False


async def test_cancel_with_rollback_restores_the_thread(make_served: Any) -> None:
    gate = Gate()
    served = await make_served("first", ["Hel", gate, "lo"])
    with anyio.fail_after(WATCHDOG):
        await served.client.post("/threads/t1/runs/wait", json=HI)
        before = await messages_of(served, "t1")
        run_id = await started_run(served, gate)
        r = await served.client.post(f"/threads/t1/runs/{run_id}/cancel?action=rollback&wait=true")
    assert r.json()["run"]["status"] == "cancelled"
    assert r.json()["run"]["stop_mode"] == "rollback"
    assert await messages_of(served, "t1") == before


async def test_stop_thread_then_follow_up_sees_the_partial_answer(make_served: Any) -> None:
    gate = Gate()
    served = await make_served(["Hel", "lo", gate, " world"], "sure")
    with anyio.fail_after(WATCHDOG):
        run_id = await started_run(served, gate)
        r = await served.client.post("/threads/t1/stop?wait=true")
        assert r.json()["stopped"] is True
        assert r.json()["run_id"] == run_id
        r = await served.client.post("/threads/t1/stop")
        assert r.json() == {"stopped": False, "run_id": None, "run": None}
        follow = {"input": {"messages": [{"role": "user", "content": "go on"}]}}
        r = await served.client.post("/threads/t1/runs/wait", json=follow)
    assert r.json()["run"]["status"] == "completed"
    seen = served.model.calls[-1]
    assert [(m.role, m.content, m.status) for m in seen] == [
        ("user", "hi", "complete"),
        ("assistant", "Hello", "stopped"),
        ("user", "go on", "complete"),
    ]


async def test_interrupt_strategy_supersedes_the_running_run(make_served: Any) -> None:
    gate = Gate()
    served = await make_served(["Hel", gate, "lo"], "second")
    with anyio.fail_after(WATCHDOG):
        first = await started_run(served, gate)
        body = {**HI, "multitask_strategy": "interrupt"}
        r = await served.client.post("/threads/t1/runs/wait", json=body)
    assert r.json()["run"]["status"] == "completed"
    old = (await served.client.get(f"/runs/{first}")).json()
    assert old["status"] == "cancelled"
    assert old["stop_requested_by"] == "superseded"


async def test_unknown_ids_are_404_with_a_json_error(make_served: Any) -> None:
    served = await make_served()
    await served.client.post("/threads", json={"thread_id": "t1"})
    for method, path in [
        ("GET", "/threads/nope"),
        ("GET", "/threads/nope/runs"),
        ("GET", "/runs/nope"),
        ("GET", "/threads/t1/runs/nope"),
        ("GET", "/threads/t1/runs/nope/stream"),
        ("POST", "/threads/t1/runs/nope/cancel"),
        ("POST", "/threads/nope/stop"),
        ("GET", "/no/such/endpoint"),
    ]:
        r = await served.client.request(method, path)
        assert r.status_code == 404, path
        assert r.json()["error"]["type"] == "not_found", path
        assert r.json()["error"]["message"], path


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**HI, "multitask_strategy": "later"}, "multitask_strategy"),
        ({**HI, "colour": "red"}, "colour"),
        ({"input": {"messages": [{"role": "wizard", "content": "x"}]}}, "messages[0]"),
        ({"input": {"messages": "hi"}}, "input.messages"),
        ({**HI, "resume": True}, "resume"),
        ({**HI, "app": "other"}, "other"),
    ],
)
async def test_invalid_run_bodies_are_422_naming_the_field(
    make_served: Any, body: dict[str, Any], fragment: str
) -> None:
    served = await make_served()
    r = await served.client.post("/threads/t1/runs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "invalid_request"
    assert fragment in r.json()["error"]["message"]


async def test_not_json_is_422(make_served: Any) -> None:
    served = await make_served()
    r = await served.client.post(
        "/threads/t1/runs", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "invalid_request"


async def test_body_over_the_limit_is_413_even_without_content_length(make_served: Any) -> None:
    served = await make_served(max_body_bytes=2048)
    big = json.dumps({"input": {"messages": [{"role": "user", "content": "x" * 5000}]}}).encode()
    r = await served.client.post(
        "/threads/t1/runs", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "request_too_large"

    async def chunks() -> Any:  # chunked transfer: no Content-Length to trust
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    r = await served.client.post(
        "/threads/t1/runs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "request_too_large"
    r = await served.client.get("/threads/t1")
    assert r.status_code == 404  # nothing was created


async def test_each_key_sees_only_its_own_threads(make_served: Any) -> None:
    gate = Gate()
    served = await make_served(
        ["Hel", gate, "lo"], api_keys={"key-alice-123": "alice", "key-bob-4567": "bob"}
    )
    alice = {"Authorization": "Bearer key-alice-123"}
    bob = {"X-API-Key": "key-bob-4567"}
    c = served.client
    r = await c.get("/threads")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "unauthorized"
    assert (await c.get("/threads", headers={"X-API-Key": "wrong-key-000"})).status_code == 401
    with anyio.fail_after(WATCHDOG):
        r = await c.post("/threads/t1/runs", json=HI, headers=alice)
        run_id = r.json()["run_id"]
        await gate.reached()
        for method, path in [
            ("GET", "/threads/t1"),
            ("GET", "/threads/t1/runs"),
            ("GET", f"/threads/t1/runs/{run_id}"),
            ("GET", f"/runs/{run_id}"),
            ("GET", f"/threads/t1/runs/{run_id}/stream"),
            ("POST", f"/threads/t1/runs/{run_id}/cancel"),
            ("POST", "/threads/t1/stop"),
            ("DELETE", "/threads/t1"),
        ]:
            r = await c.request(method, path, headers=bob, json=HI if method == "POST" else None)
            assert r.status_code == 404, (method, path)
        assert (await c.get("/threads", headers=bob)).json() == []
        # Each key has its own thread ids: Bob's "t1" is Bob's own thread, not Alice's.
        r = await c.post("/threads/t1/runs/wait", json=HI, headers=bob)
        assert r.status_code == 200
        assert [m["content"] for m in r.json()["messages"]] == ["hi", "ok"]
        assert [t["thread_id"] for t in (await c.get("/threads", headers=bob)).json()] == ["t1"]
        assert [t["thread_id"] for t in (await c.get("/threads", headers=alice)).json()] == ["t1"]
        assert (await c.get(f"/runs/{run_id}", headers=alice)).json()["status"] == "running"
        # The Python API sees the stored ids: each key's namespace, then the public id.
        alice_hash = hashlib.sha256(b"key-alice-123").hexdigest()
        info = await served.app.checkpointer.get_thread(f"{alice_hash[:16]}:t1")
        assert info is not None
        assert info.metadata["owner"] == alice_hash
        assert await served.app.checkpointer.get_thread("t1") is None
        assert "key-alice-123" not in json.dumps(info.metadata)
        shown = (await c.get("/threads/t1", headers=alice)).json()
        assert "owner" not in shown["metadata"] and "public_id" not in shown["metadata"]
        r = await c.post("/threads/t1/stop?wait=true", headers=alice)
        assert r.json()["stopped"] is True


async def test_openapi_docs_and_models_are_served(make_served: Any) -> None:
    served = await make_served()
    assert (await served.client.get("/docs")).status_code == 200
    spec = (await served.client.get("/openapi.json")).json()
    for path in (
        "/threads",
        "/threads/{thread_id}/runs/stream",
        "/threads/{thread_id}/runs/{run_id}/cancel",
        "/v1/chat/completions",
    ):
        assert path in spec["paths"]
    models = (await served.client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["chat"]
    info = (await served.client.get("/info")).json()
    assert info["apps"] == ["chat"]
    assert info["auth"] is False


async def test_delete_thread_removes_it(make_served: Any) -> None:
    served = await make_served()
    with anyio.fail_after(WATCHDOG):
        await served.client.post("/threads/t1/runs/wait", json=HI)
        r = await served.client.delete("/threads/t1")
    assert r.json() == {"thread_id": "t1", "deleted": True}
    assert (await served.client.get("/threads/t1")).status_code == 404


async def test_one_server_serves_several_apps_by_name(make_served: Any) -> None:
    from tether.server import create_app
    from tether.testing import ScriptedModel

    from ._chat import chat_app

    api = create_app(
        {
            "a": chat_app(ScriptedModel(default_reply="from a"), name="a"),
            "b": chat_app(ScriptedModel(default_reply="from b"), name="b"),
        }
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as c:
        with anyio.fail_after(WATCHDOG):
            r = await c.post("/threads/x/runs/wait", json={**HI, "app": "b"})
            assert r.json()["messages"][-1]["content"] == "from b"
            r = await c.post("/threads/y/runs/wait", json=HI)
            assert r.json()["messages"][-1]["content"] == "from a"
            r = await c.post("/threads/x/runs/wait", json={**HI, "app": "a"})
            assert r.status_code == 422
            r = await c.post(
                "/v1/chat/completions",
                json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 404
            assert r.json()["error"]["type"] == "model_not_found"
        assert {t["app"] for t in (await c.get("/threads")).json()} == {"a", "b"}


async def test_resume_continues_the_stopped_answer_in_the_same_message(make_served: Any) -> None:
    gate = Gate()
    served = await make_served(["Hel", "lo", gate, " never"], [" world", "!"])
    with anyio.fail_after(WATCHDOG):
        run_id = await started_run(served, gate)
        await served.client.post(f"/threads/t1/runs/{run_id}/cancel?wait=true")
        stopped = (await messages_of(served, "t1"))[-1]
        r = await served.client.post("/threads/t1/runs/stream", json={"resume": True})
    events = sse_events(r.text)
    assert events[-1][2]["status"] == "completed"
    deltas = [d for e, _, d in events if e == "message_delta"]
    assert {d["message_id"] for d in deltas} == {stopped["id"]}
    last = (await messages_of(served, "t1"))[-1]
    assert (last["id"], last["content"], last["status"]) == (
        stopped["id"],
        "Hello world!",
        "complete",
    )


async def test_tool_calls_stream_as_events_and_a_stop_cancels_the_running_tool() -> None:
    from tether.server import create_app
    from tether.testing import ToolCallStep
    from tether.tools import tool

    from ._chat import chat_app

    entered = Gate("tool")

    @tool
    async def lookup(query: str) -> str:
        """Look something up."""
        await entered.wait()  # blocks until the test stops the run
        return "never"

    app = chat_app(
        ScriptedModel(["Checking.", ToolCallStep("lookup", {"query": "x"})]), tools=[lookup]
    )
    api = create_app(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as c:
        with anyio.fail_after(WATCHDOG):
            r = await c.post("/threads/t1/runs", json=HI)
            run_id = r.json()["run_id"]
            await entered.reached()
            await c.post(f"/threads/t1/runs/{run_id}/cancel?wait=true")
            events = sse_events((await c.get(f"/threads/t1/runs/{run_id}/stream")).text)
            msgs = (await c.get("/threads/t1")).json()["messages"]
    kinds = [e for e, _, _ in events]
    started = next(d for e, _, d in events if e == "tool_call_started")
    finished = next(d for e, _, d in events if e == "tool_call_finished")
    assert kinds.index("tool_call_started") < kinds.index("tool_call_finished")
    assert (started["name"], json.loads(started["arguments"])) == ("lookup", {"query": "x"})
    assert finished["status"] == "cancelled"
    assert finished["tool_call_id"] == started["tool_call_id"]
    tool_msg = msgs[-1]
    assert (tool_msg["role"], tool_msg["status"]) == ("tool", "cancelled")
    assert msgs[-2]["tool_calls"][0]["id"] == started["tool_call_id"]


async def test_a_failed_run_is_reported_not_raised() -> None:
    from contextlib import asynccontextmanager

    from tether.models import Model
    from tether.server import create_app

    from ._chat import chat_app

    class Broken(Model):
        name = "broken"

        @asynccontextmanager
        async def stream(self, messages: Any, **kwargs: Any) -> Any:
            raise RuntimeError("model exploded")
            yield  # an async generator, for asynccontextmanager

    api = create_app(chat_app(Broken(), name="b"))
    chat = {"model": "b", "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as c:
        with anyio.fail_after(WATCHDOG):
            waited = await c.post("/threads/t1/runs/wait", json=HI)
            plain = await c.post("/v1/chat/completions", json=chat)
            streamed = await c.post("/v1/chat/completions", json={**chat, "stream": True})
    assert waited.status_code == 200
    assert waited.json()["run"]["status"] == "failed"
    assert "model exploded" in waited.json()["run"]["error"]
    assert plain.status_code == 500
    assert plain.json()["error"] == {
        "type": "run_failed",
        "message": "RuntimeError: model exploded",
    }
    assert '"error":{"type":"run_failed"' in streamed.text
    assert streamed.text.endswith("data: [DONE]\n\n")
