"""`POST /ag-ui`: an AG-UI agent endpoint, for CopilotKit and other AG-UI clients.

Point an AG-UI `HttpAgent` at it (`new HttpAgent({url: "http://host/ag-ui?app=assistant"})`).

Request: AG-UI's `RunAgentInput` (`threadId`, `runId`, `messages`, …). `threadId` is the tether
thread id (created on first use, owned by the caller's API key). The thread already holds the
conversation, so tether appends only the input's `user` messages whose ids it does not hold; the
other roles are the thread's own messages, echoed back by the client. The client's `runId` is
kept in the run's metadata as `ag_ui_run_id`; tether gives the run its own id, which RUN_STARTED
and RUN_FINISHED carry. `state`, `tools` (client-side tools), `context` and `forwardedProps` are
accepted and ignored: the served app decides its own tools and state.

Response: server-sent events, one AG-UI event (`ag-ui-protocol`'s types) per `data:` line:

- `RUN_STARTED` (`threadId`, tether's `runId`);
- `STEP_STARTED` / `STEP_FINISHED` for each node of the run;
- `TEXT_MESSAGE_START`, `TEXT_MESSAGE_CONTENT`, `TEXT_MESSAGE_END` for each assistant message
  (`messageId` is the tether message id);
- `TOOL_CALL_START`, `TOOL_CALL_ARGS`, `TOOL_CALL_END` for each tool call of an answer
  (`parentMessageId` is that answer), and `TOOL_CALL_RESULT` with each result (a synthetic
  cancelled result too, when a stop cut the tool short);
- `CUSTOM` (`name: "tether.custom"`) for the run's `custom` events;
- the end, always exactly one: `RUN_FINISHED` for a completed, stopped or interrupted run
  (`result: {status, reason}`; a stopped run has `outcome: {type: "cancelled"}`, a run paused by
  `interrupt()` `outcome: {type: "interrupt", interrupts: [...]}`, see below), or `RUN_ERROR`
  (`code: "run_failed"`) for a failed one. Open messages and steps are closed before it, so the
  stream is never left truncated while the client listens.

Interrupts (AG-UI's own interrupt protocol). A run paused for tool approval
(`@tool(requires_approval=True)`) ends with one AG-UI interrupt per pending call:
`{id: "<interrupt id>:<tool call id>", reason: "tool_approval", toolCallId, message,
responseSchema, metadata: {tether: {name, arguments, path}}}`; any other `interrupt(value)` with one
interrupt `{id: <interrupt id>, reason: "interrupt", message (when value is a string),
metadata: {tether: {value, node, path}}}` (`path` names the child run that asked, if one did). The
client answers with the next run's `resume` entries
(`HttpAgent.runAgent({resume})`), one per interrupt, and tether resumes the thread with
`Command(resume=...)`:

- tool approval: `status: "resolved"` with `payload` `{approved: true}` (or `true`) runs the call,
  `{approved: true, editedArgs: {...}}` runs it with those arguments, `{approved: false, reason}`
  (or `false`) rejects it, and `status: "cancelled"` rejects it too;
- any other interrupt: `status: "resolved"` with `payload` is the answer `interrupt()` returns.

A `resume` that leaves a pending interrupt unanswered, answers one the thread does not wait on, or
cancels a plain `interrupt()` (stop the thread instead: `POST /threads/{id}/stop`) is a 422.

Stop. `HttpAgent.abortRun()` aborts the fetch; the server sees the disconnect and stops the run
(`requested_by="disconnect"`, S8). The run ends `cancelled`, the partial answer is saved on the
thread with `status="stopped"`, and the thread accepts the next run at once. A stop from
elsewhere (the REST cancel endpoint, another tab) while the client listens ends its stream with
`TEXT_MESSAGE_END` and `RUN_FINISHED` (`outcome: cancelled`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any

from ag_ui.core import (
    BaseEvent,
    ResumeEntry,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.core import (
    CustomEvent as AGUICustomEvent,
)
from ag_ui.core import (
    Interrupt as AGUIInterrupt,
)
from fastapi import APIRouter, Body, Query

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
from .protocol_runs import pending_interrupt, start_run, thread_messages
from .sse import EventStreamResponse

__all__ = ["AGUIStream", "agui_interrupts", "resume_command", "router"]

router = APIRouter(tags=["ag-ui"])

CUSTOM_EVENT_NAME = "tether.custom"


def _encode(event: BaseEvent) -> bytes:
    return b"data: " + event.model_dump_json(by_alias=True, exclude_none=True).encode() + b"\n\n"


def _user_text(content: Any) -> str:
    """The text of a user message's content: a string, or the text of its parts that have one
    (other parts, and a non-string `text` an extra field may carry, add nothing)."""
    if isinstance(content, str):
        return content
    texts = (getattr(part, "text", None) for part in content or ())
    return "".join(text for text in texts if isinstance(text, str))


class AGUIStream:
    """Translates one run's events into AG-UI events (one instance per response)."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self._open_text: set[str] = set()  # TEXT_MESSAGE_START sent, TEXT_MESSAGE_END not yet
        self._streamed: set[str] = set()  # messages whose text went out as deltas
        self._open_steps: list[str] = []  # STEP_STARTED sent, STEP_FINISHED not yet

    def start(self) -> bytes:
        return _encode(RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id))

    def translate(self, event: Event) -> Iterable[bytes]:
        if event.path:  # a child run's event (sub-agent, subgraph): not this run's answer
            return
        if isinstance(event, MessageDeltaEvent):
            if event.role == "assistant" and event.content:
                if event.message_id not in self._open_text:
                    self._open_text.add(event.message_id)
                    self._streamed.add(event.message_id)
                    yield _encode(
                        TextMessageStartEvent(message_id=event.message_id, role="assistant")
                    )
                yield _encode(
                    TextMessageContentEvent(message_id=event.message_id, delta=event.content)
                )
        elif isinstance(event, MessageEvent):
            yield from self._message(event.message)
        elif isinstance(event, NodeStarted) and event.node:
            self._open_steps.append(event.node)
            yield _encode(StepStartedEvent(step_name=event.node))
        elif isinstance(event, NodeFinished) and event.node in self._open_steps:
            self._open_steps.remove(event.node)
            yield from self._end_texts()
            yield _encode(StepFinishedEvent(step_name=event.node))
        elif isinstance(event, CustomEvent):
            yield _encode(AGUICustomEvent(name=CUSTOM_EVENT_NAME, value=event.data))
        elif isinstance(event, RunFinished):
            yield from self._finish(event)

    def _message(self, message: Message) -> Iterable[bytes]:
        if message.role == "assistant":
            if message.id in self._open_text:
                self._open_text.discard(message.id)
                yield _encode(TextMessageEndEvent(message_id=message.id))
            elif message.content and message.id not in self._streamed:
                self._streamed.add(message.id)
                yield _encode(TextMessageStartEvent(message_id=message.id, role="assistant"))
                yield _encode(TextMessageContentEvent(message_id=message.id, delta=message.content))
                yield _encode(TextMessageEndEvent(message_id=message.id))
            for call in message.tool_calls:
                yield _encode(
                    ToolCallStartEvent(
                        tool_call_id=call.id, tool_call_name=call.name, parent_message_id=message.id
                    )
                )
                if call.arguments:
                    yield _encode(ToolCallArgsEvent(tool_call_id=call.id, delta=call.arguments))
                yield _encode(ToolCallEndEvent(tool_call_id=call.id))
        elif message.role == "tool" and message.tool_call_id is not None:
            yield _encode(
                ToolCallResultEvent(
                    message_id=message.id,
                    tool_call_id=message.tool_call_id,
                    content=message.content,
                    role="tool",
                )
            )

    def _end_texts(self) -> Iterable[bytes]:
        for message_id in sorted(self._open_text):
            yield _encode(TextMessageEndEvent(message_id=message_id))
        self._open_text.clear()

    def _finish(self, event: RunFinished) -> Iterable[bytes]:
        yield from self._end_texts()
        for step in reversed(self._open_steps):
            yield _encode(StepFinishedEvent(step_name=step))
        self._open_steps.clear()
        if event.status == "failed":
            yield _encode(RunErrorEvent(message=event.error or "the run failed", code="run_failed"))
            return
        outcome: RunFinishedCancelledOutcome | RunFinishedInterruptOutcome | None = None
        if event.status == "cancelled":
            outcome = RunFinishedCancelledOutcome()
        elif event.status == "interrupted" and event.interrupt is not None:
            outcome = RunFinishedInterruptOutcome(interrupts=agui_interrupts(event.interrupt))
        yield _encode(
            RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                result={"status": event.status, "reason": event.reason},
                outcome=outcome,
            )
        )


APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "reason": {"type": "string"},
        "editedArgs": {"type": "object"},
    },
    "required": ["approved"],
}
"""The `responseSchema` of a tool approval interrupt: the `payload` its resume entry carries."""


def agui_interrupts(pause: dict[str, Any]) -> list[AGUIInterrupt]:
    """A tether pause (`interrupt()`'s JSON payload) as AG-UI interrupts; see the docstring."""
    calls = approval_calls(pause)
    if calls:
        return [
            AGUIInterrupt(
                id=approval_id(pause, call["id"]),
                reason="tool_approval",
                tool_call_id=call["id"],
                message=f"Allow the call {call.get('name')}({json.dumps(call.get('arguments'))})?",
                response_schema=APPROVAL_SCHEMA,
                metadata={
                    "tether": {
                        "name": call.get("name"),
                        "arguments": call.get("arguments"),
                        "path": pause.get("path"),
                    }
                },
            )
            for call in calls
        ]
    value = pause.get("value")
    return [
        AGUIInterrupt(
            id=str(pause.get("id")),
            reason="interrupt",
            message=value if isinstance(value, str) else None,
            metadata={
                "tether": {"value": value, "node": pause.get("node"), "path": pause.get("path")}
            },
        )
    ]


def resume_command(pause: dict[str, Any] | None, entries: list[ResumeEntry]) -> Command:
    """`Command(resume=...)` from AG-UI resume entries that answer `pause`; see the docstring.

    Raises:
        ApiError: 422 when the entries do not answer exactly what the thread waits on.
    """
    if pause is None:
        raise ApiError(
            422, "the run input has resume entries, but the thread waits for no answer (any more)"
        )
    by_id = {entry.interrupt_id: entry for entry in entries}
    wanted = {i.id for i in agui_interrupts(pause)}
    if set(by_id) != wanted:
        raise ApiError(
            422,
            f"the resume entries answer {sorted(by_id)!r}, but the thread waits on the "
            f"interrupts {sorted(wanted)!r}; answer each of these once",
        )
    calls = approval_calls(pause)
    if not calls:
        entry = by_id[str(pause.get("id"))]
        if entry.status == "cancelled":
            raise ApiError(
                422,
                "an interrupt() cannot be cancelled by a resume entry; stop the thread instead "
                "(POST /threads/{id}/stop), which cancels the pause",
            )
        return Command(resume=entry.payload)
    return Command(
        resume={call["id"]: _decision(by_id[approval_id(pause, call["id"])]) for call in calls}
    )


def _decision(entry: ResumeEntry) -> Any:
    """A tool approval decision (`tether.agent.approval`) from one resume entry."""
    if entry.status == "cancelled":
        return {"action": "reject", "reason": "cancelled"}
    payload = entry.payload
    if isinstance(payload, bool):
        return "approve" if payload else "reject"
    if not isinstance(payload, dict) or not isinstance(payload.get("approved"), bool):
        raise ApiError(
            422,
            f"a tool approval's resume payload must be {{'approved': true|false, 'reason'?, "
            f"'editedArgs'?}}, not {payload!r}",
        )
    if not payload["approved"]:
        reason = payload.get("reason")
        return {"action": "reject", "reason": reason if isinstance(reason, str) else None}
    edited = payload.get("editedArgs")
    if edited is not None:
        return {"action": "edit", "arguments": edited}
    return "approve"


@router.post(
    "/ag-ui",
    summary="AG-UI agent endpoint (HttpAgent)",
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}, "description": "AG-UI events"}},
)
async def run_agent(
    ctx: Ctx,
    caller: Caller,
    body: Annotated[RunAgentInput, Body()],
    app: Annotated[
        str | None, Query(description="The served app; the default app if omitted.")
    ] = None,
) -> EventStreamResponse:
    """Run the app on the input's new user messages and stream AG-UI events; see the module
    docstring. Aborting the request (`abortRun()`) stops the run and keeps the partial answer.
    """
    held_ids = {m.id for m in await thread_messages(ctx, caller, body.thread_id)}
    fresh = [
        Message(role="user", content=_user_text(m.content), id=m.id)
        for m in body.messages
        if m.role == "user" and m.id not in held_ids
    ]
    command = None
    if body.resume:
        if fresh:
            raise ApiError(
                422,
                "a run input cannot both answer interrupts (resume) and add a user message; "
                "answer first, then send the message",
            )
        command = resume_command(
            await pending_interrupt(ctx, caller, body.thread_id), list(body.resume)
        )
    started = await start_run(
        ctx,
        caller,
        thread_id=body.thread_id,
        app_name=app,
        messages=fresh,
        source="ag-ui",
        metadata={"ag_ui_run_id": body.run_id},
        command=command,
    )
    stream = AGUIStream(started.ref.public_id, started.handle.run_id)
    source = started.source(stream.translate, prologue=stream.start())
    return EventStreamResponse(source, headers=started.headers)
