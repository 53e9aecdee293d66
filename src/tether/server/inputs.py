"""What the server accepts from a client: thread ids, JSON values, and OpenAI-style messages.

Every check here runs before anything is started or stored, and a value that fails one is a 422
that names the field. The rules:

- **Thread ids** are 1 to 200 characters, none of them a control character (`\\x00`-`\\x1f`,
  `\\x7f`-`\\x9f`) or a surrogate. Any other Unicode is fine (`日本` is a valid id). Ids go into
  response headers percent-encoded (`header_value()`), since HTTP headers carry Latin-1 only.
- **Free JSON** (`input`, `metadata`, `config`) nests at most `MAX_DEPTH` levels, and holds no
  unpaired surrogate (`"\\ud800"` is valid JSON, but no database can store it as text).
- **Messages** follow the OpenAI chat-completions shape, field by field (`WireMessage`): `role`;
  `content` as text, `null`, or a list of content parts whose `text` parts carry text;
  `tool_calls` as `{"id", "type": "function", "function": {"name", "arguments"}}` (or tether's
  flat `{"id", "name", "arguments"}`); and `tool_call_id`, `name`, `id`, `status`, `metadata`.
  Fields OpenAI clients send back that tether does not use (`refusal`, `audio`,
  `function_call`, `annotations`) are accepted and dropped.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from ..errors import UserError
from ..messages import Message, MessageStatus, Role, ToolCall
from .errors import ApiError

__all__ = [
    "MAX_DEPTH",
    "THREAD_ID_PATTERN",
    "JsonObject",
    "ThreadIdPath",
    "WireMessage",
    "check_json",
    "check_thread_id",
    "header_value",
    "parse_message",
]

MAX_DEPTH = 32  # levels of nesting a JSON value in a request may have
MAX_THREAD_ID = 200
# Rust-regex syntax (pydantic's): no C0/C1 control characters; surrogates cannot reach it.
THREAD_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
_THREAD_ID = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]+")
_THREAD_ID_RULE = (
    f"a thread id is 1 to {MAX_THREAD_ID} characters without control characters (such as NUL, "
    "CR or LF) or unpaired surrogates"
)

ThreadIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_THREAD_ID,
        pattern=THREAD_ID_PATTERN,
        description=_THREAD_ID_RULE[0].upper() + _THREAD_ID_RULE[1:] + ".",
    ),
]
"""A `{thread_id}` path parameter; FastAPI answers 422 for one that breaks the rule."""


def check_thread_id(value: str, *, where: str = "thread_id") -> str:
    """`value` if it is a valid thread id; a 422 `ApiError` naming `where` otherwise."""
    if len(value) > MAX_THREAD_ID or not _THREAD_ID.fullmatch(value):
        raise ApiError(422, f"{where} {value[:80]!r} is not valid: {_THREAD_ID_RULE}")
    return value


def header_value(text: str) -> str:
    """`text` as an HTTP header value: percent-encoded UTF-8 where it is not plain ASCII."""
    return quote(text, safe="!#$&'()*+,-./:;=?@[]_~")


def _check_depth_and_text(value: Any, depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"{where} nests more than {MAX_DEPTH} levels deep; flatten it")
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(str(key), where)
            _check_depth_and_text(item, depth + 1, where)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_depth_and_text(item, depth + 1, where)


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{where} holds an unpaired surrogate (such as '\\ud800'); send valid Unicode text"
        ) from None


def check_json(value: Any, *, where: str = "the value") -> Any:
    """`value` if it nests at most `MAX_DEPTH` levels and holds only valid Unicode text.

    Raises `ValueError` (which pydantic reports as a 422 naming the field) otherwise. The walk
    stops at the limit, so a deeper value is refused without ever nearing Python's recursion limit.
    """
    _check_depth_and_text(value, 0, where)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(check_json)]
"""A free JSON object in a request body: bounded depth, valid Unicode (see `check_json`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WireFunction(_Strict):
    """The `function` of an OpenAI tool call."""

    name: str = Field(min_length=1)
    arguments: str = "{}"


class WireToolCall(_Strict):
    """One tool call: OpenAI's `{"id", "type", "function"}`, or tether's flat form."""

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: WireFunction | None = None
    name: str | None = Field(default=None, min_length=1)
    arguments: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> WireToolCall:
        if (self.function is None) == (self.name is None):
            raise ValueError("a tool call needs 'function': {'name', 'arguments'} (or 'name')")
        return self

    def to_tool_call(self) -> ToolCall:
        if self.function is not None:
            return ToolCall(
                id=self.id, name=self.function.name, arguments=self.function.arguments or "{}"
            )
        assert self.name is not None
        return ToolCall(id=self.id, name=self.name, arguments=self.arguments or "{}")


class WireContentPart(BaseModel):
    """One part of a list `content`; only `text` parts are kept (their `text` must be text)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_has_text(self) -> WireContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a 'text' content part needs 'text' (a string)")
        return self


class WireMessage(_Strict):
    """One message as a client sends it (see the module docstring)."""

    role: Role
    content: str | list[WireContentPart] | None = None
    id: str | None = Field(default=None, min_length=1, max_length=200)
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[WireToolCall] | None = None
    status: MessageStatus = "complete"
    metadata: JsonObject = Field(default_factory=dict)
    # Sent back by OpenAI clients with the history; tether does not use them.
    refusal: str | None = None
    audio: Any = None
    function_call: Any = None
    annotations: Any = None

    @model_validator(mode="after")
    def _text_is_unicode(self) -> WireMessage:
        check_json(self.model_dump(include={"content", "name", "id", "tool_call_id"}))
        return self

    def to_message(self) -> Message:
        content = self.content
        if isinstance(content, list):
            text = "".join(p.text or "" for p in content if p.type == "text")
        else:
            text = content or ""
        fields: dict[str, Any] = {
            "role": self.role,
            "content": text,
            "tool_calls": tuple(c.to_tool_call() for c in self.tool_calls or ()),
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "status": self.status,
            "metadata": self.metadata,
        }
        if self.id is not None:
            fields["id"] = self.id
        return Message(**fields)


_MESSAGE = TypeAdapter(WireMessage)


def parse_message(data: Any, *, where: str) -> Message:
    """One message from its OpenAI-style JSON; a 422 `ApiError` naming the field otherwise."""
    try:
        check_json(data, where=where)
        return _MESSAGE.validate_python(data).to_message()
    except ValidationError as exc:
        raise ApiError(422, f"{where} is not a valid message: {_first_error(exc)}") from None
    except (ValueError, UserError) as exc:
        raise ApiError(422, f"{where} is not a valid message: {exc}"[:500]) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg', 'invalid')}"[:300] if loc else str(err.get("msg"))[:300]
