"""What the front-end protocol endpoints share: a run started for a chat client, streamed as SSE.

The Vercel AI SDK (`ai_sdk.py`) and AG-UI (`ag_ui.py`) endpoints each translate a client's request
into new messages for a tether thread, start a run with `on_disconnect="cancel"`, and translate
the run's typed events into their protocol's events. This module holds the common part:

- `start_run()`: the caller's thread (created on first use, owned by the caller's key; with auth
  on, thread ids are the caller's own, see `auth.py`), the new messages appended, the run started. A run for a thread that is still
  busy is queued behind the active run (`multitask_strategy="enqueue"`): a client's `stop()` only
  aborts its fetch, so its next message can reach the server before the disconnect has ended the
  stopped run, and must wait for it rather than fail;
- `ProtocolSource`: an `EventStreamResponse` source that feeds each batch of run events through a
  protocol translator. When the client goes away (the AI SDK's `stop()`, AG-UI's `abortRun()`:
  both abort the fetch), the response's watcher cancels it and the `RunStream` is abandoned, which
  stops the run with `requested_by="disconnect"` (S8). The partial answer is saved as `stopped`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..commands import Command
from ..events import Event, RunFinished
from ..handle import RunHandle, RunStream
from ..messages import Message
from .auth import Principal
from .catalog import ThreadRef
from .context import ServerContext, run_headers
from .errors import ApiError

__all__ = ["ProtocolSource", "StartedRun", "pending_interrupt", "start_run"]


class StartedRun:
    """A run started for a protocol client: its thread, handle, stream and response headers."""

    def __init__(self, ref: ThreadRef, stream: RunStream, handle: RunHandle) -> None:
        self.ref = ref
        self.stream = stream
        self.handle = handle
        self.headers = run_headers(ref, handle)

    def source(
        self, translate: Translate, *, prologue: bytes = b"", epilogue: bytes = b""
    ) -> ProtocolSource:
        """The run's events, each with the caller's thread id (`ThreadRef.public_event`),
        translated to a protocol's SSE bytes by `translate`."""
        public = self.ref.public_event
        return ProtocolSource(
            self.stream,
            lambda event: translate(public(event)),
            prologue=prologue,
            epilogue=epilogue,
        )


async def thread_messages(ctx: ServerContext, caller: Principal, thread_id: str) -> list[Message]:
    """The messages the caller's thread holds ([] for a thread the caller does not have yet).

    Cancellation: a read only; nothing to undo.
    """
    ref = await ctx.catalog.find(thread_id, caller)
    if ref is None:
        return []
    state = await ref.app.aget_state(ref.thread_id)
    return list(state.values.get("messages", []))


async def pending_interrupt(
    ctx: ServerContext, caller: Principal, thread_id: str
) -> dict[str, Any] | None:
    """The question the caller's thread waits on (its head's `interrupt()` payload), or None
    (also when the caller has no thread by that id: another key's thread looks missing).

    Cancellation: a read only; nothing to undo.
    """
    ref = await ctx.catalog.find(thread_id, caller)
    if ref is None:
        return None
    pause = (await ref.app.aget_state(ref.thread_id)).metadata.get("interrupt")
    return pause if isinstance(pause, dict) else None


async def start_run(
    ctx: ServerContext,
    caller: Principal,
    *,
    thread_id: str,
    app_name: str | None,
    messages: list[Message],
    source: str,
    metadata: Mapping[str, Any],
    command: Command | None = None,
) -> StartedRun:
    """Append `messages` to the caller's thread `thread_id` and start a run on it; or, with
    `command` (and no messages), start a run that answers the thread's pending `interrupt()`.

    Raises:
        ApiError: 422 with no new message (and no command).

    Cancellation: if cancelled after the run started, the run goes on until its stream is
    abandoned (which stops it).
    """
    if not messages and command is None:
        raise ApiError(
            422,
            "no new message to answer: the request holds no user message that the thread does "
            "not already have; send the user's new message last",
        )
    ref = await ctx.catalog.thread_for_run(thread_id, caller, app_name)
    first_user = next((m for m in messages if m.role == "user"), None)
    if first_user is not None:
        ref = await ctx.catalog.set_title(ref, first_user.content)
    stream = ref.app.astream(
        command if command is not None else {"messages": messages},
        thread_id=ref.thread_id,
        on_disconnect="cancel",
        multitask_strategy="enqueue",
        metadata={"source": source, **metadata},
    )
    handle = await ctx.catalog.start_run(ref, stream.start())
    return StartedRun(ref, stream, handle)


Translate = Callable[[Event], Iterable[bytes]]


class ProtocolSource:
    """A run's events translated to a protocol's SSE bytes; closing it abandons the run stream.

    Args:
        stream: The run's event stream (opened with `on_disconnect="cancel"`).
        translate: Maps one run event to zero or more encoded protocol messages.
        prologue: Bytes sent before any event (the protocol's opening event).
        epilogue: Bytes sent after the terminal event (e.g. `data: [DONE]`).
    """

    def __init__(
        self,
        stream: RunStream,
        translate: Translate,
        *,
        prologue: bytes = b"",
        epilogue: bytes = b"",
    ) -> None:
        self.stream = stream
        self._translate = translate
        self._pending = prologue
        self._epilogue = epilogue
        self._ended = False

    async def next_chunk(self) -> bytes | None:
        """The protocol bytes for the next batch of run events; None after the end.

        Cancellation (the client went away): the wait for events is abandoned, which stops the
        run (the stream's `on_disconnect="cancel"`).
        """
        if self._ended:
            return None
        out = [self._pending]
        self._pending = b""
        batch = await self.stream.next_batch()
        for event in batch:
            out.extend(self._translate(event))
            if isinstance(event, RunFinished):
                self._ended = True
        if not batch:
            self._ended = True
        if self._ended:
            out.append(self._epilogue)
        return b"".join(out)

    async def aclose(self) -> None:
        """The response ended: before the run's end this stops it (a disconnect)."""
        await self.stream.aclose()
