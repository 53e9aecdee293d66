"""A scripted OpenAI-style SSE server for tests: a real HTTP/1.1 server on a loopback port.

It runs on its own event loop in a background thread, so sync and async tests (and tether's sync
API, which runs on another background loop) can all use it:

    with openai_stub(
        sse(text_chunk("Hel"), gate, text_chunk("lo"), finish_chunk("stop")),
        error_response(401, "bad key"),
    ) as stub:
        model = OpenAICompatible(stub.base_url, "stub")

Each request to `/chat/completions` plays the next scripted response. An `SSEResponse` streams
its chunks as `data: {...}` events (then `data: [DONE]`); a `Gate` among them blocks the stream
until the test releases it, while the server watches the connection: if the client closes it, the
server records the disconnect (`stub.disconnected` is set and `stub.disconnects` counts it).
`stub.requests` holds every request's JSON body.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
from anyio.abc import SocketStream

from tether.testing import Gate

__all__ = [
    "ErrorResponse",
    "OpenAIStub",
    "SSEResponse",
    "error_response",
    "finish_chunk",
    "openai_stub",
    "sse",
    "text_chunk",
    "tool_chunk",
    "usage_chunk",
]


@dataclass
class SSEResponse:
    """A 200 streamed response: each item is a chunk dict, a raw SSE line, or a `Gate`."""

    items: list[dict[str, Any] | str | Gate]
    done: bool = True  # end with `data: [DONE]`


@dataclass
class ErrorResponse:
    status: int
    body: str


def sse(*items: dict[str, Any] | str | Gate, done: bool = True) -> SSEResponse:
    return SSEResponse(list(items), done=done)


def error_response(status: int, message: str) -> ErrorResponse:
    return ErrorResponse(status, json.dumps({"error": {"message": message, "type": "test"}}))


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "model": "stub",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def text_chunk(text: str) -> dict[str, Any]:
    return _chunk({"content": text})


def tool_chunk(
    index: int, *, id: str | None = None, name: str | None = None, arguments: str = ""
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    if name is not None:
        call["function"]["name"] = name
    return _chunk({"tool_calls": [call]})


def finish_chunk(reason: str) -> dict[str, Any]:
    return _chunk({}, finish_reason=reason)


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@dataclass
class OpenAIStub:
    """The running server's state, shared with the test."""

    responses: list[SSEResponse | ErrorResponse]
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    # set when a client closed its connection in the middle of a streamed response
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnects: int = 0
    # set when a streamed response was sent to its end
    completed: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def serve(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._connection)

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            buffer = b""
            while True:
                try:
                    head, buffer = await _read_until(stream, buffer, b"\r\n\r\n")
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                    return  # an idle keep-alive connection closed: normal
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buffer) < length:
                    buffer += await stream.receive()
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append(json.loads(body or b"{}"))
                if not await self._respond(stream):
                    return

    async def _respond(self, stream: SocketStream) -> bool:
        """Send the next scripted response; `False` if the client went away."""
        response = self.responses.pop(0) if self.responses else error_response(500, "no script")
        if isinstance(response, ErrorResponse):
            body = response.body.encode()
            await stream.send(
                b"HTTP/1.1 %d Error\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (response.status, len(body), body)
            )
            return True
        try:
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for item in response.items:
                if isinstance(item, Gate):
                    if not await _wait_or_disconnect(stream, item):
                        self._disconnect()
                        return False
                    continue
                line = item if isinstance(item, str) else f"data: {json.dumps(item)}"
                await _send_chunk(stream, f"{line}\n\n".encode())
            if response.done:
                await _send_chunk(stream, b"data: [DONE]\n\n")
            await stream.send(b"0\r\n\r\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            self._disconnect()
            return False
        self.completed.set()
        return True

    def _disconnect(self) -> None:
        self.disconnects += 1
        self.disconnected.set()


async def _read_until(stream: SocketStream, buffer: bytes, marker: bytes) -> tuple[bytes, bytes]:
    while marker not in buffer:
        buffer += await stream.receive()
    head, _, rest = buffer.partition(marker)
    return head, rest


async def _send_chunk(stream: SocketStream, data: bytes) -> None:
    await stream.send(b"%x\r\n%s\r\n" % (len(data), data))


async def _wait_or_disconnect(stream: SocketStream, gate: Gate) -> bool:
    """Block until `gate` is released (`True`) or the client closes the connection (`False`)."""
    released = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            # A client in the middle of a response sends nothing: EOF or an error means it left.
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                await stream.receive()
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await gate.wait()
        released = True
        tg.cancel_scope.cancel()
    return released


@contextmanager
def openai_stub(*responses: SSEResponse | ErrorResponse) -> Iterator[OpenAIStub]:
    """Run a stub server that plays `responses` in order, in a background thread."""
    stub = OpenAIStub(list(responses))
    with anyio.from_thread.start_blocking_portal() as portal:
        future, _ = portal.start_task(stub.serve)
        try:
            yield stub
        finally:
            future.cancel()
