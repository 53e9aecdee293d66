"""`OpenAICompatible` against a real loopback SSE server that plays scripted responses."""

from __future__ import annotations

import socket

import anyio
import anyio.to_thread
import httpx
import pytest
from tests._openai_stub import (
    error_response,
    finish_chunk,
    openai_stub,
    sse,
    text_chunk,
    tool_chunk,
    usage_chunk,
)

from tether.messages import Message, ToolCall
from tether.models import (
    Finish,
    ModelDelta,
    ModelError,
    ModelSettings,
    OpenAICompatible,
    TextDelta,
    ToolCallChunk,
    ToolSpec,
    Usage,
)
from tether.testing import Gate

pytestmark = pytest.mark.anyio

WATCHDOG = 10.0


async def _drain(model: OpenAICompatible, messages: list[Message]) -> list[ModelDelta]:
    async with model.stream(messages) as deltas:
        return [delta async for delta in deltas]


async def test_text_usage_and_finish_stream_in_order() -> None:
    with openai_stub(
        sse(text_chunk("Hel"), text_chunk("lo"), finish_chunk("stop"), usage_chunk(7, 2))
    ) as stub:
        model = OpenAICompatible(stub.base_url, "stub", api_key="k")
        with anyio.fail_after(WATCHDOG):
            got = await _drain(model, [Message.user("hi")])
        await model.aclose()
    assert got == [TextDelta("Hel"), TextDelta("lo"), Finish("stop"), Usage(7, 2)]
    assert stub.requests[0]["stream"] is True
    assert stub.requests[0]["model"] == "stub"
    assert stub.requests[0]["messages"] == [{"role": "user", "content": "hi"}]


async def test_stopped_and_cancelled_messages_are_sent_as_plain_messages() -> None:
    call = ToolCall(id="c1", name="search", arguments='{"q": "x"}')
    messages = [
        Message.user("hi"),
        Message.assistant("partial ans", status="stopped"),
        Message.user("go on"),
        Message.assistant("", tool_calls=(call,)),
        Message.tool("Cancelled", tool_call_id="c1", status="cancelled"),
    ]
    spec = ToolSpec("search", "Search the web.", {"type": "object", "properties": {}})
    settings = ModelSettings(temperature=0.0, max_tokens=5, stop=("\n",), seed=1)
    with openai_stub(sse(text_chunk("ok"), finish_chunk("stop"))) as stub:
        model = OpenAICompatible(stub.base_url, "stub")
        with anyio.fail_after(WATCHDOG):
            async with model.stream(messages, tools=[spec], settings=settings) as deltas:
                _ = [d async for d in deltas]
        await model.aclose()
    body = stub.requests[0]
    assert body["messages"][1] == {"role": "assistant", "content": "partial ans"}
    assert body["messages"][4] == {"role": "tool", "content": "Cancelled", "tool_call_id": "c1"}
    assert body["messages"][3]["tool_calls"][0]["function"]["name"] == "search"
    assert body["tools"] == [spec.to_openai()]
    assert (body["temperature"], body["max_tokens"], body["stop"], body["seed"]) == (
        0.0,
        5,
        ["\n"],
        1,
    )


async def test_streamed_tool_call_fragments_assemble_into_tool_calls() -> None:
    chunks = [
        text_chunk("Let me look."),
        tool_chunk(0, id="call_a", name="search", arguments=""),
        tool_chunk(0, arguments='{"q": '),
        tool_chunk(1, id="call_b", name="clock", arguments="{}"),
        tool_chunk(0, arguments='"tea"}'),
        finish_chunk("tool_calls"),
    ]
    with openai_stub(sse(*chunks), sse(*chunks)) as stub:
        model = OpenAICompatible(stub.base_url, "stub")
        with anyio.fail_after(WATCHDOG):
            deltas = await _drain(model, [Message.user("hi")])
            message = await model.complete([Message.user("hi")])
        await model.aclose()
    assert deltas[1:5] == [
        ToolCallChunk(0, "call_a", "search", ""),
        ToolCallChunk(0, None, None, '{"q": '),
        ToolCallChunk(1, "call_b", "clock", "{}"),
        ToolCallChunk(0, None, None, '"tea"}'),
    ]
    assert message.content == "Let me look."
    assert [(c.id, c.name, c.args) for c in message.tool_calls] == [
        ("call_a", "search", {"q": "tea"}),
        ("call_b", "clock", {}),
    ]
    assert message.metadata["finish_reason"] == "tool_calls"


async def test_http_error_raises_model_error_with_status_and_message() -> None:
    with openai_stub(error_response(401, "invalid api key")) as stub:
        model = OpenAICompatible(stub.base_url, "stub")
        with anyio.fail_after(WATCHDOG), pytest.raises(ModelError) as info:
            await _drain(model, [Message.user("hi")])
        await model.aclose()
    assert info.value.status_code == 401
    assert "invalid api key" in str(info.value)
    assert "HTTP 401" in str(info.value)


async def test_error_event_mid_stream_raises_model_error() -> None:
    with openai_stub(sse(text_chunk("a"), {"error": {"message": "overloaded"}})) as stub:
        model = OpenAICompatible(stub.base_url, "stub")
        with anyio.fail_after(WATCHDOG), pytest.raises(ModelError, match="overloaded"):
            await _drain(model, [Message.user("hi")])
        await model.aclose()


async def test_unreachable_server_raises_model_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = OpenAICompatible(f"http://127.0.0.1:{port}/v1", "stub")
    with anyio.fail_after(WATCHDOG), pytest.raises(ModelError, match="could not reach"):
        await _drain(model, [Message.user("hi")])
    await model.aclose()


async def test_cancel_mid_stream_closes_the_connection() -> None:
    gate = Gate("mid-stream")
    with openai_stub(sse(text_chunk("one"), gate, text_chunk("two"), finish_chunk("stop"))) as stub:
        model = OpenAICompatible(stub.base_url, "stub")
        got: list[ModelDelta] = []
        with anyio.fail_after(WATCHDOG):
            with anyio.CancelScope() as scope:
                async with model.stream([Message.user("hi")]) as deltas:
                    async for delta in deltas:
                        got.append(delta)
                        await gate.reached()
                        scope.cancel()
            assert scope.cancelled_caught
            disconnected = await anyio.to_thread.run_sync(stub.disconnected.wait, WATCHDOG)
        await model.aclose()
    assert disconnected, "the server did not see the client disconnect"
    assert got == [TextDelta("one")]
    assert not stub.completed.is_set()
    assert not gate.is_released


async def test_leaving_the_block_early_closes_the_connection_not_the_pool() -> None:
    gate = Gate("mid-stream")
    with openai_stub(
        sse(text_chunk("one"), gate, text_chunk("two")), sse(text_chunk("next"))
    ) as stub:
        client = httpx.AsyncClient()
        model = OpenAICompatible(stub.base_url, "stub", http_client=client)
        with anyio.fail_after(WATCHDOG):
            async with model.stream([Message.user("hi")]) as deltas:
                first = await anext(deltas)
            disconnected = await anyio.to_thread.run_sync(stub.disconnected.wait, WATCHDOG)
            # The client still works: the next request opens a fresh connection.
            again = await _drain(model, [Message.user("hi")])
        await model.aclose()  # a client passed in is not closed by the model
        assert not client.is_closed
        await client.aclose()
    assert first == TextDelta("one")
    assert disconnected
    assert again[0] == TextDelta("next")


async def test_missing_tool_call_index_and_object_arguments_are_tolerated() -> None:
    raw = {
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]},
                "finish_reason": "tool_calls",
            }
        ]
    }
    with openai_stub(sse(": keep-alive comment", raw)) as stub:
        model = OpenAICompatible(stub.base_url, "stub")
        with anyio.fail_after(WATCHDOG):
            got = await _drain(model, [Message.user("hi")])
        await model.aclose()
    assert got == [ToolCallChunk(0, "c", "f", "{}"), Finish("tool_calls")]


def test_bad_base_url_is_a_user_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'localhost:8080'"):
        OpenAICompatible("localhost:8080", "m")
