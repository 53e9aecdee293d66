"""SSE against a real uvicorn process: streaming, disconnect → cancel, re-join with Last-Event-ID.

The served model (`_served.py`) blocks on named gates that the test opens over HTTP, and
`/_test/gates/NAME/reached` answers once a stream is blocked there: no sleeps.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from ._client import SSE, Server, read_sse

pytestmark = pytest.mark.anyio

WATCHDOG = 30


def user(text: str) -> dict[str, Any]:
    return {"input": {"messages": [{"role": "user", "content": text}]}}


async def script(c: httpx.AsyncClient, *turns: list[str]) -> None:
    (await c.post("/_test/script", json={"turns": list(turns)})).raise_for_status()


async def finish_of(c: httpx.AsyncClient, thread_id: str, run_id: str) -> SSE:
    """Join the run and read until its terminal event (blocks until the run ended)."""
    async with c.stream("GET", f"/threads/{thread_id}/runs/{run_id}/stream") as r:
        events = [e async for e in read_sse(r.aiter_lines())]
    assert events[-1].event == "run_finished"
    return events[-1]


async def test_sse_streams_tokens_as_they_are_produced(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=WATCHDOG) as c:
        await script(c, ["Hel", "lo", "@gate:u1", " world"])
        with anyio.fail_after(WATCHDOG):
            async with c.stream("POST", "/threads/u1/runs/stream", json=user("hi")) as r:
                assert r.status_code == 200
                seen: list[SSE] = []
                async for event in read_sse(r.aiter_lines()):
                    seen.append(event)
                    text = "".join(e.data["content"] for e in seen if e.event == "message_delta")
                    if text == "Hello":
                        # Both tokens arrived while the model is still blocked mid-answer.
                        await c.get("/_test/gates/u1/reached")
                        await c.post("/_test/gates/u1/release")
        assert seen[-1].event == "run_finished"
        assert seen[-1].data["status"] == "completed"
        assert [int(e.id or -1) for e in seen] == list(range(len(seen)))


async def test_sse_disconnect_cancels_the_run(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=WATCHDOG) as c:
        await script(c, ["Hel", "lo", "@gate:u2", " never"])
        with anyio.fail_after(WATCHDOG):
            async with c.stream("POST", "/threads/u2/runs/stream", json=user("hi")) as r:
                run_id = r.headers["x-tether-run-id"]
                async for event in read_sse(r.aiter_lines()):
                    if event.event == "message_delta" and event.data["content"] == "lo":
                        break
            # Leaving the block closed the connection mid-stream.
            final = await finish_of(c, "u2", run_id)
            run = (await c.get(f"/runs/{run_id}")).json()
            thread = (await c.get("/threads/u2")).json()
    assert final.data["status"] == "cancelled"
    assert run["status"] == "cancelled"
    assert run["stop_requested_by"] == "disconnect"
    last = thread["messages"][-1]
    assert (last["role"], last["content"], last["status"]) == ("assistant", "Hello", "stopped")


async def test_rejoin_with_last_event_id_resumes_exactly_after_it(server: Server) -> None:
    body = {**user("hi"), "on_disconnect": "continue"}
    async with httpx.AsyncClient(base_url=server.url, timeout=WATCHDOG) as c:
        await script(c, ["a", "b", "@gate:u3", "c", "d"])
        with anyio.fail_after(WATCHDOG):
            first: list[SSE] = []
            async with c.stream("POST", "/threads/u3/runs/stream", json=body) as r:
                run_id = r.headers["x-tether-run-id"]
                async for event in read_sse(r.aiter_lines()):
                    first.append(event)
                    if event.event == "message_delta" and event.data["content"] == "b":
                        break
            await c.get("/_test/gates/u3/reached")
            assert (await c.get(f"/runs/{run_id}")).json()["status"] == "running"
            last_id = first[-1].id
            assert last_id is not None
            headers = {"Last-Event-ID": last_id}
            async with c.stream("GET", f"/threads/u3/runs/{run_id}/stream", headers=headers) as r:
                assert r.status_code == 200
                await c.post("/_test/gates/u3/release")  # joined: let the run go on
                rest = [e async for e in read_sse(r.aiter_lines())]
    seqs = [int(e.id or -1) for e in first + rest]
    assert seqs == list(range(len(seqs)))  # nothing lost, nothing repeated
    assert rest[0].id == str(int(last_id) + 1)
    assert [e.data["content"] for e in rest if e.event == "message_delta"] == ["c", "d"]
    assert rest[-1].event == "run_finished"
    assert rest[-1].data["status"] == "completed"


async def test_websocket_over_real_uvicorn_streams_and_stops(server: Server) -> None:
    websockets = pytest.importorskip("websockets", reason="uvicorn needs websockets for WS")
    import json

    url = server.url.replace("http://", "ws://") + "/threads/u4/ws"
    async with httpx.AsyncClient(base_url=server.url, timeout=WATCHDOG) as c:
        await script(c, ["Par", "tial", "@gate:u4", " never"])
        with anyio.fail_after(WATCHDOG):
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"type": "message", "content": "hi"}))
                frames = []
                while True:
                    frame = json.loads(await ws.recv())
                    frames.append(frame)
                    if frame["type"] == "message_delta" and frame["content"] == "tial":
                        await c.get("/_test/gates/u4/reached")
                        await ws.send(json.dumps({"type": "stop"}))
                    if frame["type"] == "run_finished":
                        break
            thread = (await c.get("/threads/u4")).json()
    assert frames[-1]["status"] == "cancelled"
    assert any(f["type"] == "stop_result" and f["stopped"] for f in frames)
    last = thread["messages"][-1]
    assert (last["content"], last["status"]) == ("Partial", "stopped")


def test_a_500_ends_its_keep_alive_connection_cleanly(server: Server) -> None:
    """A pooled client's next request after a 500 is answered, not met by a reset socket."""
    with httpx.Client(base_url=server.url, timeout=WATCHDOG) as c:
        for _ in range(3):
            r = c.get("/_test/boom")
            assert r.status_code == 500
            assert r.headers["connection"] == "close"
            assert c.get("/healthz").status_code == 200
