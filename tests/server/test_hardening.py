"""Regression tests for what probing the server from outside found (issue 10).

Each test names the contract it keeps: bad input is a 422 (or an `error` frame on a WebSocket)
that names the field, nothing is started or stored for a refused request, and no input makes a
5xx. All in-process, over httpx's ASGI transport or Starlette's WebSocket test client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from starlette.testclient import TestClient

from tether.errors import ThreadBusyError
from tether.server import create_app
from tether.server.auth import load_api_keys
from tether.testing import ScriptedModel

from ._chat import chat_app
from .conftest import Served

WATCHDOG = 10
RUN_PATHS = ("/threads/{}/runs", "/threads/{}/runs/stream", "/threads/{}/runs/wait")
BAD_MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "x"}}]}, "id"),
    ({"role": "assistant", "content": "", "tool_calls": 5}, "tool_calls"),
    ({"role": "assistant", "content": "", "tool_calls": [{"id": "c", "function": {}}]}, "name"),
    ({"role": "user", "content": "hi", "id": 5}, "id"),
    ({"role": "user", "content": [{"type": "text", "text": 5}]}, "content"),
    ({"role": "user", "content": [{"type": "text"}]}, "content"),
    ({"role": "wizard", "content": "hi"}, "role"),
    ({"role": "user", "content": {"a": 1}}, "content"),
]


def _run_body(message: dict[str, Any]) -> dict[str, Any]:
    return {"input": {"messages": [message]}}


async def _thread_count(served: Served) -> int:
    return len(await served.app.checkpointer.list_threads(limit=1000))


@pytest.mark.anyio
@pytest.mark.parametrize(("message", "field"), BAD_MESSAGES)
async def test_malformed_messages_are_422_naming_the_field_on_every_endpoint(
    make_served: Any, message: dict[str, Any], field: str
) -> None:
    served = await make_served()
    with anyio.fail_after(WATCHDOG):
        for path in RUN_PATHS:
            r = await served.client.post(path.format("m1"), json=_run_body(message))
            assert r.status_code == 422, (path, r.text)
            assert field in r.json()["error"]["message"], r.text
        r = await served.client.post(
            "/v1/chat/completions", json={"model": "chat", "messages": [message]}
        )
        assert r.status_code == 422, r.text
        assert field in r.json()["error"]["message"]
    assert await _thread_count(served) == 0  # nothing was created for a refused run


def test_malformed_websocket_frames_get_error_frames_and_the_socket_stays_open() -> None:
    app = chat_app(ScriptedModel(default_reply="ok"))
    deep: Any = "x"
    for _ in range(600):
        deep = [deep]
    frames: list[Any] = [{"type": "message", "messages": [message]} for message, _ in BAD_MESSAGES]
    frames += [
        {"type": "stop", "reason": {"a": 1}},
        {"type": "stop", "mode": "sideways"},
        {"type": "join", "run_id": 5},
        {"type": "join", "run_id": "r", "after_seq": "7"},
        {"type": "message", "content": ""},
        {"type": "message", "content": "hi", "extra": deep},
        {"type": "bogus"},
        [1, 2],
        "just a string",
    ]
    with TestClient(create_app(app)) as client, client.websocket_connect("/threads/w1/ws") as ws:
        for frame in frames:
            ws.send_text(json.dumps(frame))
            answer = ws.receive_json()
            assert answer["type"] == "error", frame
            assert answer["error"]["type"] == "invalid_request", answer
        ws.send_text("[" * 5000 + "]" * 5000)  # past Python's recursion limit
        assert ws.receive_json()["error"]["type"] == "invalid_request"
        ws.send_bytes(b"\x00\x01binary")
        assert ws.receive_json()["error"]["type"] == "invalid_request"
        # Still open, and the thread still works: nothing above corrupted it.
        ws.send_json({"type": "message", "content": "hi"})
        while (frame := ws.receive_json())["type"] != "run_finished":
            pass
        assert frame["status"] == "completed"
        run_id = frame["run_id"]
        ws.send_json({"type": "stop", "reason": "a string is fine"})
        assert ws.receive_json()["type"] == "stop_result"
        assert client.get(f"/runs/{run_id}").status_code == 200
        assert client.get("/threads/w1").status_code == 200


def test_a_stop_frame_with_a_non_string_reason_leaves_the_records_readable() -> None:
    from tether.testing import Gate

    gate = Gate()
    app = chat_app(ScriptedModel(["Hel", gate, "lo"], default_reply="ok"))
    with TestClient(create_app(app)) as client, client.websocket_connect("/threads/w2/ws") as ws:
        ws.send_json({"type": "message", "content": "hi"})
        assert gate.wait_reached(WATCHDOG)
        ws.send_json({"type": "stop", "reason": {"a": 1}})
        while (frame := ws.receive_json())["type"] != "error":
            pass
        ws.send_json({"type": "stop", "reason": "ok"})
        while (frame := ws.receive_json())["type"] != "run_finished":
            pass
        assert frame["status"] == "cancelled"
        assert client.get(f"/runs/{frame['run_id']}").json()["stop_reason"] == "ok"
        assert client.get("/threads/w2").status_code == 200


@pytest.mark.anyio
async def test_a_thread_id_outside_latin1_works_and_is_percent_encoded_in_headers(
    make_served: Any,
) -> None:
    served = await make_served()
    with anyio.fail_after(WATCHDOG):
        r = await served.client.post(
            f"/threads/{quote('日本')}/runs/wait", json=_run_body({"role": "user", "content": "hi"})
        )
    assert r.status_code == 200, r.text
    assert r.json()["run"]["thread_id"] == "日本"
    assert r.headers["x-tether-thread-id"] == quote("日本")
    assert (await served.client.get(f"/threads/{quote('日本')}")).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("raw", ["a%00b", "a%0Db", "a%0Ab", "tab%09", "x" * 201])
async def test_a_bad_thread_id_is_422_before_anything_runs_or_is_stored(
    make_served: Any, raw: str
) -> None:
    served = await make_served()
    with anyio.fail_after(WATCHDOG):
        for path in RUN_PATHS:
            r = await served.client.post(
                path.format(raw), json=_run_body({"role": "user", "content": "hi"})
            )
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert "thread_id" in r.text
        r = await served.client.post("/threads", json={"thread_id": "a\nb"})
        assert r.status_code == 422
        r = await served.client.post(
            "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Tether-Thread-Id": "a\tb"},
        )
        assert r.status_code == 422
    assert await _thread_count(served) == 0
    assert served.model.calls == []  # nothing ran


@pytest.mark.anyio
@pytest.mark.parametrize("depth", [40, 600, 900, 5000])
async def test_deeply_nested_json_is_422(make_served: Any, depth: int) -> None:
    served = await make_served()
    deep = "[" * depth + "]" * depth
    bodies = {
        "/threads/d1/runs/wait": '{"input": {"messages": [], "x": %s}}',
        "/threads/d1/runs": '{"metadata": {"x": %s}}',
        "/threads": '{"metadata": {"x": %s}}',
    }
    with anyio.fail_after(WATCHDOG):
        for path, template in bodies.items():
            r = await served.client.post(
                path, content=template % deep, headers={"content-type": "application/json"}
            )
            assert r.status_code == 422, (path, r.status_code, r.text)
    assert await _thread_count(served) == 0


@pytest.mark.anyio
async def test_an_unpaired_surrogate_is_422_and_stores_nothing(make_served: Any) -> None:
    served = await make_served()
    hi = '{"role": "user", "content": "hi"}'
    bodies = [
        '{"input": {"messages": [' + hi + ']}, "metadata": {"a": "\\ud800"}}',
        '{"input": {"messages": [{"role": "user", "content": "\\udfff"}]}}',
        '{"input": {"messages": [' + hi + ']}, "config": {"\\ud800": 1}}',
    ]
    with anyio.fail_after(WATCHDOG):
        for body in bodies:
            r = await served.client.post(
                "/threads/s1/runs/wait", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 422, r.text
    assert await _thread_count(served) == 0


@pytest.mark.anyio
async def test_a_refused_run_leaves_no_thread_behind(make_served: Any) -> None:
    served = await make_served()
    hi = _run_body({"role": "user", "content": "hi"})
    with anyio.fail_after(WATCHDOG):
        r = await served.client.post(f"/threads/{'y' * 201}/runs", json=hi)
        assert r.status_code == 422
        r = await served.client.post("/threads/r1/runs", json={**hi, "app": "nope"})
        assert r.status_code == 422
        r = await served.client.post(
            "/threads/r1/runs", json={**hi, "config": {"recursion_limit": "many"}}
        )
        assert r.status_code in (400, 422), r.text
    assert await _thread_count(served) == 0


@pytest.mark.anyio
async def test_a_run_refused_as_busy_on_a_thread_it_created_keeps_the_thread(
    make_served: Any,
) -> None:
    """Two requests start a run on one new thread at once; the one that created the thread can
    be the one refused (busy): the thread holds the other's run then, and must stay."""
    from tether.server.auth import ANONYMOUS
    from tether.server.context import ServerContext
    from tether.testing import Gate

    gate = Gate()
    served = await make_served(["Hel", gate, "lo"])
    ctx = served.api.state.tether
    assert isinstance(ctx, ServerContext)
    with anyio.fail_after(WATCHDOG):
        ref = await ctx.catalog.thread_for_run("both", ANONYMOUS, None)
        assert ref.created
        other = await served.app.astart(
            {"messages": [{"role": "user", "content": "b"}]}, thread_id=ref.thread_id
        )
        await gate.reached()
        with pytest.raises(ThreadBusyError):
            await ctx.catalog.start_run(
                ref, served.app.astart({"messages": []}, thread_id=ref.thread_id)
            )
        assert await served.app.checkpointer.get_thread(ref.thread_id) is not None
        gate.release()
        assert (await other.result())["messages"][-1].content == "Hello"
    r = await served.client.get("/threads/both")
    assert r.status_code == 200 and r.json()["messages"][-1]["content"] == "Hello"


def test_a_500_says_connection_close(tmp_path: Path) -> None:
    app = chat_app(ScriptedModel(default_reply="ok"))
    api = create_app(app)

    @api.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(api, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500
    assert r.headers["connection"] == "close"
    assert "a bug" not in r.text


def test_the_key_file_splits_key_and_name_on_any_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("sk-tab-key-123\talice\nsk-space-key-456   bob\nsk-alone-key-789\n")
    keys = load_api_keys(path)
    assert keys is not None
    assert keys.check("sk-tab-key-123").name == "alice"
    assert keys.check("sk-space-key-456").name == "bob"
    assert keys.check("sk-alone-key-789").name == "keys.txt:3"


@pytest.mark.anyio
async def test_every_error_status_and_the_sse_media_type_are_in_the_openapi_spec(
    make_served: Any,
) -> None:
    served = await make_served()
    spec = (await served.client.get("/openapi.json")).json()
    for path, ops in spec["paths"].items():
        if path in ("/info", "/healthz"):
            continue
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"400", "401", "404", "409", "413", "422"} <= codes, (method, path, codes)
            for code in codes - {"200"}:
                assert "application/json" in op["responses"][code]["content"], (path, code)
    for path in ("/threads/{thread_id}/runs/stream", "/threads/{thread_id}/runs/{run_id}/stream"):
        method = "post" if path.endswith("runs/stream") else "get"
        assert "text/event-stream" in spec["paths"][path][method]["responses"]["200"]["content"]


@pytest.mark.anyio
async def test_a_405_lists_every_method_of_the_path(make_served: Any) -> None:
    served = await make_served()
    r = await served.client.request("PATCH", "/threads")
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}


def test_a_refused_websocket_closes_with_1008_and_a_reason() -> None:
    from starlette.websockets import WebSocketDisconnect

    app = chat_app(ScriptedModel(default_reply="ok"))
    with TestClient(create_app(app, api_keys=["sk-only-key-1"])) as client:
        for url in ("/threads/t/ws", "/threads/t/ws?api_key=sk-only-key-1&on_disconnect=maybe"):
            with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(url):
                pass
            assert refused.value.code == 1008
            assert refused.value.reason


@pytest.mark.anyio
async def test_v1_continues_a_non_latin1_thread_from_the_header_it_sent(make_served: Any) -> None:
    served = await make_served()
    body = {"model": "chat", "messages": [{"role": "user", "content": "one"}]}
    with anyio.fail_after(WATCHDOG):
        first = await served.client.post("/v1/chat/completions", json=body)
        assert first.status_code == 200, first.text
        await served.client.post(
            f"/threads/{quote('日本')}/runs/wait", json=_run_body(body["messages"][0])
        )
        r = await served.client.post(
            "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "two"}]},
            headers={"X-Tether-Thread-Id": quote("日本")},
        )
    assert r.status_code == 200, r.text
    assert r.headers["x-tether-thread-id"] == quote("日本")
    assert r.json()["tether"]["thread_id"] == "日本"


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_first_message_postgres_cannot_title_with_leaves_no_thread(
    postgres_dsn: str,
) -> None:
    from tether.storage.postgres import PostgresCheckpointer

    store = PostgresCheckpointer(postgres_dsn)
    api = create_app(chat_app(ScriptedModel(default_reply="ok"), checkpointer=store))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api), base_url="http://tether"
        ) as client:
            with anyio.fail_after(WATCHDOG):
                # jsonb (the metadata index) refuses NUL: the title cannot be stored.
                r = await client.post(
                    "/threads/nul-title/runs/wait",
                    json=_run_body({"role": "user", "content": "a\u0000b"}),
                )
            assert r.status_code == 400, r.text
            assert await store.get_thread("nul-title") is None
    finally:
        await store.aclose()
