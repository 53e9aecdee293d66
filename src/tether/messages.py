"""Chat messages, streamed deltas, and the `add_messages` reducer.

A `Message` is immutable. Streaming builds one with a `MessageBuilder`: each `MessageDelta` with
the same message id appends to it, and the builder makes the final `Message` once, either
`complete` when the producer finished or `stopped` when the run was stopped first.

`add_messages` returns a `MessageList`: a plain `list` to its users that also remembers, for as
long as nothing changes it, two things about its own making (its `MessageTrace`), so that a step
of a long thread costs the same as a step of a short one (BENCHMARKS.md row 7):
- the position of each message id, so the next `add_messages` need not index the whole history
  again;
- an `origin`: an object that storage put there (a stored checkpoint's messages) and the number of
  leading items the list shares with it, so a commit can skip those messages without comparing
  them one by one.

Every method of the list that changes it drops the trace first, and every reader of a trace reads
it after the items it relies on, so a change made through the list, from any thread, is never
missed. A change that bypasses the subclass (`list.__setitem__(lst, i, m)` or `list.reverse(lst)`
called on the base class) is not seen; one that changes the list's length is (the trace records
it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal, SupportsIndex

from pydantic import BaseModel, ConfigDict, Field

from .errors import UserError
from .ids import new_id

__all__ = [
    "Message",
    "MessageBuilder",
    "MessageDelta",
    "MessageList",
    "MessageStatus",
    "MessageTrace",
    "Role",
    "ToolCall",
    "ToolCallDelta",
    "add_messages",
]

Role = Literal["system", "user", "assistant", "tool"]
MessageStatus = Literal["complete", "stopped", "cancelled"]


class ToolCall(BaseModel):
    """One call of a tool that an assistant message asks for.

    `arguments` holds the JSON text the model produced, as in the OpenAI wire format.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    arguments: str = "{}"

    @property
    def args(self) -> dict[str, Any]:
        """The arguments decoded from JSON; `{}` when they are empty."""
        value = json.loads(self.arguments or "{}")
        if not isinstance(value, dict):
            raise UserError(
                f"tool call {self.id!r} has arguments {self.arguments!r}; want an object"
            )
        return value


class Message(BaseModel):
    """One message of a conversation.

    `status` says how the message ended: `complete`; `stopped`, an assistant answer cut short by a
    stop (its content is what was produced until then); or `cancelled`, a synthetic tool result for a
    tool call that was stopped before it returned.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str = ""
    id: str = Field(default_factory=new_id)
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    status: MessageStatus = "complete"
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def user(cls, content: str, **fields: Any) -> Message:
        """A message from the person."""
        return cls(role="user", content=content, **fields)

    @classmethod
    def assistant(cls, content: str = "", **fields: Any) -> Message:
        """A message from the model."""
        return cls(role="assistant", content=content, **fields)

    @classmethod
    def system(cls, content: str, **fields: Any) -> Message:
        """Instructions for the model."""
        return cls(role="system", content=content, **fields)

    @classmethod
    def tool(cls, content: str, *, tool_call_id: str, **fields: Any) -> Message:
        """The result of the tool call `tool_call_id`."""
        return cls(role="tool", content=content, tool_call_id=tool_call_id, **fields)

    @classmethod
    def text_message(cls, content: str, role: Role = "assistant", **fields: Any) -> Message:
        """A plain text message (the seed examples' spelling); the role defaults to assistant."""
        return cls(role=role, content=content, **fields)

    def to_openai(self) -> dict[str, Any]:
        """This message in the OpenAI chat-completions wire format."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role != "tool":
            out["name"] = self.name
        return out

    @classmethod
    def from_openai(cls, data: dict[str, Any]) -> Message:
        """Build a message from the OpenAI chat-completions wire format (or a tether dict)."""
        if not isinstance(data, dict):
            raise UserError(f"a message must be an object with 'role' and 'content', not {data!r}")
        fields = dict(data)
        calls = fields.pop("tool_calls", None) or ()
        parsed = []
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                parsed.append(
                    ToolCall(id=call["id"], name=fn["name"], arguments=fn.get("arguments") or "{}")
                )
            else:
                parsed.append(ToolCall.model_validate(call))
        content = fields.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            fields["content"] = "".join(
                part.get("text", "") for part in content if isinstance(part, dict)
            )
        elif content is None:
            fields["content"] = ""
        try:
            return cls.model_validate({**fields, "tool_calls": tuple(parsed)})
        except ValueError as exc:
            raise UserError(f"not a valid message: {data!r} ({exc})") from None


class ToolCallDelta(BaseModel):
    """A fragment of a streamed tool call; fragments with the same `index` belong together."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class MessageDelta(BaseModel):
    """A streamed piece of the message `id`: text to append, and tool-call fragments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    content: str = ""
    role: Role = "assistant"
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass
class _ToolCallParts:
    id: str = ""  # the first non-empty id a fragment carried
    name: str = ""  # the first non-empty name a fragment carried
    arguments: list[str] = field(default_factory=list)  # JSON text, in arrival order


class MessageBuilder:
    """Folds the `MessageDelta`s of one message into a `Message`, in linear time."""

    def __init__(self, message_id: str, role: Role = "assistant") -> None:
        self.id = message_id
        self.role: Role = role
        self._parts: list[str] = []
        self._calls: dict[int, _ToolCallParts] = {}
        # `add_text(text)`: append text, the same as adding a text-only delta without building
        # one. It is the parts list's own `append`, so a token costs a C call, no Python frame.
        self.add_text: Callable[[str], None] = self._parts.append

    def add(self, delta: MessageDelta) -> None:
        """Append one delta; it must carry this builder's id."""
        self.role = delta.role
        if delta.content:
            self._parts.append(delta.content)
        for frag in delta.tool_calls:
            parts = self._calls.setdefault(frag.index, _ToolCallParts())
            parts.id = parts.id or (frag.id or "")
            parts.name = parts.name or (frag.name or "")
            if frag.arguments:
                parts.arguments.append(frag.arguments)

    @property
    def content(self) -> str:
        """The text so far."""
        return "".join(self._parts)

    def build(self, status: MessageStatus = "complete") -> Message:
        """The message so far. A `stopped` message drops tool calls whose JSON is unfinished."""
        calls = []
        for index in sorted(self._calls):
            parts = self._calls[index]
            arguments = "".join(parts.arguments) or "{}"
            if status != "complete" and not _is_json_object(arguments):
                continue
            if not parts.name:
                continue
            calls.append(
                ToolCall(
                    id=parts.id or f"call_{self.id}_{index}", name=parts.name, arguments=arguments
                )
            )
        return Message(
            role=self.role, content=self.content, id=self.id, tool_calls=tuple(calls), status=status
        )


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class MessageTrace:
    """What a `MessageList` knows about its items while it is unchanged (see the module docstring).

    Storage may set its `shares` (`MessageList.stamp`); `add_messages` takes its index
    (`take_index`). Both are single, atomic operations, so threads see one or the other state.
    """

    __slots__ = ("_index", "length", "shares")

    def __init__(
        self, origin: object | None, shared: int, length: int, index: dict[str, int] | None
    ) -> None:
        # (origin, shared), replaced as a whole: `origin` stands for a sequence of messages that
        # never changes (for storage, a stored checkpoint's messages), and the list's first
        # `shared` items are the very objects of its first `shared` messages; (None, 0): the list
        # shares nothing known with any
        self.shares: tuple[object | None, int] = (origin, shared)
        # len() of the list when the trace was made: a change of length that bypassed the list's
        # methods shows as a mismatch
        self.length = length
        # [message id -> position of its last occurrence in the list], or [] once `add_messages`
        # took it for the list it built (or none was built)
        self._index = [] if index is None else [index]

    @property
    def origin(self) -> object | None:
        return self.shares[0]

    @property
    def shared(self) -> int:
        return self.shares[1]

    def take_index(self) -> dict[str, int] | None:
        """The id index, to the one caller that gets it (`list.pop` is atomic); then None."""
        try:
            return self._index.pop()
        except IndexError:
            return None


class MessageList(list[Message]):
    """The list of messages that `add_messages` returns: a `list` with a `MessageTrace`.

    It reads, compares, copies, pickles and serializes as a plain list (copies and pickles are
    made without the trace). Every method that changes it drops its trace first; the next
    `add_messages` or commit then does the work the trace spared it, once.
    """

    __slots__ = ("_trace",)

    def __init__(self, items: Iterable[Message] = ()) -> None:
        self._trace: MessageTrace | None = None
        super().__init__(items)

    @classmethod
    def traced(cls, items: Sequence[Message], origin: object) -> MessageList:
        """A new list of `items`, all of which are `origin`'s messages, in order."""
        out = cls(items)
        out._trace = MessageTrace(origin, len(out), len(out), None)
        return out

    @property
    def trace(self) -> MessageTrace | None:
        """The list's trace; None when it has none or the list changed since it was made.

        Read it after reading the items it vouches for: a change drops it before it happens.
        """
        trace = self._trace
        return trace if trace is not None and trace.length == len(self) else None

    def stamp(self, trace: MessageTrace, origin: object) -> None:
        """Record that `origin` stands for this whole list, as it was when `trace` was read.

        Does nothing if the list changed since: `trace` is then no longer its trace.
        """
        if self.trace is trace:
            trace.shares = (origin, trace.length)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        # a copy or an unpickled list is a new list: it shares no trace with this one
        return (MessageList, (list(self),))


def _forgetting(name: str) -> Callable[..., Any]:
    """`list.<name>`, after dropping the list's trace: the way every change goes through."""
    method = getattr(list, name)

    def change(self: MessageList, *args: Any, **kwargs: Any) -> Any:
        self._trace = None
        return method(self, *args, **kwargs)

    change.__name__ = change.__qualname__ = name
    change.__doc__ = method.__doc__
    return change


for _name in (
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "sort",
    "reverse",
):
    setattr(MessageList, _name, _forgetting(_name))

_ID = attrgetter("id")


def add_messages(
    left: Sequence[Message] | None, right: Message | MessageDelta | Iterable[Message | MessageDelta]
) -> list[Message]:
    """The reducer of a `messages` channel: merge by id.

    A `Message` whose id is already present replaces it in place; a new one is appended. A
    `MessageDelta` appends its text to the message with its id (creating it if needed). Plain dicts
    in the OpenAI format are accepted as messages.

    Returns a new `MessageList`; `left` is not changed. When `left` is a `MessageList` that is
    unchanged since it was made, this costs one copy of the list (a C-level pointer copy) plus the
    work for `right`: the id index is taken over from `left` (which then has none; a second merge
    into the same `left` indexes it again), and the result shares `left`'s origin up to the first
    message it replaced.
    """
    merged = MessageList(left or ())
    # Read after the copy: a change of `left` that began before the copy has dropped the trace.
    trace = left.trace if isinstance(left, MessageList) else None
    origin, shared, known = None, 0, None
    if trace is not None:
        (origin, shared), known = trace.shares, trace.take_index()  # `merged` changes the index
    index = _index(merged) if known is None else known

    def find(message_id: str) -> int | None:
        nonlocal index, origin
        pos = index.get(message_id)
        if pos is not None and (pos >= len(merged) or merged[pos].id != message_id):
            # `left` was changed behind its methods: trust nothing its trace said
            index, origin = _index(merged), None
            pos = index.get(message_id)
        return pos

    items: Iterable[Any] = [right] if isinstance(right, Message | MessageDelta | dict) else right
    for item in items:
        if isinstance(item, dict):
            item = Message.from_openai(item)
        if isinstance(item, MessageDelta):
            builder = MessageBuilder(item.id, item.role)
            pos = find(item.id)
            if pos is not None:
                base = merged[pos]
                builder.add(MessageDelta(id=item.id, role=base.role, content=base.content))
            builder.add(item)
            item = builder.build()
            if pos is not None:
                item = item.model_copy(
                    update={"tool_calls": merged[pos].tool_calls + item.tool_calls}
                )
        if not isinstance(item, Message):
            raise UserError(
                f"the messages channel takes Message, MessageDelta or OpenAI-style dicts, not {item!r}"
            )
        pos = find(item.id)
        if pos is None:
            index[item.id] = len(merged)
            merged.append(item)
        else:
            merged[pos] = item
            shared = min(shared, pos)
    merged._trace = MessageTrace(origin, shared if origin is not None else 0, len(merged), index)
    return merged


def _index(messages: Sequence[Message]) -> dict[str, int]:
    """Message id -> position of its last occurrence (C-level passes, no Python frame per item)."""
    return dict(zip(map(_ID, messages), range(len(messages)), strict=True))
