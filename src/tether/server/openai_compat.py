"""`POST /v1/chat/completions` and `GET /v1/models`: any OpenAI client can drive any served app.

- `model` picks the app by its served name. When exactly one app is served, any name reaches it
  (clients often hard-code a model name); with several, an unknown name is a 404 `model_not_found`.
- The response `id` is the tether run id; `X-Tether-Run-Id` and `X-Tether-Thread-Id` headers carry
  the ids too, and the body has an extra `tether` object (`thread_id`, `run_id`, `status`).
- Streaming (`"stream": true`) sends `chat.completion.chunk`s of the app's assistant text, then
  `data: [DONE]`. **A client that closes its stream stops the run** (`requested_by="disconnect"`):
  the partial answer is saved on the thread with `status="stopped"`. The same holds for a
  non-streaming request whose connection drops before the answer.
- Conversations. Without a thread id every request runs on a new thread (its id comes back in
  `X-Tether-Thread-Id`, percent-encoded). To continue one, send its id in the `X-Tether-Thread-Id`
  header (percent-encoded, as tether sends it) or in `metadata.thread_id`. The thread already holds the history, so tether **appends only the messages
  after the last assistant message** of the request: a client may send the full history (as OpenAI
  clients do) or only the new user message — both work, nothing is duplicated. On a thread that
  already has messages, `system` messages among those are dropped (the app owns its instructions).
- Sampling fields (`temperature`, `max_tokens`, `tools`, …) are accepted and ignored: the served
  app decides how its model is called. A failed run answers 500 (`run_failed`), or an `error` chunk
  when streaming.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from ..events import Event, MessageDeltaEvent, MessageEvent, RunFinished
from ..handle import RunStream
from ..messages import Message
from .auth import Principal
from .catalog import ThreadRef
from .context import Caller, Ctx, ServerContext, run_headers
from .errors import ERROR_RESPONSES, ApiError, error_responses
from .inputs import JsonObject, check_thread_id, parse_message
from .sse import SSE_SCHEMA, DeferredJSONResponse, EventStreamResponse

__all__ = ["new_messages", "router"]

router = APIRouter(
    prefix="/v1", tags=["openai"], responses={**ERROR_RESPONSES, **error_responses(500)}
)


class ChatCompletionRequest(BaseModel):
    """The fields of an OpenAI chat-completions request that tether uses; others are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The served app's name (see GET /v1/models).")
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: StrictBool = False
    metadata: JsonObject | None = Field(
        default=None, description="`thread_id` here continues a tether thread."
    )


def new_messages(incoming: list[Message], *, thread_has_messages: bool) -> list[Message]:
    """The messages of a request that a thread does not hold yet (see the module docstring)."""
    if not thread_has_messages:
        return incoming
    last = max((i for i, m in enumerate(incoming) if m.role == "assistant"), default=-1)
    return [m for m in incoming[last + 1 :] if m.role != "system"]


def _pick_app(ctx: ServerContext, model: str) -> str:
    names = ctx.catalog.names
    if model in names:
        return model
    if len(names) == 1:
        return names[0]
    raise ApiError(
        404,
        f"there is no model {model!r}; this server serves {sorted(names)!r} (GET /v1/models)",
        type="model_not_found",
    )


async def _thread(
    ctx: ServerContext,
    caller: Principal,
    thread_id: str | None,
    app_name: str,
    title: str | None,
) -> tuple[ThreadRef, bool]:
    """The thread to run on (titled by `title` if it has no title), and whether it holds
    messages already."""
    if thread_id is None:
        ref = await ctx.catalog.create_thread(
            caller, app_name=app_name, metadata={"source": "openai"}, title=title
        )
        return ref, False
    ref = await ctx.catalog.thread_for_run(thread_id, caller, None, title=title)
    state = await ref.app.aget_state(ref.thread_id)
    return ref, bool(state.values.get("messages"))


def _sse(data: dict[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    )


class _ChunkSource:
    """A run's assistant text as OpenAI stream chunks; closing it stops the run (disconnect)."""

    def __init__(self, stream: RunStream, run_id: str, model: str, ref: ThreadRef) -> None:
        self.stream = stream
        self.run_id = run_id
        self.model = model
        self.ref = ref  # the run's thread: its public id goes out, never the stored one
        self.created = int(time.time())
        self._started = False
        self._ended = False
        self._streamed: set[str] = set()  # ids of messages whose text went out as deltas

    async def next_chunk(self) -> bytes | None:
        if self._ended:
            return None
        batch = await self.stream.next_batch()
        out: list[bytes] = []
        if not self._started:
            self._started = True
            out.append(self._delta({"role": "assistant", "content": ""}))
        for event in batch:
            out.extend(self._encode(event))
        if not batch:
            self._ended = True
            out.append(b"data: [DONE]\n\n")
        return b"".join(out)

    def _delta(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return _sse(
            {
                "id": self.run_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
        )

    def _encode(self, event: Event) -> list[bytes]:
        if event.path:  # a child run's event (sub-agent, subgraph): not this run's answer
            return []
        if isinstance(event, MessageDeltaEvent):
            if event.role == "assistant" and event.content:
                self._streamed.add(event.message_id)
                return [self._delta({"content": event.content})]
        elif isinstance(event, MessageEvent):
            msg = event.message
            if msg.role == "assistant" and msg.content and msg.id not in self._streamed:
                self._streamed.add(msg.id)
                return [self._delta({"content": msg.content})]
        elif isinstance(event, RunFinished):
            if event.status == "failed":
                message = self.ref.public_text(event.error or "the run failed")
                return [_sse({"error": {"type": "run_failed", "message": message}})]
            tether = {
                "thread_id": self.ref.public_id,
                "run_id": self.run_id,
                "status": event.status,
                "reason": event.reason,
            }
            return [self._delta({}, "stop", tether=tether)]
        return []

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _collect(stream: RunStream) -> tuple[str, RunFinished]:
    """Read a run to its end; the assistant text it produced, and its terminal event."""
    parts: list[str] = []
    async for event in stream:
        if isinstance(event, MessageEvent) and event.message.role == "assistant" and not event.path:
            if event.message.content:
                parts.append(event.message.content)
        elif isinstance(event, RunFinished):
            return "\n\n".join(parts), event
    raise ApiError(500, "the run ended without a terminal event")  # S1 makes this unreachable


async def _refuse_without_new_message() -> None:
    raise ApiError(
        422,
        "no new message to answer: the request ends with an assistant message; end it with "
        "the user's new message",
    )


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completions",
    response_model=None,
    responses={
        200: {
            "description": "A `chat.completion`, or with `stream: true` its chunks as SSE.",
            "content": {
                "application/json": {},
                "text/event-stream": {"schema": SSE_SCHEMA},
            },
        }
    },
)
async def chat_completions(
    ctx: Ctx,
    caller: Caller,
    body: ChatCompletionRequest,
    x_tether_thread_id: Annotated[str | None, Header()] = None,
) -> EventStreamResponse | DeferredJSONResponse:
    """Run the app named by `model` on the messages; see the module docstring.

    Closing a streamed response (or dropping a non-streamed request) stops the run and saves its
    partial answer as `stopped`.
    """
    app_name = _pick_app(ctx, body.model)
    meta_thread = (body.metadata or {}).get("thread_id")
    if x_tether_thread_id is not None:
        # Percent-decoded: tether's own responses carry the id percent-encoded (HTTP headers
        # are Latin-1), and a client sends back what it got.
        thread_id: str | None = check_thread_id(
            unquote(x_tether_thread_id), where="X-Tether-Thread-Id"
        )
    elif isinstance(meta_thread, str):
        thread_id = check_thread_id(meta_thread, where="metadata.thread_id")
    else:
        thread_id = None
    incoming = [parse_message(m, where=f"messages[{i}]") for i, m in enumerate(body.messages)]
    title = next((m.content for m in incoming if m.role == "user"), None)
    ref, has_messages = await _thread(ctx, caller, thread_id, app_name, title)
    fresh = new_messages(incoming, thread_has_messages=has_messages)
    if not fresh:
        await ctx.catalog.start_run(ref, _refuse_without_new_message())
    stream = ref.app.astream({"messages": fresh}, thread_id=ref.thread_id, on_disconnect="cancel")
    handle = await ctx.catalog.start_run(ref, stream.start())
    headers = run_headers(ref, handle)
    if body.stream:
        source = _ChunkSource(stream, handle.run_id, body.model, ref)
        return EventStreamResponse(source, headers=headers)

    async def answer() -> dict[str, Any]:
        text, final = await _collect(stream)
        if final.status == "failed":
            error = ref.public_text(final.error or "the run failed")
            raise ApiError(500, error, type="run_failed")
        return {
            "id": handle.run_id,
            "object": "chat.completion",
            "created": int(handle.record.created_at),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "tether": {
                "thread_id": ref.public_id,
                "run_id": handle.run_id,
                "status": final.status,
                "reason": final.reason,
            },
        }

    return DeferredJSONResponse(answer, headers=headers)


@router.get("/models", summary="OpenAI-compatible model list: the served apps")
async def list_models(ctx: Ctx, caller: Caller) -> dict[str, Any]:
    """Each served app as a model; its id is the name to pass as `model`."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "tether"}
            for name in ctx.catalog.names
        ],
    }
