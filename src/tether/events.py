"""The typed events of a run's stream.

The set is closed: every event is one of the classes in `Event`, and each class has one fixed shape.
Events are shared by every reader of a run, so treat them as immutable. (They are plain slotted
dataclasses rather than frozen ones because a frozen dataclass costs three times as much to build,
and a run builds one per token.)
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

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

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


@dataclass(slots=True, kw_only=True)
class _Base:
    run_id: str
    thread_id: str
    seq: int
    ts: float
    node: str | None = None
    path: tuple[str, ...] = ()


@dataclass(slots=True, kw_only=True)
class RunStarted(_Base):
    """The run began executing (after it won the thread)."""

    type: Literal["run_started"] = field(default="run_started", init=False)


@dataclass(slots=True, kw_only=True)
class NodeStarted(_Base):
    """A node began; `step` is the superstep it runs in."""

    step: int
    type: Literal["node_started"] = field(default="node_started", init=False)


@dataclass(slots=True, kw_only=True)
class NodeFinished(_Base):
    """A node returned and its update was accepted."""

    step: int
    type: Literal["node_finished"] = field(default="node_finished", init=False)


@dataclass(slots=True, kw_only=True)
class MessageDeltaEvent(_Base):
    """A streamed piece of message `message_id`: text (`content`) and tool-call fragments."""

    message_id: str
    content: str = ""
    role: str = "assistant"
    tool_calls: tuple[ToolCallDelta, ...] = ()
    type: Literal["message_delta"] = field(default="message_delta", init=False)


@dataclass(slots=True, kw_only=True)
class MessageEvent(_Base):
    """A whole message was produced (complete, or stopped when the run was stopped)."""

    message: Message
    type: Literal["message"] = field(default="message", init=False)

    @property
    def content(self) -> str:
        """The message text."""
        return self.message.content


@dataclass(slots=True, kw_only=True)
class ToolCallStarted(_Base):
    """A tool call began executing."""

    tool_call_id: str
    name: str
    arguments: str = "{}"
    type: Literal["tool_call_started"] = field(default="tool_call_started", init=False)


@dataclass(slots=True, kw_only=True)
class ToolCallFinished(_Base):
    """A tool call ended: `complete`, `error` (the tool raised) or `cancelled` (stopped)."""

    tool_call_id: str
    name: str
    status: Literal["complete", "error", "cancelled"]
    content: str = ""
    type: Literal["tool_call_finished"] = field(default="tool_call_finished", init=False)


@dataclass(slots=True, kw_only=True)
class CustomEvent(_Base):
    """Data that user code sent with `ctx.emit(...)` or a flow's `put_into_stream(...)`."""

    data: Any = None
    type: Literal["custom"] = field(default="custom", init=False)

    @property
    def content(self) -> str | None:
        """The data when it is text, else `None`."""
        return self.data if isinstance(self.data, str) else None


@dataclass(slots=True, kw_only=True)
class CheckpointSaved(_Base):
    """A checkpoint of the thread's state was committed."""

    checkpoint_id: str
    step: int
    type: Literal["checkpoint"] = field(default="checkpoint", init=False)


@dataclass(slots=True, kw_only=True)
class RunFinished(_Base):
    """The terminal event: exactly one per run, and always the last.

    `status` is `completed`, `cancelled` (stopped), `failed` or `interrupted` (a deliberate pause).
    `reason` is the stop reason, or `"timeout"` for a consumer timeout; `error` describes a failure.
    `interrupt` is the payload of an `interrupt()` pause (`{"id", "node", "value", ...}`).
    """

    status: TerminalStatus
    reason: str | None = None
    error: str | None = None
    interrupt: dict[str, Any] | None = None
    type: Literal["run_finished"] = field(default="run_finished", init=False)


Event = Annotated[
    RunStarted
    | NodeStarted
    | NodeFinished
    | MessageDeltaEvent
    | MessageEvent
    | ToolCallStarted
    | ToolCallFinished
    | CustomEvent
    | CheckpointSaved
    | RunFinished,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def event_to_json(event: Event) -> dict[str, Any]:
    """The event as a JSON-ready dict (the wire and storage format)."""
    data: dict[str, Any] = _ADAPTER.dump_python(event, mode="json")
    return data


def event_json_bytes(event: Event) -> bytes:
    """The event as compact JSON text (UTF-8), without an intermediate dict: the SSE hot path."""
    return _ADAPTER.dump_json(event)


def event_from_json(data: Any) -> Event:
    """Decode an event from `event_to_json` output; raises `pydantic.ValidationError` if malformed."""
    return _ADAPTER.validate_python(data)
