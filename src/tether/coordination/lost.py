"""Recovering a run whose worker died: `failed` / `worker_lost`, keeping what it had streamed.

A sweeper (`RedisRunRegistry.sweep`) calls `recover_lost_run` for each run of a worker whose lease
lapsed. The run's durable event log holds its events up to its last commit; the Redis Stream the
worker pumped its events into holds the rest, up to about one batch before the crash. Recovery:
1. appends the streamed events the log lacks (so a re-join replays everything that was sent);
2. turns the text that was streamed after the last checkpoint into assistant messages with
   `status="stopped"` on the thread, transcript repaired (tool calls without results get synthetic
   cancelled results), announced by `message` and `checkpoint` events, as a `now` stop would;
3. appends one `run_finished` (`failed`, reason `worker_lost`) numbered above every event the dead
   worker sent to the log or the stream, and marks the record `failed`;
all in one `commit`, so a sweeper that dies half-way leaves the run for the next sweep.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..events import (
    CheckpointSaved,
    Event,
    MessageDeltaEvent,
    MessageEvent,
    RunFinished,
    TerminalStatus,
    ToolCallFinished,
)
from ..ids import new_id
from ..messages import Message
from ..run import RunRecord
from ..stop import StopRequest
from ..storage.base import Checkpoint, Checkpointer
from ..transcript import repair_transcript

__all__ = ["WORKER_LOST", "end_unstarted_run", "recover_lost_run"]

WORKER_LOST = "worker_lost: the process running this run died"


async def recover_lost_run(
    checkpointer: Checkpointer, run_id: str, streamed: Sequence[Event]
) -> bool:
    """Mark a dead worker's run `failed` / `worker_lost`; returns False if it had already ended.

    `streamed` are the run's events from its live stream (any subset, in seq order). Raises
    `StorageError` when storage fails; nothing is written then. Cancelled, it writes nothing or
    everything.
    """
    record = await checkpointer.get_run(run_id)
    if record is None or not record.is_active:
        return False
    logged = await checkpointer.read_events(run_id)
    last = logged[-1].seq if logged else -1
    missing = [e for e in streamed if e.seq > last and not isinstance(e, RunFinished)]
    events = [*logged, *missing]
    seq = max([last, *(e.seq for e in streamed)]) + 1
    added: list[Event] = []
    checkpoint = None
    partial = _partial_messages(events)
    if partial:
        head = await checkpointer.get_checkpoint(record.thread_id)
        values = dict(head.values) if head is not None else {}
        messages = values.get("messages", [])
        if isinstance(messages, list):
            known = {m.id for m in messages if isinstance(m, Message)}
            partial = [m for m in partial if m.id not in known]
            repaired = repair_transcript([*messages, *partial])
            closed = [m for m in repaired if m.id not in known]
            values["messages"] = repaired
            step = head.step + 1 if head is not None else 0
            checkpoint = Checkpoint(
                checkpoint_id=new_id(),
                thread_id=record.thread_id,
                parent_id=head.checkpoint_id if head is not None else None,
                run_id=run_id,
                step=step,
                values=values,
                source="stop",
            )
            for message in closed:
                if message.role == "tool" and message.tool_call_id is not None:
                    added.append(
                        ToolCallFinished(
                            run_id=run_id,
                            thread_id=record.thread_id,
                            seq=seq + len(added),
                            ts=time.time(),
                            tool_call_id=message.tool_call_id,
                            name=message.name or "",
                            status="cancelled",
                            content=message.content,
                        )
                    )
                added.append(
                    MessageEvent(
                        run_id=run_id,
                        thread_id=record.thread_id,
                        seq=seq + len(added),
                        ts=time.time(),
                        message=message,
                    )
                )
            added.append(
                CheckpointSaved(
                    run_id=run_id,
                    thread_id=record.thread_id,
                    seq=seq + len(added),
                    ts=time.time(),
                    checkpoint_id=checkpoint.checkpoint_id,
                    step=step,
                )
            )
    record.status = "failed"
    record.error = WORKER_LOST
    record.finished_at = time.time()
    final = RunFinished(
        run_id=run_id,
        thread_id=record.thread_id,
        seq=seq + len(added),
        ts=record.finished_at,
        status="failed",
        reason="worker_lost",
        error=WORKER_LOST,
    )
    await checkpointer.commit(checkpoint=checkpoint, events=[*missing, *added, final], run=record)
    return True


def _partial_messages(events: Sequence[Event]) -> list[Message]:
    """Assistant text streamed after the run's last checkpoint that no `message` event completed."""
    since = 0
    for i, event in enumerate(events):
        if isinstance(event, CheckpointSaved):
            since = i + 1
    texts: dict[str, list[str]] = {}
    for event in events[since:]:
        if isinstance(event, MessageDeltaEvent) and event.role == "assistant":
            texts.setdefault(event.message_id, []).append(event.content)
        elif isinstance(event, MessageEvent):
            texts.pop(event.message.id, None)
    return [
        Message.assistant("".join(parts), id=message_id, status="stopped")
        for message_id, parts in texts.items()
        if any(parts)
    ]


async def end_unstarted_run(
    checkpointer: Checkpointer,
    run_id: str,
    thread_id: str,
    *,
    stop: StopRequest | None = None,
    error: str | None = None,
) -> RunRecord:
    """End a queued run that never started: `cancelled` by `stop`, else `failed` with `error`.

    Writes its record and its one terminal event (seq 0) in one commit; returns the record.
    Raises `StorageError` when storage fails. Cancelled, it writes nothing or everything.
    """
    record = await checkpointer.get_run(run_id) or RunRecord(run_id=run_id, thread_id=thread_id)
    now = time.time()
    status: TerminalStatus = "cancelled" if stop is not None else "failed"
    record.status = status
    record.finished_at = now
    if stop is not None:
        record.stop_requested_at = stop.requested_at
        record.stopped_at = now
        record.stop_mode = stop.mode
        record.stop_reason = stop.reason
        record.stop_requested_by = stop.requested_by
    else:
        record.error = error
    final = RunFinished(
        run_id=run_id,
        thread_id=thread_id,
        seq=0,
        ts=now,
        status=status,
        reason=stop.reason if stop is not None else None,
        error=record.error,
    )
    await checkpointer.commit(events=[final], run=record)
    return record
