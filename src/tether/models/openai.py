"""`OpenAICompatible`: any server that speaks OpenAI's streaming `/chat/completions`.

Mechanism. `stream()` posts the request with `"stream": true` through httpx, checks the status, and
yields an iterator that parses the server-sent events (`data: {...}` lines, ended by
`data: [DONE]`) into `ModelDelta`s. The same code serves OpenAI, vLLM, Ollama and llama.cpp's
server; the parser tolerates their differences (missing tool-call `index`, `usage` on its own
chunk or not at all, comment lines, an `error` object mid-stream).

Continuation. What a server does with a conversation that ends with an assistant message differs,
so the constructor's `continuation` says it: `"prefill"` (llama.cpp's `llama-server` continues the
final assistant message), `"continue_final_message"` (vLLM: the same, asked for explicitly with
`continue_final_message: true` and `add_generation_prompt: false`), or `"instruction"` (the
default and the only choice for OpenAI's API, which would start a new answer: a user message asks
the model to carry on).

Stop guarantee. Leaving the `async with` block closes the response in a shielded scope with a short
deadline. httpcore closes the underlying connection (rather than returning it to the keep-alive
pool) when a response body was not read to the end, so the server sees the client disconnect and
stops generating. `tests/models/test_openai_compatible.py` checks this against a real loopback
server.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx

from tether.errors import UserError
from tether.messages import Message
from tether.models.base import (
    CONTINUE_PROMPT,
    Continuation,
    Finish,
    Model,
    ModelDelta,
    ModelError,
    ModelSettings,
    TextDelta,
    ToolCallChunk,
    ToolSpec,
    Usage,
    _check_continuable,
)

__all__ = ["OpenAICompatible"]

# Closing a response is local work (drop a socket); if it ever takes longer than this, give up so a
# stop is never held up by cleanup.
_CLOSE_DEADLINE = 2.0
# How much of an error response's body to read into the `ModelError`.
_ERROR_BODY_LIMIT = 2000


class OpenAICompatible(Model):
    """A chat model behind an OpenAI-compatible HTTP API, streamed with httpx.

    Args:
        base_url: The API root, e.g. `"https://api.openai.com/v1"` or
            `"http://127.0.0.1:8080/v1"`; `/chat/completions` is appended.
        model: The model name the server expects.
        api_key: Sent as a bearer token when given.
        timeout: Seconds to connect, and to wait between two chunks of the stream.
        http_client: An `httpx.AsyncClient` to use; by default the model creates its own and
            closes it in `aclose()`. A client you pass is never closed by the model.
        headers: Extra headers for every request.
        extra_body: Extra JSON fields for every request (e.g. provider-specific options).
        include_usage: Ask for token usage on the stream (`stream_options.include_usage`).
            Servers that do not know the option ignore it.
        continuation: How the server continues a stopped answer: `"prefill"` (llama.cpp's
            `llama-server`), `"continue_final_message"` (vLLM), or `"instruction"` (the
            fallback, e.g. for OpenAI's API); see the module docstring.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        include_usage: bool = True,
        continuation: Continuation = "instruction",
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UserError(
                f"base_url {base_url!r} is not an http(s) URL; pass e.g. 'https://api.openai.com/v1'"
            )
        if not model:
            raise UserError(f"model must name the server's model, not {model!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai-compatible:{model}@{self.base_url}"
        self._api_key = api_key
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._extra_body = dict(extra_body or {})
        self._include_usage = include_usage
        self._client = http_client
        self._owns_client = http_client is None
        if continuation not in ("prefill", "continue_final_message", "instruction"):
            raise UserError(
                f"continuation {continuation!r} is not one of 'prefill' (llama.cpp server), "
                "'continue_final_message' (vLLM) or 'instruction' (any other server)"
            )
        self.continuation = continuation

    def __repr__(self) -> str:
        return f"OpenAICompatible(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def url(self) -> str:
        """The chat-completions endpoint."""
        return f"{self.base_url}/chat/completions"

    def request_body(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
        continue_final: bool = False,
    ) -> dict[str, Any]:
        """The JSON body `stream()` posts; public so tests and benchmarks can replay it.

        With `continue_final`, `messages` ends with the stopped answer to continue, and the body
        is the one `stream_continuation()` posts for this model's `continuation`.
        """
        if continue_final and self.continuation == "instruction":
            _check_continuable(messages)
            messages = [*messages, Message.user(CONTINUE_PROMPT)]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in messages],
            "stream": True,
        }
        if self._include_usage:
            body["stream_options"] = {"include_usage": True}
        if tools:
            body["tools"] = [t.to_openai() for t in tools]
        if settings is not None:
            body.update(settings.to_openai())
            if not tools:
                body.pop("tool_choice", None)  # servers reject a tool choice without tools
        if continue_final and self.continuation == "continue_final_message":
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body.update(self._extra_body)
        return body

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout), headers=self._headers
            )
        return self._client

    def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[ModelDelta]]:
        """Post the request and stream the answer; see `Model.stream`.

        Raises:
            ModelError: The server could not be reached, answered with an HTTP error, or broke
                off the stream.

        Cancellation: exiting the block closes the response (shielded, bounded by a short
        deadline), which closes the connection, so the server stops generating.
        """
        return self._post(self.request_body(messages, tools=tools, settings=settings))

    def stream_continuation(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[ModelDelta]]:
        """Continue the stopped answer that ends `messages`, as this model's `continuation`
        says; see `Model.stream_continuation`.

        Raises:
            UserError: `messages` does not end with an assistant message.
            ModelError: as for `stream`.

        Cancellation: as for `stream`.
        """
        _check_continuable(messages)
        body = self.request_body(messages, tools=tools, settings=settings, continue_final=True)
        return self._post(body)

    @asynccontextmanager
    async def _post(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[ModelDelta]]:
        """Post `body` and stream the answer (the body of `stream` and `stream_continuation`)."""
        headers = dict(self._headers)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        client = self._get_client()
        request = client.build_request(
            "POST",
            self.url,
            json=body,
            headers=headers,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ModelError(f"could not reach {self.url!r}: {exc!r}") from exc
        try:
            if response.status_code >= 400:
                raise await _http_error(response, self.url)
            yield _SSEDeltas(response, self.url)
        finally:
            with anyio.move_on_after(_CLOSE_DEADLINE, shield=True):
                await response.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if the model created it.

        Cancellation: the client is closed in a shielded scope.
        """
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            with anyio.CancelScope(shield=True):
                await client.aclose()


async def _http_error(response: httpx.Response, url: str) -> ModelError:
    body = ""
    try:
        async for chunk in response.aiter_text():
            body += chunk
            if len(body) >= _ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass  # the status code alone still makes a useful error
    body = body[:_ERROR_BODY_LIMIT]
    detail = body
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            detail = str(data["error"].get("message", body))
        elif isinstance(data, dict) and "detail" in data:
            detail = str(data["detail"])
    except ValueError:
        pass  # not JSON: show the text as is
    return ModelError(
        f"{url!r} answered HTTP {response.status_code}: {detail!r}; check the model name, the "
        "API key and the request",
        status_code=response.status_code,
        body=body,
    )


class _SSEDeltas:
    """Parses an OpenAI-style server-sent-events body into `ModelDelta`s, lazily."""

    def __init__(self, response: httpx.Response, url: str) -> None:
        self._lines = response.aiter_lines()
        self._url = url
        # deltas parsed from the current chunk but not handed out yet, in order
        self._pending: deque[ModelDelta] = deque()
        # True once `[DONE]` arrived or the body ended; nothing more is read after that
        self._done = False

    def __aiter__(self) -> _SSEDeltas:
        return self

    async def __anext__(self) -> ModelDelta:
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            await self._read_event()
        return self._pending.popleft()

    async def _read_event(self) -> None:
        try:
            line = await self._lines.__anext__()
        except StopAsyncIteration:
            self._done = True
            return
        except httpx.HTTPError as exc:
            raise ModelError(f"the stream from {self._url!r} broke off: {exc!r}") from exc
        line = line.strip()
        if not line.startswith("data:"):
            return  # blank separators, `: comments`, `event:` and `id:` lines
        data = line[5:].strip()
        if data == "[DONE]":
            self._done = True
            return
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise ModelError(
                f"{self._url!r} sent a stream line that is not JSON: {data!r}"
            ) from exc
        if not isinstance(chunk, dict):
            raise ModelError(f"{self._url!r} sent a stream chunk that is not an object: {data!r}")
        self._parse_chunk(chunk)

    def _parse_chunk(self, chunk: dict[str, Any]) -> None:
        error = chunk.get("error")
        if error is not None:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ModelError(f"{self._url!r} reported an error mid-stream: {message!r}")
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # tether asks for one choice
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self._pending.append(TextDelta(content))
            for position, call in enumerate(delta.get("tool_calls") or ()):
                fn = call.get("function") or {}
                index = call.get("index")
                self._pending.append(
                    ToolCallChunk(
                        index=index if isinstance(index, int) else position,
                        id=call.get("id") or None,
                        name=fn.get("name") or None,
                        arguments=_arguments_text(fn.get("arguments")),
                    )
                )
            reason = choice.get("finish_reason")
            if reason:
                self._pending.append(Finish(str(reason)))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._pending.append(
                Usage(
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                )
            )


def _arguments_text(arguments: Any) -> str:
    # Some servers (Ollama's older API) send the arguments as an object, not JSON text.
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments)
