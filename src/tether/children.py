"""Child runs: a compiled graph run as a node of another graph, an agent run as another's tool.

A child is a run of its own app, on its own thread, started by the parent's node (or tool) on the
parent's event loop. Where things go:

- **Thread.** The child runs on a thread derived from the parent's:
  `"<parent thread>/<parent run id>/<segment>"`, where the segment is `"<node>.<step>"` for a
  subgraph and `"<tool>.<tool call id>"` for an agent tool (a digest replaces the part after the
  parent thread when the id would pass 200 characters). `child_thread_id` computes it. The child's
  state, runs and events are stored there, by the child app's checkpointer.
- **Events.** Each child event but `run_started`, `checkpoint` and `run_finished` is re-emitted in
  the parent's stream with `path` = `(segment, *child path)` (see `tether.events`); the segment is
  the node name for a subgraph and `"<tool>:<tool call id>"` for an agent tool.
- **Stop.** A `now` (or `rollback`) stop of the parent cancels the node that waits for the child;
  the node then stops the child at once with the same mode, reason and `requested_by`, waits
  (shielded) until the child has ended and stored its stopped state on its thread (partial answers
  `stopped`, tool calls answered `cancelled`), and hands that state to `on_stopped` so the parent
  keeps it too. An `after_step` stop of the parent lets the running step finish, children included.
- **Pause.** A child that pauses (`interrupt()`, a tool approval) pauses its parent: the parent's
  node raises the child's question as its own pause, with the child's `path` (see
  `tether.interrupts`). The parent's `Command(resume=answer)` reruns the node, which resumes the
  child on its same thread with `Command(resume=answer)`; a child that already ended in an
  earlier resume of the node is not run again (its final state is taken). A stop of a parent that
  waits for its paused child's answer cancels the parent's pause; the child's thread stays paused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from .commands import Command
from .events import CheckpointSaved, Event, RunFinished, RunStarted
from .interrupts import child_pause, child_resume
from .tracing import child_span

if TYPE_CHECKING:
    from .app import App
    from .context import RunContext
    from .handle import RunHandle

__all__ = ["child_thread_id", "run_child"]

_MAX_THREAD_ID = 200
_NOT_FORWARDED = (RunStarted, CheckpointSaved, RunFinished)
_OWN_FIELDS = frozenset({"run_id", "thread_id", "seq", "ts", "path"})


def child_thread_id(parent_thread_id: str, parent_run_id: str, segment: str) -> str:
    """The thread a child run uses; see the module docstring."""
    thread_id = f"{parent_thread_id}/{parent_run_id}/{segment}"
    if len(thread_id) <= _MAX_THREAD_ID:
        return thread_id
    digest = hashlib.sha256(thread_id.encode()).hexdigest()[:40]
    return f"{parent_thread_id[: _MAX_THREAD_ID - len(digest) - 1]}/{digest}"


async def run_child(
    app: App,
    input: Any,
    ctx: RunContext,
    *,
    segment: str,
    path: str,
    on_stopped: Callable[[dict[str, Any], bool], None],
    span_key: str | None = None,
) -> dict[str, Any]:
    """Run `app` on `input` as a child of the run of `ctx`; return its final state values.

    Args:
        app: The child app (a compiled graph or an agent).
        input: The child run's input.
        ctx: The parent node's (or tool's) run context.
        segment: The child thread's last part (see `child_thread_id`).
        path: This level's segment of the forwarded events' `path`.
        on_stopped: Called when the parent is stopped (or otherwise cancelled) while it waits
            for the child, before the cancellation propagates, with the child's final state
            values and whether the child had completed all the same (the stop came too late
            for it).
        span_key: The key of the span (in the parent's node) the child's run span hangs under
            (`tether.tracing.child_span`); by default the node's span.

    Raises:
        RunFailedError: the child failed.
        RunCancelledError: the child was stopped on its own (not by the parent).
        GraphInterrupt: the child paused (`interrupt()`): the parent's node pauses with the
            child's question (see `tether.interrupts`).

    Cancellation: the child is stopped with the parent's stop mode (`now` when the cancellation
    did not come from a stop), waited for in a shielded scope, and its stopped state is passed to
    `on_stopped`; then the cancellation propagates.
    """
    resumed = child_resume(path)
    if resumed is not None:  # the node resumes this child's pause: answer it on its thread
        thread_id, answer = resumed
        with anyio.CancelScope(shield=True):
            head = await app.aget_state(thread_id)
        if head.metadata.get("interrupt") is None:
            return head.values  # answered and ended in an earlier resume of this node
        input = Command(resume=answer)
    else:
        thread_id = child_thread_id(ctx.thread_id, ctx.run_id, segment)
    # Shielded: a stop now lands below, where the child is stopped.
    with anyio.CancelScope(shield=True), child_span(ctx, span_key):
        handle = await app.astart(input, thread_id=thread_id)
    try:
        async for event in handle.events_after(-1, on_disconnect="continue"):
            _forward(event, ctx, path)
    except BaseException:
        with anyio.CancelScope(shield=True):
            _stop_like_parent(handle, ctx)
            await handle.wait()
            values = (await app.aget_state(thread_id)).values
            on_stopped(values, handle.status == "completed")
        raise
    # No await from here on: a stop that lands after the child's end would lose its result.
    if handle.status == "interrupted":
        raise child_pause(path, thread_id, handle.record.interrupt)
    if handle.error is not None:
        raise handle.error
    assert handle.values is not None  # the stream ended with the child's terminal event
    return handle.values


def _forward(event: Event, ctx: RunContext, path: str) -> None:
    """Re-emit a child's event in the parent's stream, under `path`."""
    parent = ctx._handle
    if parent is None or isinstance(event, _NOT_FORWARDED) or ctx._stopping():
        return
    fields = {
        name: getattr(event, name) for name in event.__struct_fields__ if name not in _OWN_FIELDS
    }
    parent.emit(type(event), path=(path, *event.path), **fields)


def _stop_like_parent(child: RunHandle, ctx: RunContext) -> None:
    """Stop `child` with the parent's stop request (or `now`, by `shutdown`, without one)."""
    parent = ctx._handle
    request = parent.token.request if parent is not None else None
    if parent is None or request is None:
        child.request_stop(mode="now", reason="the parent run ended", requested_by="shutdown")
        return
    mode = "rollback" if parent.token.mode == "rollback" else "now"  # after_step escalated
    child.request_stop(mode=mode, reason=request.reason, requested_by=request.requested_by)
