"""Run endpoints: start (background, streamed, waited), read, re-join, cancel and stop.

What a client going away does:
- `POST .../runs/stream` and `POST .../runs/wait` follow the body's `on_disconnect`: `cancel` (the
  default) stops the run with `requested_by="disconnect"` the moment the connection drops;
  `continue` lets it run on, to be re-joined with `GET .../runs/{run_id}/stream`.
- `POST .../runs` (background) is not tied to the connection at all.
- Re-joining (`GET .../runs/{run_id}/stream`) never stops the run when the client leaves.

A stop (`/cancel`, `/stop`) ends the run as `cancelled` with its partial answer kept (`stopped`),
unless the mode is `rollback`; `after_step` lets the current step finish first.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from ..coordination.base import StopResult
from ..handle import RunStream
from ..run import RunRecord
from .catalog import ThreadRef
from .context import Caller, Ctx, ServerContext, clean_config, run_headers
from .errors import ERROR_RESPONSES
from .inputs import ThreadIdPath, header_value
from .schemas import RunCreate, first_user_text, run_input, run_json, thread_json
from .sse import (
    SSE_SCHEMA,
    DeferredJSONResponse,
    EventStreamResponse,
    RunEventSource,
    encode_event,
    flush_now,
    parse_last_event_id,
)

__all__ = ["router"]

router = APIRouter(tags=["runs"], responses=ERROR_RESPONSES)

StopMode = Literal["now", "after_step", "rollback"]
_ACTION_MODES: dict[str, StopMode] = {"interrupt": "now", "rollback": "rollback"}


def _events(ctx: ServerContext, ref: ThreadRef, stream: RunStream) -> RunEventSource:
    """A run's events as SSE, each with the caller's thread id (`ThreadRef.public_event`)."""
    return RunEventSource(
        stream,
        encode=lambda event: encode_event(ref.public_event(event)),
        flush_interval=ctx.sse_flush_interval,
    )


async def _prepare(
    ctx: ServerContext, caller: Caller, thread_id: str, body: RunCreate
) -> tuple[ThreadRef, Any]:
    """The caller's thread (created and titled if new) and the run input; nothing is stored
    before the input is known to be valid."""
    value = run_input(body)
    return await ctx.catalog.thread_for_run(
        thread_id, caller, body.app, title=first_user_text(value)
    ), value


@router.post("/threads/{thread_id}/runs", summary="Start a run in the background")
async def create_run(
    ctx: Ctx, caller: Caller, thread_id: ThreadIdPath, body: RunCreate
) -> JSONResponse:
    """Start a run and answer at once with its record (`status` is `pending` or `running`).

    The run is not tied to this request; follow it with `GET .../runs/{run_id}/stream`. 409 when
    the thread is busy and `multitask_strategy` is `reject`. On a server that queues background
    runs for `tether worker` processes, the record is `pending`; `reject` and `enqueue` are
    applied as the run is queued (409 at once; queued runs of a thread run in FIFO order), and
    `interrupt` / `rollback` when a worker starts it.
    """
    ref, value = await _prepare(ctx, caller, thread_id, body)
    if ctx.queue_background_runs:
        from ..worker import enqueue_run

        record = await ctx.catalog.start_run(
            ref,
            enqueue_run(
                ref.app,
                value,
                clean_config(body.config),
                thread_id=ref.thread_id,
                multitask_strategy=body.multitask_strategy,
                metadata=body.metadata,
            ),
        )
        return JSONResponse(run_json(record, ref), headers=run_headers(ref, record))
    handle = await ctx.catalog.start_run(
        ref,
        ref.app.astart(
            value,
            clean_config(body.config),
            thread_id=ref.thread_id,
            multitask_strategy=body.multitask_strategy,
            metadata=body.metadata,
        ),
    )
    return JSONResponse(run_json(handle.snapshot(), ref), headers=run_headers(ref, handle))


@router.post(
    "/threads/{thread_id}/runs/stream",
    summary="Start a run and stream its events (SSE)",
    response_class=EventStreamResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": SSE_SCHEMA}},
            "description": "The run's events.",
        }
    },
)
async def stream_run(
    ctx: Ctx, caller: Caller, thread_id: ThreadIdPath, body: RunCreate
) -> EventStreamResponse:
    """Start a run and stream its events as SSE: `event: <type>`, `id: <seq>`, `data: <json>`.

    The last message is `event: run_finished` with `status` and `reason`. The run id is in the
    `X-Tether-Run-Id` header before the first event. If the client disconnects, the run is stopped
    (`requested_by="disconnect"`) when `on_disconnect` is `cancel`, else it continues.
    """
    ref, value = await _prepare(ctx, caller, thread_id, body)
    stream = ref.app.astream(
        value,
        clean_config(body.config),
        thread_id=ref.thread_id,
        multitask_strategy=body.multitask_strategy,
        on_disconnect=body.on_disconnect,
        metadata=body.metadata,
    )
    # ThreadBusyError (409) surfaces here, before any byte is sent
    handle = await ctx.catalog.start_run(ref, stream.start())
    return EventStreamResponse(_events(ctx, ref, stream), headers=run_headers(ref, handle))


@router.post("/threads/{thread_id}/runs/wait", summary="Start a run and wait for its end")
async def wait_run(
    ctx: Ctx, caller: Caller, thread_id: ThreadIdPath, body: RunCreate
) -> DeferredJSONResponse:
    """Start a run and answer when it ends: `{"run": ..., "messages": [...], "values": {...}}`.

    If the client disconnects first, the run is stopped when `on_disconnect` is `cancel`.
    """
    ref, value = await _prepare(ctx, caller, thread_id, body)
    app = ref.app
    handle = await ctx.catalog.start_run(
        ref,
        app.astart(
            value,
            clean_config(body.config),
            thread_id=ref.thread_id,
            multitask_strategy=body.multitask_strategy,
            metadata=body.metadata,
        ),
    )

    async def finish() -> dict[str, Any]:
        await handle.wait()
        state = await app.aget_state(ref.thread_id)
        thread = thread_json(ref, latest=handle.snapshot(), state=state)
        return {
            "run": run_json(handle.snapshot(), ref),
            "messages": thread["messages"],
            "values": thread["values"],
        }

    def disconnected() -> None:
        if body.on_disconnect == "cancel":
            handle.stop(requested_by="disconnect", reason="the client disconnected")

    return DeferredJSONResponse(
        finish, on_disconnect=disconnected, headers=run_headers(ref, handle)
    )


@router.get("/threads/{thread_id}/runs", summary="List a thread's runs")
async def list_runs(
    ctx: Ctx,
    caller: Caller,
    thread_id: ThreadIdPath,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The thread's runs, newest first; active ones show live status."""
    ref = await ctx.catalog.thread(thread_id, caller)
    return [run_json(r, ref) for r in await ref.app.alist_runs(ref.thread_id, limit=limit)]


@router.get("/threads/{thread_id}/runs/{run_id}", summary="Read a run")
async def get_run(ctx: Ctx, caller: Caller, thread_id: ThreadIdPath, run_id: str) -> dict[str, Any]:
    """The run record, including how and by whom it was stopped."""
    ref = await ctx.catalog.thread(thread_id, caller)
    return run_json(await ctx.catalog.run_on(ref, run_id), ref)


@router.get("/runs/{run_id}", summary="Read a run by id alone")
async def get_run_by_id(ctx: Ctx, caller: Caller, run_id: str) -> dict[str, Any]:
    """The same record as `GET /threads/{thread_id}/runs/{run_id}`."""
    record, ref = await ctx.catalog.run(run_id, caller)
    return run_json(record, ref)


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    summary="Join a run's event stream (SSE), resuming after Last-Event-ID",
    response_class=EventStreamResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": SSE_SCHEMA}},
            "description": "The run's events.",
        }
    },
)
async def join_run(
    ctx: Ctx,
    caller: Caller,
    thread_id: ThreadIdPath,
    run_id: str,
    after_seq: Annotated[int | None, Query(ge=-1)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventStreamResponse:
    """Stream the run's events with `seq` after `Last-Event-ID` (or `?after_seq=`): live while it
    runs, from its log once it ended. Leaving never stops the run."""
    ref = await ctx.catalog.thread(thread_id, caller)
    await ctx.catalog.run_on(ref, run_id)
    stream = await ref.app.ajoin(run_id, after_seq=parse_last_event_id(last_event_id, after_seq))
    return EventStreamResponse(
        _events(ctx, ref, stream),
        headers={
            "X-Tether-Run-Id": header_value(run_id),
            "X-Tether-Thread-Id": header_value(ref.public_id),
        },
    )


async def _stop_result(ref: ThreadRef, run_id: str | None, result: StopResult) -> dict[str, Any]:
    """The answer of a stop route: the run that accepted the stop (else the run asked for)."""
    run_id = result.run_id or run_id
    record: RunRecord | None
    if result.handle is not None:
        flush_now(result.handle)  # the run's streams here write its last events without delay
        record = result.handle.snapshot()
    else:
        record = await ref.app.aget_run(run_id) if run_id else None
    return {
        "stopped": result.accepted,
        "run_id": run_id,
        "run": run_json(record, ref) if record is not None else None,
    }


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", summary="Cancel a run")
async def cancel_run(
    ctx: Ctx,
    caller: Caller,
    thread_id: ThreadIdPath,
    run_id: str,
    action: Literal["interrupt", "rollback"] = "interrupt",
    wait: bool = False,
    mode: StopMode | None = None,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Stop the run: `action=interrupt` keeps its partial work (mode `now`), `rollback` restores
    the thread to before the run; `mode=after_step` lets the current step finish first.

    Answers `{"stopped": bool, "run_id", "run"}`; `stopped` is false for a run that had already
    ended (not an error). With `wait=true` it answers once the run has ended and its partial
    answer is saved.
    """
    ref = await ctx.catalog.thread(thread_id, caller)
    await ctx.catalog.run_on(ref, run_id)
    result = await ref.app.arequest_stop(
        run_id=run_id,
        mode=mode or _ACTION_MODES[action],
        reason=reason,
        requested_by="user",
        wait=wait,
    )
    return await _stop_result(ref, run_id, result)


@router.post("/threads/{thread_id}/stop", summary="Stop whatever runs on a thread")
async def stop_thread(
    ctx: Ctx,
    caller: Caller,
    thread_id: ThreadIdPath,
    mode: StopMode = "now",
    wait: bool = False,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Stop the thread's active run (the Stop button). `mode`: `now` (default), `after_step`, or
    `rollback`. Answers `{"stopped": bool, "run_id", "run"}`; false when nothing was running."""
    ref = await ctx.catalog.thread(thread_id, caller)
    result = await ref.app.arequest_stop(
        thread_id=ref.thread_id, mode=mode, reason=reason, requested_by="user", wait=wait
    )
    return await _stop_result(ref, None, result)
