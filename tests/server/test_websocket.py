"""`WS /threads/{thread_id}/ws`: messages in, events out, stop and resume frames, errors as frames."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tether.server import create_app
from tether.testing import Gate, ScriptedModel

from ._chat import chat_app

TIMEOUT = 10


def until_finished(ws: Any) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = ws.receive_json()
        frames.append(frame)
        if frame["type"] == "run_finished":
            return frames


def test_websocket_chat_streams_events_and_stops_on_request() -> None:
    gate = Gate()
    app = chat_app(ScriptedModel("Hello", ["Par", "tial", gate, " never"], default_reply="ok"))
    with TestClient(create_app(app)) as client, client.websocket_connect("/threads/w1/ws") as ws:
        ws.send_json({"type": "message", "content": "hi"})
        frames = until_finished(ws)
        assert frames[-1]["status"] == "completed"
        assert "".join(f["content"] for f in frames if f["type"] == "message_delta") == "Hello"

        ws.send_json({"type": "message", "content": "more"})
        assert gate.wait_reached(TIMEOUT)
        ws.send_json({"type": "message", "content": "too soon"})
        ws.send_json({"type": "stop", "mode": "now"})
        frames = until_finished(ws)
        errors = [f for f in frames if f["type"] == "error"]
        assert errors[0]["error"]["type"] == "thread_busy"
        result = next(f for f in frames if f["type"] == "stop_result")
        assert result["stopped"] is True
        assert frames[-1]["status"] == "cancelled"

        ws.send_json({"type": "bogus"})
        assert ws.receive_json()["error"]["type"] == "invalid_request"
        ws.send_text("not json")
        assert ws.receive_json()["error"]["type"] == "invalid_request"


def test_websocket_disconnect_stops_the_runs_it_started() -> None:
    gate = Gate()
    app = chat_app(ScriptedModel(["Hel", gate, "lo"]))
    with TestClient(create_app(app)) as client:
        with client.websocket_connect("/threads/w2/ws") as ws:
            ws.send_json({"type": "message", "content": "hi"})
            assert gate.wait_reached(TIMEOUT)
            assert ws.receive_json()["type"] == "run_started"
        runs = client.get("/threads/w2/runs").json()
        # The socket closed; the run it started is stopped as a disconnect.
        run_id = runs[0]["run_id"]
        with client.websocket_connect("/threads/w2/ws") as ws2:
            ws2.send_json({"type": "join", "run_id": run_id, "after_seq": -1})
            frames = until_finished(ws2)
        run = client.get(f"/runs/{run_id}").json()
    assert frames[-1]["status"] == "cancelled"
    assert run["stop_requested_by"] == "disconnect"


def test_websocket_answers_another_keys_thread_exactly_like_a_missing_one() -> None:
    app = chat_app(ScriptedModel(default_reply="ok"))
    keys = {"key-alice-123": "alice", "key-bob-4567": "bob"}
    with TestClient(create_app(app, api_keys=keys)) as client:
        with client.websocket_connect("/threads/w3/ws?api_key=key-alice-123") as ws:
            ws.send_json({"type": "message", "content": "hi"})
            run_id = until_finished(ws)[-1]["run_id"]
        answers = {}
        for thread in ("w3", "free"):
            # The handshake is accepted for both: no existence oracle.
            with client.websocket_connect(f"/threads/{thread}/ws?api_key=key-bob-4567") as ws:
                ws.send_json({"type": "stop"})
                stop = ws.receive_json()
                ws.send_json({"type": "join", "run_id": run_id})
                join = ws.receive_json()
            answers[thread] = (
                stop["error"]["type"],
                stop["error"]["message"].replace(thread, "<id>"),
                join["error"]["type"],
                join["error"]["message"].replace(thread, "<id>"),
            )
        assert answers["w3"] == answers["free"]
        assert answers["w3"][0] == "not_found"
        with client.websocket_connect("/threads/w3/ws?api_key=key-bob-4567") as ws:
            # Bob's "w3" is Bob's own thread: his run never sees Alice's messages.
            ws.send_json({"type": "message", "content": "let me in"})
            events = until_finished(ws)
            assert {e["thread_id"] for e in events} == {"w3"}
        bob = client.get("/threads/w3", headers={"X-API-Key": "key-bob-4567"}).json()
        assert [m["content"] for m in bob["messages"]] == ["let me in", "ok"]
        alice = client.get("/threads/w3", headers={"X-API-Key": "key-alice-123"}).json()
        assert [m["content"] for m in alice["messages"]] == ["hi", "ok"]
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/threads/w3/ws"),
        ):
            pass
        assert refused.value.code == 1008
        assert "API key" in refused.value.reason
