"""The typed events of a run's stream.

The set is closed: every event is one of the classes in `Event`, and each class has one fixed shape.
Events are shared by every reader of a run, so they are immutable (frozen): make a changed copy with
`replace(event, field=value)`.

Events are `msgspec.Struct`s, because a run builds one per token: a struct is built in C (about a
quarter of a dataclass's cost) and is not tracked by the cyclic garbage collector, so the thousands
of events a long run keeps cost the collector nothing. The one rule that follows from `gc=False`: an
event must not be part of a reference cycle, so a custom event's `data` must not refer back to the
event itself. The `type` of an event is a class attribute, and the first key of its JSON.

All carry `run_id`, `thread_id`, `seq` (0, 1, 2, … within a run), `ts` (Unix time) and `node` where
there is one. The last event of every run is exactly one `RunFinished`, and nothing follows it.

`path` says where an event comes from: `()` for the run's own events; for an event of a child run (a
subgraph node, or an agent called as a tool; see `tether.children`) the segments that lead to it from
this run, outermost first: a subgraph node's name, or `"<tool name>:<tool call id>"` for an agent
tool. A forwarded event keeps its type, shape and `node` (the child's node), and gets this run's
`run_id`, `thread_id` and `seq`. A child's `run_started`, `checkpoint` and `run_finished` events are
not forwarded, so `run_finished` still ends exactly one run.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

import msgspec
from pydantic_core import to_jsonable_python

from .messages import Message, ToolCallDelta

__all__ = [
    "CheckpointSaved",
    "CustomEvent",
    "Event",
    "EventType",
    "MessageDeltaEvent",
    "MessageEvent",
    "NodeFinished",
    "NodeStarted",
    "RunFinished",
    "RunStarted",
    "RunStatus",
    "TerminalStatus",
    "ToolCallFinished",
    "ToolCallStarted",
    "event_from_json",
    "event_json_bytes",
    "event_to_json",
    "replace",
]

RunStatus = Literal["pending", "running", "completed", "cancelled", "failed", "interrupted"]
TerminalStatus = Literal["completed", "cancelled", "failed", "interrupted"]
EventType = Literal[
    "run_started",
    "node_started",
    "node_finished",
    "message_delta",
    "message",
    "tool_call_started",
    "tool_call_finished",
    "custom",
    "checkpoint",
    "run_finished",
]


class _Base(msgspec.Struct, kw_only=True, frozen=True, gc=False, tag_field="type"):
    run_id: str
    thread_id: str
    seq: int
    ts: float
    node: str | None = None
    path: tuple[str, ...] = ()


class RunStarted(_Base, kw_only=True, frozen=True, gc=False, tag="run_started"):
    """The run began executing (after it won the thread)."""

    type: ClassVar[Literal["run_started"]] = "run_started"


class NodeStarted(_Base, kw_only=True, frozen=True, gc=False, tag="node_started"):
    """A node began; `step` is the superstep it runs in."""

    step: int
    type: ClassVar[Literal["node_started"]] = "node_started"


class NodeFinished(_Base, kw_only=True, frozen=True, gc=False, tag="node_finished"):
    """A node returned and its update was accepted."""

    step: int
    type: ClassVar[Literal["node_finished"]] = "node_finished"


class MessageDeltaEvent(_Base, kw_only=True, frozen=True, gc=False, tag="message_delta"):
    """A streamed piece of message `message_id`: text (`content`) and tool-call fragments."""

    message_id: str
    content: str = ""
    role: str = "assistant"
    tool_calls: tuple[ToolCallDelta, ...] = ()
    type: ClassVar[Literal["message_delta"]] = "message_delta"


class MessageEvent(_Base, kw_only=True, frozen=True, gc=False, tag="message"):
    """A whole message was produced (complete, or stopped when the run was stopped)."""

    message: Message
    type: ClassVar[Literal["message"]] = "message"

    @property
    def content(self) -> str:
        """The message text."""
        return self.message.content


class ToolCallStarted(_Base, kw_only=True, frozen=True, gc=False, tag="tool_call_started"):
    """A tool call began executing."""

    tool_call_id: str
    name: str
    arguments: str = "{}"
    type: ClassVar[Literal["tool_call_started"]] = "tool_call_started"


class ToolCallFinished(_Base, kw_only=True, frozen=True, gc=False, tag="tool_call_finished"):
    """A tool call ended: `complete`, `error` (the tool raised) or `cancelled` (stopped)."""

    tool_call_id: str
    name: str
    status: Literal["complete", "error", "cancelled"]
    content: str = ""
    type: ClassVar[Literal["tool_call_finished"]] = "tool_call_finished"


class CustomEvent(_Base, kw_only=True, frozen=True, gc=False, tag="custom"):
    """Data that user code sent with `ctx.emit(...)` or a flow's `put_into_stream(...)`.

    `data` must not refer back to the event (events are not tracked by the cyclic GC).
    """

    data: Any = None
    type: ClassVar[Literal["custom"]] = "custom"

    @property
    def content(self) -> str | None:
        """The data when it is text, else `None`."""
        return self.data if isinstance(self.data, str) else None


class CheckpointSaved(_Base, kw_only=True, frozen=True, gc=False, tag="checkpoint"):
    """A checkpoint of the thread's state was committed."""

    checkpoint_id: str
    step: int
    type: ClassVar[Literal["checkpoint"]] = "checkpoint"


class RunFinished(_Base, kw_only=True, frozen=True, gc=False, tag="run_finished"):
    """The terminal event: exactly one per run, and always the last.

    `status` is `completed`, `cancelled` (stopped), `failed` or `interrupted` (a deliberate pause).
    `reason` is the stop reason, or `"timeout"` for a consumer timeout; `error` describes a failure.
    `interrupt` is the payload of an `interrupt()` pause (`{"id", "node", "value", ...}`).
    """

    status: TerminalStatus
    reason: str | None = None
    error: str | None = None
    interrupt: dict[str, Any] | None = None
    type: ClassVar[Literal["run_finished"]] = "run_finished"


Event = (
    RunStarted
    | NodeStarted
    | NodeFinished
    | MessageDeltaEvent
    | MessageEvent
    | ToolCallStarted
    | ToolCallFinished
    | CustomEvent
    | CheckpointSaved
    | RunFinished
)

_E = TypeVar("_E", bound=_Base)


def replace(event: _E, /, **changes: Any) -> _E:
    """A copy of `event` with `changes` applied (events are frozen)."""
    return msgspec.structs.replace(event, **changes)


def _dec(cls: type, value: Any) -> Any:
    if cls is Message or cls is ToolCallDelta:
        return cls.model_validate(value)
    raise NotImplementedError(cls)


# Values msgspec does not encode itself go through pydantic-core: pydantic models (`Message`,
# `ToolCallDelta`) and whatever custom data pydantic can make JSON of. It raises
# `PydanticSerializationError` (a `ValueError`) for data it cannot.
_ENCODER = msgspec.json.Encoder(enc_hook=to_jsonable_python)


def event_to_json(event: Event) -> dict[str, Any]:
    """The event as a JSON-ready dict (the wire and storage format)."""
    data: dict[str, Any] = msgspec.json.decode(_ENCODER.encode(event))
    return data


def event_json_bytes(event: Event) -> bytes:
    """The event as compact JSON text (UTF-8), without an intermediate dict: the SSE hot path."""
    return _ENCODER.encode(event)


def event_from_json(data: Any) -> Event:
    """Decode an event from `event_to_json` output; raises `ValueError` (a
    `msgspec.ValidationError`) if it is malformed."""
    event: Event = msgspec.convert(data, Event, dec_hook=_dec)
    return event
