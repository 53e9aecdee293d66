"""`POST /ai-sdk/chat`: the Vercel AI SDK's UI message stream protocol, for `useChat` front ends.

Point the AI SDK's `DefaultChatTransport` (what `useChat` uses) at this endpoint:

    useChat({ transport: new DefaultChatTransport({ api: "http://host/ai-sdk/chat?app=assistant" }) })

Request: the transport's JSON body, `{id, messages, trigger, messageId, ...}`. The chat `id` is the
tether thread id (created on first use, owned by the caller's API key; `X-Tether-Thread-Id`
overrides it). The thread already holds the conversation, so tether appends only the user
messages after the last assistant message of `messages` (and none whose id it already holds); the
text parts of a message are its content. `trigger: "regenerate-message"` is refused (422): send a
new message instead. The served app is `?app=` (or the default app).

Response: server-sent events, `x-vercel-ai-ui-message-stream: v1`, each `data:` one chunk:

- `start` (`messageId` is the run id; `messageMetadata.tether` has `threadId` and `runId`);
- `start-step` / `finish-step` around each node of the run that sends a chunk (a model turn, a
  tool batch);
- `text-start`, `text-delta`, `text-end` for each assistant message (its id is the tether message
  id);
- `tool-input-available` for each tool call of an answer, then `tool-output-available` with its
  result, `tool-output-denied` when a person rejected the call (tool approval), or
  `tool-output-error` when the tool failed or was cancelled by a stop;
- `data-custom` for the run's `custom` events (e.g. MCP progress);
- for a run paused by `interrupt()`: `data-interrupt` with the pending question (`id` is the
  interrupt's id, `data` its payload: `{id, node, value, resumes, run_id, path}`), and, when it waits for
  tool approval (`@tool(requires_approval=True)`), one `tool-approval-request` per pending call
  (`approvalId` is `"<interrupt id>:<tool call id>"`), which turns the call's tool part to
  `state: "approval-requested"`;
- `error` when the run failed;
- for a run stopped while the client still listens (a stop from elsewhere): `abort` with the reason;
- `finish`, always, whose `messageMetadata.tether` carries the run's `status` (`completed`,
  `cancelled`, `failed`, `interrupted`), stop `reason` and pending `interrupt`: the stop is
  marked there;
- then `data: [DONE]`.

Tool approval. The client answers with the AI SDK's own `addToolApprovalResponse({id, approved,
reason})` and sends the chat again (`sendMessage()`, or automatically with
`sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses`). A request that brings
no new user message but tool parts in `state: "approval-responded"` for every call the thread waits
on resumes the run (`Command(resume=...)`): `approved: true` runs the call, `approved: false`
rejects it (with `reason`), which the stream shows as `tool-output-denied`. Answers for only some
of the pending calls, or for an approval that is not pending (any more), are a 422.

Stop. `useChat`'s `stop()` aborts the fetch; the server sees the disconnect and stops the run
(`requested_by="disconnect"`, S8). The run ends `cancelled`, the partial answer is saved on the thread
with `status="stopped"` (tool calls without results get cancelled results), and the thread accepts
the next message at once: the client's next `sendMessage` continues the conversation, and the
model sees the partial answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from ..agent.approval import approval_calls, approval_id
from ..commands import Command
from ..events import (
    CustomEvent,
    Event,
    MessageDeltaEvent,
    MessageEvent,
    NodeFinished,
    NodeStarted,
    RunFinished,
)
from ..messages import Message
from .context import Caller, Ctx
from .errors import ApiError
from .openai_compat import new_messages
from .protocol_runs import pending_interrupt, start_run, thread_messages
from .sse import EventStreamResponse

__all__ = ["UI_MESSAGE_STREAM_HEADERS", "router"]

router = APIRouter(prefix="/ai-sdk", tags=["vercel-ai-sdk"])

UI_MESSAGE_STREAM_HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}


class UIMessage(BaseModel):
    """A message as `useChat` sends it: an id, a role, and parts (only text parts are read)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(default_factory=list)


class ChatRequest(BaseModel):
    """The body the AI SDK's `DefaultChatTransport` posts."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200, description="The chat id: the tether thread id.")
    messages: list[UIMessage] = Field(min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = None  # the AI SDK's field name


def _to_message(ui: UIMessage) -> Message:
    text = "".join(str(part.get("text", "")) for part in ui.parts if part.get("type") == "text")
    return Message(role=ui.role, content=text, id=ui.id)


def _approval_answer(pause: dict[str, Any] | None, message: UIMessage) -> Command | None:
    """`Command(resume=...)` from the tool parts of `message` that answer `pause`'s approvals;
    None when `message` answers no approval (nor is there one to answer)."""
    answered = {
        part.get("toolCallId"): part.get("approval") or {}
        for part in message.parts
        if str(part.get("type", "")).startswith(("tool-", "dynamic-tool"))
        and part.get("state") == "approval-responded"
    }
    if not answered:
        return None
    calls = approval_calls(pause)
    if pause is None or not calls:
        raise ApiError(
            422,
            "the chat answers a tool approval, but the thread waits for none (any more); "
            "send a new user message instead",
        )
    decisions: dict[str, Any] = {}
    missing = []
    for call in calls:
        approval = answered.get(call["id"])
        if not isinstance(approval, dict) or approval.get("id") != approval_id(pause, call["id"]):
            missing.append(call["id"])
        elif approval.get("approved") is True:
            decisions[call["id"]] = "approve"
        else:
            reason = approval.get("reason")
            decisions[call["id"]] = {
                "action": "reject",
                "reason": reason if isinstance(reason, str) else None,
            }
    if missing:
        raise ApiError(
            422,
            f"the thread waits for approval of the tool calls {missing!r} too; answer every "
            "pending call (addToolApprovalResponse) before sending",
        )
    return Command(resume=decisions)


def _chunk(data: dict[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    )


class UIMessageStream:
    """Translates one run's events into UI message stream chunks (one instance per response)."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self._open_text: set[str] = set()  # ids of text parts started and not yet ended
        self._streamed: set[str] = set()  # ids of messages whose text went out as deltas
        self._tool_inputs: set[str] = set()  # ids of tool calls whose input went out
        # The node's step: none (no node runs), pending (a node started, sent nothing yet), or
        # open (`start-step` sent, `finish-step` not yet).
        self._step: Literal["none", "pending", "open"] = "none"

    def start(self) -> bytes:
        return _chunk(
            {
                "type": "start",
                "messageId": self.run_id,
                "messageMetadata": {"tether": {"threadId": self.thread_id, "runId": self.run_id}},
            }
        )

    def translate(self, event: Event) -> Iterable[bytes]:
        if event.path:  # a child run's event (sub-agent, subgraph): not this run's answer
            return
        if isinstance(event, MessageDeltaEvent):
            if event.role == "assistant" and event.content:
                if event.message_id not in self._open_text:
                    yield from self._open_step()
                    self._open_text.add(event.message_id)
                    self._streamed.add(event.message_id)
                    yield _chunk({"type": "text-start", "id": event.message_id})
                yield _chunk({"type": "text-delta", "id": event.message_id, "delta": event.content})
        elif isinstance(event, MessageEvent | CustomEvent):
            chunks = list(
                self._message(event.message)
                if isinstance(event, MessageEvent)
                else [_chunk({"type": "data-custom", "data": event.data})]
            )
            if chunks:
                yield from self._open_step()
            yield from chunks
        elif isinstance(event, NodeStarted):
            if self._step == "none":
                self._step = "pending"
        elif isinstance(event, NodeFinished):
            if self._step == "open":
                yield from self._end_texts()
                yield _chunk({"type": "finish-step"})
            self._step = "none"
        elif isinstance(event, RunFinished):
            yield from self._finish(event)

    def _open_step(self) -> Iterable[bytes]:
        """`start-step` before a node's first chunk. A node that sends nothing opens no step: a
        tools node paused for approval leaves the approval requests in the step of the answer
        that asked for the calls, where the SDK looks for them."""
        if self._step == "pending":
            self._step = "open"
            yield _chunk({"type": "start-step"})

    def _message(self, message: Message) -> Iterable[bytes]:
        if message.role == "assistant":
            if message.id in self._open_text:
                self._open_text.discard(message.id)
                yield _chunk({"type": "text-end", "id": message.id})
            elif message.content and message.id not in self._streamed:
                self._streamed.add(message.id)
                yield _chunk({"type": "text-start", "id": message.id})
                yield _chunk({"type": "text-delta", "id": message.id, "delta": message.content})
                yield _chunk({"type": "text-end", "id": message.id})
            for call in message.tool_calls:
                try:
                    arguments: Any = json.loads(call.arguments or "{}")
                except ValueError:
                    arguments = call.arguments
                yield self._tool_input(call.id, call.name, arguments)
        elif message.role == "tool" and message.tool_call_id is not None:
            if message.metadata.get("rejected"):
                yield _chunk({"type": "tool-output-denied", "toolCallId": message.tool_call_id})
            elif message.status == "complete" and not message.metadata.get("error"):
                yield _chunk(
                    {
                        "type": "tool-output-available",
                        "toolCallId": message.tool_call_id,
                        "output": message.content,
                    }
                )
            else:
                yield _chunk(
                    {
                        "type": "tool-output-error",
                        "toolCallId": message.tool_call_id,
                        "errorText": message.content or message.status,
                    }
                )

    def _tool_input(self, call_id: str, name: str, arguments: Any) -> bytes:
        self._tool_inputs.add(call_id)
        return _chunk(
            {
                "type": "tool-input-available",
                "toolCallId": call_id,
                "toolName": name,
                "input": arguments,
            }
        )

    def _interrupt(self, pause: dict[str, Any]) -> Iterable[bytes]:
        """The pending question, and a tool approval request per call that waits for one."""
        yield _chunk({"type": "data-interrupt", "id": str(pause.get("id")), "data": pause})
        for call in approval_calls(pause):
            if call["id"] not in self._tool_inputs:  # asked in an earlier response
                yield self._tool_input(call["id"], call["name"], call.get("arguments"))
            yield _chunk(
                {
                    "type": "tool-approval-request",
                    "approvalId": approval_id(pause, call["id"]),
                    "toolCallId": call["id"],
                }
            )

    def _end_texts(self) -> Iterable[bytes]:
        for text_id in sorted(self._open_text):
            yield _chunk({"type": "text-end", "id": text_id})
        self._open_text.clear()

    def _finish(self, event: RunFinished) -> Iterable[bytes]:
        yield from self._end_texts()
        if event.status == "failed":
            yield _chunk({"type": "error", "errorText": event.error or "the run failed"})
        elif event.status == "cancelled":
            yield _chunk({"type": "abort", "reason": event.reason or "stopped"})
        elif event.status == "interrupted" and event.interrupt is not None:
            yield from self._interrupt(event.interrupt)
        reason = {"completed": "stop", "failed": "error"}.get(event.status, "other")
        tether = {
            "threadId": self.thread_id,
            "runId": self.run_id,
            "status": event.status,
            "reason": event.reason,
            "interrupt": event.interrupt,
        }
        yield _chunk(
            {"type": "finish", "finishReason": reason, "messageMetadata": {"tether": tether}}
        )


@router.post(
    "/chat",
    summary="Vercel AI SDK UI message stream (useChat)",
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}, "description": "UI message chunks"}},
)
async def chat(
    ctx: Ctx,
    caller: Caller,
    body: ChatRequest,
    app: Annotated[
        str | None, Query(description="The served app; the default app if omitted.")
    ] = None,
    x_tether_thread_id: Annotated[str | None, Header()] = None,
) -> EventStreamResponse:
    """Run the app on the chat's new user message and stream the answer; see the module docstring.

    Aborting the request (`useChat`'s `stop()`) stops the run and keeps the partial answer.
    """
    if body.trigger == "regenerate-message":
        raise ApiError(
            422,
            "trigger 'regenerate-message' is not supported: the thread keeps every answer, "
            "stopped ones included; send a new user message (e.g. 'try again') instead",
        )
    thread_id = x_tether_thread_id or body.id
    held = await thread_messages(ctx, caller, thread_id)
    held_ids = {m.id for m in held}
    incoming = [_to_message(m) for m in body.messages]
    fresh = [
        m
        for m in new_messages(incoming, thread_has_messages=bool(held))
        if m.id not in held_ids and m.role != "assistant"
    ]
    command = None
    if not fresh and body.messages[-1].role == "assistant":
        command = _approval_answer(
            await pending_interrupt(ctx, caller, thread_id), body.messages[-1]
        )
    started = await start_run(
        ctx,
        caller,
        thread_id=thread_id,
        app_name=app,
        messages=fresh,
        source="ai-sdk",
        metadata={"ai_sdk_chat_id": body.id},
        command=command,
    )
    ui = UIMessageStream(started.ref.public_id, started.handle.run_id)
    source = started.source(ui.translate, prologue=ui.start(), epilogue=b"data: [DONE]\n\n")
    return EventStreamResponse(source, headers={**started.headers, **UI_MESSAGE_STREAM_HEADERS})
