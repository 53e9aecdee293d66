"""The official `openai` package as a client of `/v1/chat/completions` on a real uvicorn server."""

from __future__ import annotations

import anyio
import httpx
import openai
import pytest

from ._client import Server, read_sse

pytestmark = pytest.mark.anyio

WATCHDOG = 30


async def run_end(c: httpx.AsyncClient, thread_id: str, run_id: str) -> str:
    async with c.stream("GET", f"/threads/{thread_id}/runs/{run_id}/stream") as r:
        events = [e async for e in read_sse(r.aiter_lines())]
    assert events[-1].event == "run_finished"
    return str(events[-1].data["status"])


async def test_closing_the_openai_stream_cancels_the_run_and_saves_the_partial(
    server: Server,
) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    async with client, httpx.AsyncClient(base_url=server.url, timeout=WATCHDOG) as c:
        await c.post("/_test/script", json={"turns": [["Hel", "lo", "@gate:o1", " world"]]})
        with anyio.fail_after(WATCHDOG):
            stream = await client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            thread_id = stream.response.headers["x-tether-thread-id"]
            text = ""
            async for chunk in stream:
                run_id = chunk.id
                text += chunk.choices[0].delta.content or ""
                if text == "Hello":
                    break
            await stream.close()
            status = await run_end(c, thread_id, run_id)
            run = (await c.get(f"/runs/{run_id}")).json()
            thread = (await c.get(f"/threads/{thread_id}")).json()
        assert status == "cancelled"
        assert run["stop_requested_by"] == "disconnect"
        last = thread["messages"][-1]
        assert (last["role"], last["content"], last["status"]) == ("assistant", "Hello", "stopped")

        # Continue the same conversation, sending the full history as OpenAI clients do: the
        # thread appends only the new user message, and the model sees the partial answer once.
        with anyio.fail_after(WATCHDOG):
            reply = await client.chat.completions.create(
                model="chat",
                messages=[
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "go on"},
                ],
                extra_headers={"X-Tether-Thread-Id": thread_id},
            )
            calls = (await c.get("/_test/calls")).json()
    assert reply.choices[0].message.content == (
        "You said: go on. Before that I said: Hello (stopped)."
    )
    assert calls[-1] == [
        {"role": "user", "content": "hi", "status": "complete"},
        {"role": "assistant", "content": "Hello", "status": "stopped"},
        {"role": "user", "content": "go on", "status": "complete"},
    ]


async def test_openai_stream_runs_to_completion(server: Server) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    async with client:
        with anyio.fail_after(WATCHDOG):
            models = await client.models.list()
            stream = await client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": "ping"}],
                stream=True,
                metadata={"thread_id": "oa-meta"},
            )
            chunks = [chunk async for chunk in stream]
    assert [m.id for m in models.data] == ["chat"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "You said: ping."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1
