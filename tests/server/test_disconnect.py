"""Client disconnect, driven at the ASGI level with fake `receive`/`send` (as starlette tests do).

httpx's ASGI transport buffers responses and never disconnects, so these tests play the ASGI
server themselves: they feed the request body, watch the response bytes, and deliver
`http.disconnect` at a chosen moment.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectSendStream

from tether.server import create_app
from tether.testing import Gate, ScriptedModel

from ._chat import chat_app

pytestmark = pytest.mark.anyio

WATCHDOG = 10


class FakeClient:
    """One HTTP request played against an ASGI app, with a disconnect button."""

    def __init__(self, api: Any, method: str, path: str, body: dict[str, Any] | None) -> None:
        self.api = api
        raw = json.dumps(body).encode() if body is not None else b""
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"tether"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("tether", 80),
            "state": {},
        }
        self.raw = raw
        self.sent: list[dict[str, Any]] = []
        self.body = b""
        self._inbox: MemoryObjectSendStream[dict[str, Any]] | None = None
        self.done = anyio.Event()
        self._changed = anyio.Event()

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    async def wait_for(self, predicate: Callable[[bytes], bool]) -> None:
        while not predicate(self.body):
            self._changed = anyio.Event()
            await self._changed.wait()

    def disconnect(self) -> None:
        assert self._inbox is not None
        self._inbox.send_nowait({"type": "http.disconnect"})

    async def run(self) -> None:
        inbox, outbox = anyio.create_memory_object_stream[dict[str, Any]](10)
        self._inbox = inbox
        inbox.send_nowait({"type": "http.request", "body": self.raw, "more_body": False})

        async def receive() -> dict[str, Any]:
            return await outbox.receive()

        async def send(message: dict[str, Any]) -> None:
            self.sent.append(message)
            if message["type"] == "http.response.body":
                self.body += message.get("body", b"")
            self._changed.set()

        try:
            with inbox, outbox:
                await self.api(self.scope, receive, send)
        finally:
            self.done.set()
            self._changed.set()


async def _stream_then_disconnect(
    on_disconnect: str, after: Callable[[Any, Gate], Awaitable[None]]
) -> tuple[Any, str, FakeClient]:
    gate = Gate()
    app = chat_app(ScriptedModel(["Hel", "lo", gate, " world"]))
    api = create_app(app)
    body = {
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "on_disconnect": on_disconnect,
    }
    client = FakeClient(api, "POST", "/threads/t1/runs/stream", body)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.run)
        await gate.reached()
        await client.wait_for(lambda b: b'"content":"lo"' in b)
        client.disconnect()
        await client.done.wait()  # the response ends as soon as the client is gone
        run_id = client.headers["x-tether-run-id"]
        await after(app, gate)
    return app, run_id, client


async def test_sse_client_disconnect_cancels_the_run_and_keeps_the_partial() -> None:
    async def nothing(app: Any, gate: Gate) -> None:
        return None

    with anyio.fail_after(WATCHDOG):
        app, run_id, client = await _stream_then_disconnect("cancel", nothing)
        handle = app.registry.local(run_id)
        if handle is not None:
            await handle.wait()
        record = await app.aget_run(run_id)
        state = await app.aget_state("t1")
    assert b"run_finished" not in client.body  # the client was gone before the end
    assert record.status == "cancelled"
    assert record.stop_requested_by == "disconnect"
    last = state.values["messages"][-1]
    assert (last.role, last.content, last.status) == ("assistant", "Hello", "stopped")
    assert app.registry.size() == 0


async def test_sse_client_disconnect_with_continue_lets_the_run_finish() -> None:
    async def release(app: Any, gate: Gate) -> None:
        gate.release()

    with anyio.fail_after(WATCHDOG):
        app, run_id, _ = await _stream_then_disconnect("continue", release)
        handle = app.registry.local(run_id)
        if handle is not None:
            await handle.wait()
        record = await app.aget_run(run_id)
        state = await app.aget_state("t1")
    assert record.status == "completed"
    assert record.stop_requested_at is None
    assert state.values["messages"][-1].content == "Hello world"


async def test_wait_client_disconnect_cancels_the_run() -> None:
    gate = Gate()
    app = chat_app(ScriptedModel(["Hel", gate, "lo"]))
    api = create_app(app)
    body = {"input": {"messages": [{"role": "user", "content": "hi"}]}}
    client = FakeClient(api, "POST", "/threads/t1/runs/wait", body)
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.run)
            await gate.reached()
            client.disconnect()
            await client.done.wait()
        (record,) = await app.alist_runs("t1")
        handle = app.registry.local(record.run_id)
        if handle is not None:
            await handle.wait()
        record = await app.aget_run(record.run_id)
    assert client.sent == []  # nothing was sent to a client that left
    assert record.status == "cancelled"
    assert record.stop_requested_by == "disconnect"


async def test_rejoining_client_that_leaves_never_stops_the_run() -> None:
    gate = Gate()
    app = chat_app(ScriptedModel(["Hel", gate, "lo"]))
    api = create_app(app)
    with anyio.fail_after(WATCHDOG):
        handle = await app.astart({"messages": [{"role": "user", "content": "hi"}]}, thread_id="t1")
        await gate.reached()
        client = FakeClient(api, "GET", f"/threads/t1/runs/{handle.run_id}/stream", None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.run)
            await client.wait_for(lambda b: b'"content":"Hel"' in b)
            client.disconnect()
            await client.done.wait()
        assert not handle.done
        gate.release()
        await handle.wait()
    assert handle.status == "completed"


async def test_idle_stream_sends_pings_and_closes_its_source_on_disconnect() -> None:
    from tether.server.sse import EventStreamResponse

    class Silent:
        """A source with nothing to say until the client leaves."""

        def __init__(self) -> None:
            self.closed = False

        async def next_chunk(self) -> bytes | None:
            await anyio.sleep_forever()
            return None

        async def aclose(self) -> None:
            self.closed = True

    source = Silent()

    async def api(scope: Any, receive: Any, send: Any) -> None:
        await EventStreamResponse(source, ping_interval=0.001)(scope, receive, send)

    client = FakeClient(api, "GET", "/", None)
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.run)
            await client.wait_for(lambda b: b.count(b": ping\n\n") >= 2)
            client.disconnect()
            await client.done.wait()
    assert source.closed
    assert client.headers["content-type"].startswith("text/event-stream")
