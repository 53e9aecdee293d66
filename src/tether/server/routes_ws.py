"""`WS /threads/{thread_id}/ws`: chat over one WebSocket — send messages and stops, get events.

Client → server, one JSON object per text frame:

    {"type": "message", "content": "Hi"}            # or "messages": [{"role": "user", ...}]
        optional: "multitask_strategy" (default "reject"), "app"
    {"type": "stop", "mode": "now"}                 # or "after_step" / "rollback"
    {"type": "resume"}                              # continue the stopped answer
    {"type": "join", "run_id": "...", "after_seq": 7}

Server → client: every run event as JSON (the same objects as the SSE `data:`), and

    {"type": "stop_result", "stopped": true, "run_id": "..."}   # the run that accepted the stop
    {"type": "error", "error": {"type": "thread_busy", "message": "...", ...}}

Every frame is validated with the same models as REST (`ClientFrame`; a `message` frame's
`messages` are parsed like a run's `input.messages`). Errors (a busy thread, a bad frame, a frame
that is not JSON, a binary frame, JSON nested deeper than the REST limit, another key's thread)
are reported as `error` frames with the status REST would answer; the socket stays open. A text
frame larger than the server's body limit closes the socket with 1009.

The handshake is refused (close code 1008, the reason in the close frame) for a missing or
unknown API key and a bad `on_disconnect`. It is accepted for any valid thread id: the id is the
caller's own (with auth on each key has its own thread ids, see `auth.py`), so another key's
thread of the same id is never reached, and events carry the caller's id.

A `join` or `stop` reaches the run wherever it executes (with a Redis registry, also a run of another
server process): a joined run's events arrive live, in order and without gaps, up to its one
`run_finished`, and `stop_result.run_id` names the run that accepted the stop (null when none did).

When the socket closes, runs it started are stopped (`requested_by="disconnect"`), unless it was
opened with `?on_disconnect=continue`; runs it merely joined are never stopped. Authenticate with
the usual headers or `?api_key=` (browsers cannot set WebSocket headers).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import anyio
from anyio.abc import TaskGroup
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ..errors import NotFoundError, ThreadBusyError, UserError
from ..events import event_to_json
from ..handle import RunStream
from ..run import OnDisconnect
from .auth import Principal, principal_of
from .catalog import ThreadRef
from .context import ServerContext, server_context
from .errors import ApiError, error_body
from .inputs import check_json, check_thread_id
from .schemas import RunCreate, Strategy, first_user_text, run_input
from .sse import flush_now

__all__ = ["router"]

router = APIRouter(tags=["websocket"])
StopMode = Literal["now", "after_step", "rollback"]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MessageFrame(_Frame):
    """Send a message (`content`) or messages (`messages`) and start a run."""

    type: Literal["message"]
    content: str | None = Field(default=None, min_length=1)
    messages: list[Any] | None = None
    multitask_strategy: Strategy = "reject"
    app: str | None = None

    @model_validator(mode="after")
    def _has_input(self) -> MessageFrame:
        if (self.content is None) == (self.messages is None):
            raise ValueError("a 'message' frame needs 'content' (text) or 'messages', not both")
        return self


class ResumeFrame(_Frame):
    """Continue the stopped answer."""

    type: Literal["resume"]
    multitask_strategy: Strategy = "reject"
    app: str | None = None


class StopFrame(_Frame):
    """Stop the thread's active run."""

    type: Literal["stop"]
    mode: StopMode = "now"
    reason: str | None = Field(default=None, max_length=500)


class JoinFrame(_Frame):
    """Follow a run's events after `after_seq`."""

    type: Literal["join"]
    run_id: str = Field(min_length=1, max_length=200)
    after_seq: int = Field(default=-1, ge=-1)


ClientFrame = Annotated[
    MessageFrame | ResumeFrame | StopFrame | JoinFrame, Field(discriminator="type")
]
_FRAME: TypeAdapter[MessageFrame | ResumeFrame | StopFrame | JoinFrame] = TypeAdapter(ClientFrame)


def parse_frame(text: str) -> MessageFrame | ResumeFrame | StopFrame | JoinFrame:
    """A client frame from its text; a 422 `ApiError` naming the field when it is not one."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ApiError(422, "the frame is not valid JSON; send one JSON object") from None
    if not isinstance(data, dict) or "type" not in data:
        raise ApiError(
            422,
            "each frame must be a JSON object with a 'type': 'message', 'stop', 'resume' or 'join'",
        )
    try:
        check_json(data, where="the frame")
        return _FRAME.validate_python(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "the frame"
        raise ApiError(422, f"invalid frame: {where}: {err.get('msg', 'invalid')}"[:300]) from None
    except ValueError as exc:
        raise ApiError(422, f"invalid frame: {exc}"[:300]) from None


class _Session:
    """One socket's conversation: sends are serialized, and every stream it reads is tracked."""

    def __init__(
        self,
        ws: WebSocket,
        ctx: ServerContext,
        caller: Principal,
        thread_id: str,
        on_disconnect: OnDisconnect,
    ) -> None:
        self.ws = ws
        self.ctx = ctx
        self.caller = caller
        self.thread_id = thread_id
        self.on_disconnect: OnDisconnect = on_disconnect
        self.lock = anyio.Lock()  # one frame at a time on the socket
        self.streams: set[RunStream] = set()  # open streams; closed (per on_disconnect) at the end

    async def send(self, data: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    async def send_error(self, status: int, message: str, **extra: Any) -> None:
        await self.send({"type": "error", **error_body(status, message, **extra)})

    async def pump(self, ref: ThreadRef, stream: RunStream) -> None:
        """Forward a stream's events (with the caller's thread id) until its `run_finished`."""
        try:
            while batch := await stream.next_batch():
                for event in batch:
                    await self.send(event_to_json(ref.public_event(event)))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the socket is gone; the receive loop sees the disconnect and cleans up
        finally:
            self.streams.discard(stream)
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def handle(
        self, tg: TaskGroup, frame: MessageFrame | ResumeFrame | StopFrame | JoinFrame
    ) -> None:
        if isinstance(frame, StopFrame):
            await self.stop(frame)
        elif isinstance(frame, JoinFrame):
            await self.join(tg, frame)
        else:
            await self.start(tg, frame)

    async def start(self, tg: TaskGroup, frame: MessageFrame | ResumeFrame) -> None:
        if isinstance(frame, ResumeFrame):
            body = RunCreate(
                resume=True, app=frame.app, multitask_strategy=frame.multitask_strategy
            )
        else:
            messages = frame.messages
            if messages is None:
                messages = [{"role": "user", "content": frame.content}]
            body = RunCreate(
                input={"messages": messages},
                app=frame.app,
                multitask_strategy=frame.multitask_strategy,
            )
        value = run_input(body)
        ref = await self.ctx.catalog.thread_for_run(
            self.thread_id, self.caller, body.app, title=first_user_text(value)
        )
        stream = ref.app.astream(
            value,
            thread_id=ref.thread_id,
            multitask_strategy=body.multitask_strategy,
            on_disconnect=self.on_disconnect,
        )
        await self.ctx.catalog.start_run(ref, stream.start())
        self.streams.add(stream)
        tg.start_soon(self.pump, ref, stream)

    async def stop(self, frame: StopFrame) -> None:
        ref = await self.ctx.catalog.thread(self.thread_id, self.caller)
        # The registry says which run accepted the stop, wherever it executes.
        result = await ref.app.arequest_stop(
            thread_id=ref.thread_id,
            mode=frame.mode,
            reason=frame.reason,
            requested_by="user",
            wait=False,
        )
        if result.handle is not None:
            flush_now(result.handle)  # the run's SSE streams here write its end without delay
        await self.send(
            {"type": "stop_result", "stopped": result.accepted, "run_id": result.run_id}
        )

    async def join(self, tg: TaskGroup, frame: JoinFrame) -> None:
        ref = await self.ctx.catalog.thread(self.thread_id, self.caller)
        await self.ctx.catalog.run_on(ref, frame.run_id)
        stream = await ref.app.ajoin(frame.run_id, after_seq=frame.after_seq)
        self.streams.add(stream)
        tg.start_soon(self.pump, ref, stream)


@router.websocket("/threads/{thread_id}/ws")
async def thread_socket(ws: WebSocket, thread_id: str, on_disconnect: str = "cancel") -> None:
    """Chat on a thread over a WebSocket; see the module docstring for the frames."""
    ctx = server_context(ws)
    try:
        caller = principal_of(ws, ctx.keys)
        check_thread_id(thread_id)
        if on_disconnect not in ("cancel", "continue"):
            raise ApiError(422, f"on_disconnect {on_disconnect!r} is not 'cancel' or 'continue'")
    except ApiError as exc:
        # Refuse the handshake: 1008 (policy violation), the reason says why.
        await ws.close(code=1008, reason=_close_reason(str(exc.detail)))
        return
    await ws.accept()
    mode: OnDisconnect = "continue" if on_disconnect == "continue" else "cancel"
    session = _Session(ws, ctx, caller, thread_id, mode)
    try:
        async with anyio.create_task_group() as tg:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    await session.send_error(
                        422, "binary frames are not accepted; send each frame as JSON text"
                    )
                    continue
                if len(text.encode("utf-8", "surrogatepass")) > ctx.max_body_bytes:
                    await ws.close(code=1009, reason="message too big")
                    break
                try:
                    await session.handle(tg, parse_frame(text))
                except ThreadBusyError as exc:
                    await session.send_error(
                        409, str(exc), type="thread_busy", active_run_id=exc.active_run_id
                    )
                except NotFoundError as exc:
                    await session.send_error(404, str(exc))
                except ApiError as exc:
                    await session.send_error(exc.status_code, str(exc.detail), type=exc.type)
                except ValidationError as exc:
                    await session.send_error(422, f"invalid frame: {exc.errors()[0]['msg']}")
                except UserError as exc:
                    await session.send_error(400, str(exc))
            tg.cancel_scope.cancel()
    except* WebSocketDisconnect:
        pass  # the client left; the finally block applies on_disconnect
    finally:
        # Streams we started follow on_disconnect; joined ones never stop their run.
        with anyio.CancelScope(shield=True):
            for stream in list(session.streams):
                await stream.aclose()


def _close_reason(text: str) -> str:
    """A close reason: at most 123 bytes of UTF-8 (the WebSocket limit), cut at a character."""
    data = text.encode("utf-8", "replace")[:123]
    return data.decode("utf-8", "ignore")
