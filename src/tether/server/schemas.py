"""The JSON shapes of the REST API: request bodies in, threads, runs and messages out.

Requests are strict pydantic models with `extra="forbid"`, so a misspelled field, or `0` for
`false`, is a 422 that names it rather than a silently ignored or coerced option. Responses are plain dicts built here, in one place:

- a run is its `RunRecord` (`run_id`, `thread_id`, `status`, `app`, timestamps, and how it was
  stopped: `stop_requested_at`, `stopped_at`, `stop_mode`, `stop_reason`, `stop_requested_by`);
- a message is `role`, `content`, `status` (`complete` | `stopped` | `cancelled`), `id`,
  `tool_calls`, `tool_call_id`, `name`, `metadata`;
- a thread is `thread_id`, `created_at`, `metadata`, `status` (`idle` | `busy` | `interrupted` |
  `error`), `active_run_id`, and in the full form its `messages`, the other state `values`, `next`
  and `checkpoint_id`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic_core import to_jsonable_python

from ..app import StateSnapshot
from ..commands import Command, Resume
from ..messages import Message
from ..run import RunRecord
from .auth import OWNER_KEY, PUBLIC_ID_KEY
from .catalog import ThreadRef
from .errors import ApiError
from .inputs import MAX_THREAD_ID, THREAD_ID_PATTERN, JsonObject, parse_message

__all__ = [
    "RunCreate",
    "ThreadCreate",
    "first_user_text",
    "jsonable",
    "message_json",
    "run_input",
    "run_json",
    "thread_json",
]

Strategy = Literal["reject", "interrupt", "rollback", "enqueue"]


class CommandBody(BaseModel):
    """`command` of a run body: `{"resume": <answer>}` answers the thread's `interrupt()`."""

    model_config = ConfigDict(extra="forbid")

    resume: JsonValue = Field(
        description='The person\'s answer (any JSON); for a tool approval: `"approve"`, '
        '`"reject"`, `{"action": "reject", "reason": "..."}`, '
        '`{"action": "edit", "arguments": {...}}`, or an object of tool call id to one of these.'
    )


class RunCreate(BaseModel):
    """The body of `POST /threads/{thread_id}/runs[/stream|/wait]`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: JsonObject | None = Field(
        default=None,
        description='The new state, usually `{"messages": [{"role": "user", "content": "..."}]}`. '
        "Omit it (with `resume` false) to continue the thread from its last checkpoint.",
    )
    app: str | None = Field(
        default=None, description="Which served app runs it; only needed when several are served."
    )
    multitask_strategy: Strategy = Field(
        default="reject",
        description="What to do if the thread is busy: `reject` (409), `interrupt` (stop the "
        "running run, keep its work), `rollback` (stop it, discard its work) or `enqueue`.",
    )
    on_disconnect: Literal["cancel", "continue"] = Field(
        default="cancel",
        description="For `/stream` and `/wait`: whether the run stops (`cancel`) or goes on "
        "(`continue`, re-join it with `GET .../runs/{run_id}/stream`) when the client goes away.",
    )
    resume: bool = Field(
        default=False,
        description="Continue the stopped assistant answer where it ended (the UI's Continue). "
        "Agents implement it; do not send `input` with it.",
    )
    command: CommandBody | None = Field(
        default=None,
        description='`{"resume": <answer>}` continues a run paused by `interrupt()` (thread '
        "status `interrupted`, the question in the run's `interrupt`); do not send `input` with it.",
    )
    metadata: JsonObject = Field(default_factory=dict, description="Stored on the run record.")
    config: JsonObject = Field(
        default_factory=dict, description='Run config, e.g. `{"recursion_limit": 50}`.'
    )


class ThreadCreate(BaseModel):
    """The body of `POST /threads` (all optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    thread_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_THREAD_ID, pattern=THREAD_ID_PATTERN
    )
    app: str | None = None
    metadata: JsonObject = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


def run_input(body: RunCreate) -> Any:
    """The run input for the app: a state update with `Message`s, `Resume()`, `Command`, or None."""
    if body.command is not None:
        if body.input is not None or body.resume:
            raise ApiError(
                422, "send command (an answer to an interrupt) alone, without input or resume"
            )
        return Command(resume=body.command.resume)
    if body.resume:
        if body.input is not None:
            raise ApiError(
                422, "send either input (a new message) or resume: true (continue), not both"
            )
        return Resume()
    if body.input is None:
        return None
    return parse_input(body.input)


def parse_input(data: Mapping[str, Any]) -> dict[str, Any]:
    """Decode `input.messages` into `Message`s; other keys pass through as state updates."""
    out = dict(data)
    messages = out.get("messages")
    if messages is None:
        return out
    if not isinstance(messages, list):
        raise ApiError(422, f"input.messages must be a list of messages, not {messages!r}"[:300])
    out["messages"] = [
        parse_message(m, where=f"input.messages[{i}]") for i, m in enumerate(messages)
    ]
    return out


def first_user_text(value: Any) -> str | None:
    """The text of the first user message of a run input (what titles a new thread)."""
    if not isinstance(value, dict):
        return None
    messages = value.get("messages", ())
    first = next((m for m in messages if isinstance(m, Message) and m.role == "user"), None)
    return first.content if first is not None else None


def jsonable(value: Any) -> Any:
    """Any state value as JSON data: messages and models dumped, unknown objects as their repr."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Message):
        return message_json(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return to_jsonable_python(value, fallback=repr)


def message_json(message: Message) -> dict[str, Any]:
    """A message on the wire (see the module docstring)."""
    return message.model_dump(mode="json")


def run_json(record: RunRecord, ref: ThreadRef) -> dict[str, Any]:
    """A run of the thread `ref` on the wire: its record, with the caller's thread id and
    without the internal worker lease fields."""
    return ref.public_record(record).model_dump(mode="json", exclude={"worker", "heartbeat_at"})


def live_run(active: RunRecord | None, latest: RunRecord | None) -> RunRecord | None:
    """The thread's live run: the one active in this process, else the last run if its record
    says it is not over (a run executing in another process, or queued for a worker)."""
    if active is not None:
        return active
    return latest if latest is not None and latest.status in ("pending", "running") else None


def thread_status(active: RunRecord | None, latest: RunRecord | None) -> str:
    """`busy` while a run is live (here or elsewhere), else from the last run: `interrupted`,
    `error` or `idle`."""
    if live_run(active, latest) is not None:
        return "busy"
    if latest is not None and latest.status == "interrupted":
        return "interrupted"
    if latest is not None and latest.status == "failed":
        return "error"
    return "idle"


def thread_json(
    ref: ThreadRef,
    *,
    active: RunRecord | None = None,
    latest: RunRecord | None = None,
    state: StateSnapshot | None = None,
) -> dict[str, Any]:
    """A thread on the wire; with `state`, its messages and values too."""
    # The server's own keys: the owner's key hash, and a namespaced thread's public id.
    hidden = (OWNER_KEY, PUBLIC_ID_KEY) if ref.public_id != ref.thread_id else (OWNER_KEY,)
    out: dict[str, Any] = {
        "thread_id": ref.public_id,
        "created_at": ref.info.created_at,
        "app": ref.app_name,
        "metadata": {k: v for k, v in ref.info.metadata.items() if k not in hidden},
        "status": thread_status(active, latest),
        "active_run_id": live.run_id if (live := live_run(active, latest)) else None,
    }
    if state is not None:
        values = dict(state.values)
        messages = values.pop("messages", None)
        out["messages"] = (
            [message_json(m) if isinstance(m, Message) else jsonable(m) for m in messages]
            if isinstance(messages, list)
            else []
        )
        out["values"] = jsonable(values)
        out["next"] = list(state.next)
        out["checkpoint_id"] = state.checkpoint_id
        # The question an `interrupt()` waits on (answer it with `command: {"resume": ...}`).
        out["interrupt"] = jsonable(state.metadata.get("interrupt"))
    return out
