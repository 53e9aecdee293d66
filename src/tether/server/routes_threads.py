"""Thread endpoints: create, list, read (state and messages), delete.

A thread belongs to the key that created it (see `auth.py`). With auth on, each key has its own
thread ids: `{thread_id}` is the caller's public id, which the catalog maps to the stored thread
(`ref.thread_id`); another key's thread of the same id is a different thread, never reached.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Query

from ..errors import NotFoundError
from .context import Caller, Ctx
from .errors import ERROR_RESPONSES
from .inputs import ThreadIdPath
from .schemas import ThreadCreate, thread_json

__all__ = ["router"]

router = APIRouter(tags=["threads"], responses=ERROR_RESPONSES)


@router.post("/threads", summary="Create a thread")
async def create_thread(
    ctx: Ctx, caller: Caller, body: Annotated[ThreadCreate | None, Body()] = None
) -> dict[str, Any]:
    """Create a thread owned by the caller's key. All fields are optional.

    `if_exists="do_nothing"` returns the caller's existing thread with that id instead of 409.
    """
    body = body or ThreadCreate()
    ref = await ctx.catalog.create_thread(
        caller,
        thread_id=body.thread_id,
        app_name=body.app,
        metadata=body.metadata,
        if_exists=body.if_exists,
    )
    return thread_json(ref)


@router.get("/threads", summary="List your threads")
async def list_threads(
    ctx: Ctx, caller: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """The caller's threads, newest first; `status` is `busy` while a run is active here."""
    refs = await ctx.catalog.list_threads(caller, limit=limit)
    out = []
    for ref in refs:
        handle = ref.app.registry.active_on(ref.thread_id)
        out.append(thread_json(ref, active=handle.snapshot() if handle is not None else None))
    return out


@router.get("/threads/{thread_id}", summary="Read a thread: state and messages")
async def get_thread(ctx: Ctx, caller: Caller, thread_id: ThreadIdPath) -> dict[str, Any]:
    """The thread with its `messages` (each with `role`, `content`, `status`), other state
    `values`, `status` and `active_run_id`.

    `status` is `interrupted` whenever the thread's head waits for the answer to an `interrupt()`
    and nothing runs, even if the last run did not pause (a resumed run that was rolled back
    restores the pause), except after a failed resume, which is `error` (the pause stands).
    """
    ref = await ctx.catalog.thread(thread_id, caller)
    state = await ref.app.aget_state(ref.thread_id)
    handle = ref.app.registry.active_on(ref.thread_id)
    runs = [] if handle is not None else await ref.app.alist_runs(ref.thread_id, limit=1)
    out = thread_json(
        ref,
        active=handle.snapshot() if handle is not None else None,
        latest=runs[0] if runs else None,
        state=state,
    )
    if out["status"] == "idle" and out["interrupt"] is not None:
        out["status"] = "interrupted"
    return out


@router.delete("/threads/{thread_id}", summary="Delete a thread")
async def delete_thread(ctx: Ctx, caller: Caller, thread_id: ThreadIdPath) -> dict[str, Any]:
    """Stop its active run (if any, `requested_by="user"`), then delete the thread with its
    checkpoints, runs and events."""
    ref = await ctx.catalog.thread(thread_id, caller)
    with anyio.fail_after(30):
        await ref.app.astop(thread_id=ref.thread_id, reason="the thread was deleted", wait=True)
    deleted = await ref.app.checkpointer.delete_thread(ref.thread_id)
    if not deleted:
        raise NotFoundError(f"there is no thread {thread_id!r}")
    return {"thread_id": ref.public_id, "deleted": True}
