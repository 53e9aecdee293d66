"""`WS /threads/{thread_id}/ws`: chat over one WebSocket — send messages and stops, get events.

Client → server, one JSON object per text frame:

    {"type": "message", "content": "Hi"}            # or "messages": [{"role": "user", ...}]
        optional: "multitask_strategy" (default "reject"), "app"
    {"type": "stop", "mode": "now"}                 # or "after_step" / "rollback"
    {"type": "resume"}                              # continue the stopped answer
    {"type": "join", "run_id": "...", "after_seq": 7}

Server → client: every run event as JSON (the same objects as the SSE `data:`), and

    {"type": "stop_result", "stopped": true, "run_id": "..."}
    {"type": "error", "error": {"type": "thread_busy", "message": "...", ...}}

Errors (a busy thread, a bad frame) are reported as `error` frames; the socket stays open.

When the socket closes, runs it started are stopped (`requested_by="disconnect"`), unless it was
opened with `?on_disconnect=continue`; runs it merely joined are never stopped. Authenticate with
the usual headers or `?api_key=` (browsers cannot set WebSocket headers).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from anyio.abc import TaskGroup
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from ..errors import NotFoundError, ThreadBusyError, UserError
from ..events import event_to_json
from ..handle import RunStream
from .auth import Principal, principal_of
from .catalog import ThreadRef
from .context import ServerContext, server_context
from .errors import ApiError, error_body
from .schemas import RunCreate, run_input

__all__ = ["router"]

router = APIRouter(tags=["websocket"])


class _Session:
    """One socket's conversation: sends are serialized, and every stream it reads is tracked."""

    def __init__(
        self,
        ws: WebSocket,
        ctx: ServerContext,
        caller: Principal,
        thread_id: str,
        on_disconnect: str,
    ) -> None:
        self.ws = ws
        self.ctx = ctx
        self.caller = caller
        self.thread_id = thread_id
        self.on_disconnect = on_disconnect
        self.lock = anyio.Lock()  # one frame at a time on the socket
        self.streams: set[RunStream] = set()  # open streams; closed (per on_disconnect) at the end

    async def send(self, data: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    async def send_error(self, status: int, message: str, **extra: Any) -> None:
        await self.send({"type": "error", **error_body(status, message, **extra)})

    async def pump(self, stream: RunStream) -> None:
        """Forward a stream's events until its `run_finished`."""
        try:
            while batch := await stream.next_batch():
                for event in batch:
                    await self.send(event_to_json(event))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the socket is gone; the receive loop sees the disconnect and cleans up
        finally:
            self.streams.discard(stream)
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def handle(self, tg: TaskGroup, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("message", "resume"):
            await self.start(tg, frame)
        elif kind == "stop":
            await self.stop(frame)
        elif kind == "join":
            await self.join(tg, frame)
        else:
            raise ApiError(
                422, f"unknown frame type {kind!r}; send 'message', 'stop', 'resume' or 'join'"
            )

    async def _thread(self, app_name: str | None = None) -> ThreadRef:
        return await self.ctx.catalog.thread_for_run(self.thread_id, self.caller, app_name)

    async def start(self, tg: TaskGroup, frame: dict[str, Any]) -> None:
        if frame.get("type") == "resume":
            body = RunCreate(
                resume=True, multitask_strategy=frame.get("multitask_strategy", "reject")
            )
        else:
            messages = frame.get("messages")
            if messages is None:
                content = frame.get("content")
                if not isinstance(content, str) or not content:
                    raise ApiError(422, "a 'message' frame needs 'content' (text) or 'messages'")
                messages = [{"role": "user", "content": content}]
            body = RunCreate(
                input={"messages": messages},
                app=frame.get("app"),
                multitask_strategy=frame.get("multitask_strategy", "reject"),
            )
        ref = await self._thread(body.app)
        value = run_input(body)
        if isinstance(value, dict):
            users = [m for m in value.get("messages", ()) if m.role == "user"]
            if users:
                ref = await self.ctx.catalog.set_title(ref, users[0].content)
        stream = ref.app.astream(
            value,
            thread_id=ref.thread_id,
            multitask_strategy=body.multitask_strategy,
            on_disconnect=self.on_disconnect,
        )
        await stream.start()
        self.streams.add(stream)
        tg.start_soon(self.pump, stream)

    async def stop(self, frame: dict[str, Any]) -> None:
        ref = await self.ctx.catalog.thread(self.thread_id, self.caller)
        active = ref.app.registry.active_on(self.thread_id)
        stopped = await ref.app.astop(
            thread_id=self.thread_id,
            mode=str(frame.get("mode", "now")),
            reason=frame.get("reason"),
            requested_by="user",
            wait=False,
        )
        await self.send(
            {
                "type": "stop_result",
                "stopped": stopped,
                "run_id": active.run_id if active is not None else None,
            }
        )

    async def join(self, tg: TaskGroup, frame: dict[str, Any]) -> None:
        run_id = frame.get("run_id")
        if not isinstance(run_id, str):
            raise ApiError(422, "a 'join' frame needs 'run_id'")
        after = frame.get("after_seq", -1)
        ref = await self.ctx.catalog.thread(self.thread_id, self.caller)
        await self.ctx.catalog.run_on(ref, run_id)
        stream = await ref.app.ajoin(run_id, after_seq=after if isinstance(after, int) else -1)
        self.streams.add(stream)
        tg.start_soon(self.pump, stream)


@router.websocket("/threads/{thread_id}/ws")
async def thread_socket(ws: WebSocket, thread_id: str, on_disconnect: str = "cancel") -> None:
    """Chat on a thread over a WebSocket; see the module docstring for the frames."""
    ctx = server_context(ws)
    try:
        caller = principal_of(ws, ctx.keys)
        if on_disconnect not in ("cancel", "continue"):
            raise ApiError(422, f"on_disconnect {on_disconnect!r} is not 'cancel' or 'continue'")
        ref = await ctx.catalog.lookup(thread_id)
        if ref is not None and not caller.owns(ref.info.metadata):
            raise NotFoundError(f"there is no thread {thread_id!r}")
    except (ApiError, UserError) as exc:
        # Refuse the handshake: 1008 (policy violation) says why in the close reason.
        await ws.close(code=1008, reason=str(getattr(exc, "detail", exc))[:120])
        return
    await ws.accept()
    session = _Session(ws, ctx, caller, thread_id, on_disconnect)
    try:
        async with anyio.create_task_group() as tg:
            while True:
                text = await ws.receive_text()
                if len(text.encode()) > ctx.max_body_bytes:
                    await ws.close(code=1009, reason="message too big")
                    break
                try:
                    frame = json.loads(text)
                    if not isinstance(frame, dict):
                        raise ApiError(422, "each frame must be a JSON object with a 'type'")
                    await session.handle(tg, frame)
                except json.JSONDecodeError:
                    await session.send_error(422, "the frame is not valid JSON")
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
