"""State schemas, channels and reducers.

A schema is a `TypedDict` (or any class with annotations). Each key is a *channel*. A key annotated
`Annotated[T, reducer]` merges updates with `reducer(old, update)`; any other key is replaced by the
update. `MessagesState` is the default schema: one `messages` channel merged by message id with
`add_messages`, so streamed deltas build one message and a message with a known id replaces it.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from .errors import UserError
from .messages import Message, MessageDelta, add_messages

__all__ = ["AgentState", "Channel", "MessagesState", "StateSchema", "coerce_input"]


class MessagesState(TypedDict):
    """The default state: a conversation."""

    messages: Annotated[list[Message], add_messages]


AgentState = MessagesState  # the seed examples' name for the same schema

Reducer = Callable[[Any, Any], Any]


@dataclass(frozen=True, slots=True)
class Channel:
    """One key of the state."""

    name: str
    reducer: Reducer | None  # None: an update replaces the value
    default: Callable[[], Any]  # the value before any update


class StateSchema:
    """The channels of a schema type, and how updates apply to them."""

    def __init__(self, schema: type[Any] | None) -> None:
        self.type = schema or MessagesState
        hints = typing.get_type_hints(self.type, include_extras=True)
        if not hints:
            raise UserError(f"state schema {self.type!r} has no annotated keys; use a TypedDict")
        self.channels: dict[str, Channel] = {}
        for name, hint in hints.items():
            reducer = None
            if typing.get_origin(hint) is Annotated:
                reducer = next((m for m in hint.__metadata__ if callable(m)), None)
                hint = typing.get_args(hint)[0]
            self.channels[name] = Channel(name, reducer, _default_for(hint))
        self.has_messages = "messages" in self.channels

    def initial(self) -> dict[str, Any]:
        """The values of a thread that has no checkpoint yet."""
        return {name: ch.default() for name, ch in self.channels.items()}

    def apply(
        self, values: Mapping[str, Any], updates: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> dict[str, Any]:
        """Apply `(writer, update)` pairs in order and return the new values.

        A plain (reducer-less) channel written by two writers in one step is an error: the result
        would depend on timing.
        """
        out = dict(values)
        written: dict[str, str] = {}
        for writer, update in updates:
            for key, value in update.items():
                channel = self.channels.get(key)
                if channel is None:
                    raise UserError(
                        f"{writer!r} wrote the key {key!r}, which is not in the state schema "
                        f"{self.type.__name__}; add it there or return one of {sorted(self.channels)!r}"
                    )
                if channel.reducer is None:
                    if key in written and written[key] != writer:
                        raise UserError(
                            f"{written[key]!r} and {writer!r} both wrote {key!r} in one step; give "
                            "the key a reducer with Annotated[type, reducer]"
                        )
                    written[key] = writer
                    out[key] = value
                else:
                    out[key] = channel.reducer(out.get(key, channel.default()), value)
        return out

    def as_update(self, value: Any, *, writer: str) -> dict[str, Any]:
        """Turn what a node returned into an update dict."""
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return dict(value)
        if self.has_messages and (
            isinstance(value, Message | MessageDelta)
            or (
                isinstance(value, list)
                and all(isinstance(v, Message | MessageDelta) for v in value)
            )
        ):
            return {"messages": value if isinstance(value, list) else [value]}
        raise UserError(
            f"{writer!r} returned {value!r}; return a dict of state updates, a Message, a list of "
            "Messages, or None"
        )


def coerce_input(schema: StateSchema, value: Any) -> dict[str, Any]:
    """Turn a run's input into a state update.

    Accepts a dict of updates (where `messages` may hold `Message`s or OpenAI-style dicts), a
    `Message`, a list of messages, or a string (a user message).
    """
    if isinstance(value, str) and schema.has_messages:
        return {"messages": [Message.user(value)]}
    if (
        isinstance(value, Mapping)
        and schema.has_messages
        and isinstance(value.get("messages"), list)
    ):
        msgs = [Message.from_openai(m) if isinstance(m, dict) else m for m in value["messages"]]
        return {**value, "messages": msgs}
    if isinstance(value, list) and schema.has_messages:
        return {"messages": [Message.from_openai(m) if isinstance(m, dict) else m for m in value]}
    return schema.as_update(value, writer="input")


def _default_for(hint: Any) -> Callable[[], Any]:
    origin = typing.get_origin(hint) or hint
    if origin in (list, Sequence):
        return list
    if origin in (dict, Mapping):
        return dict
    if origin is set:
        return set
    return lambda: None
