"""Structured output: an agent whose answer is a validated pydantic object.

Mechanism. With `Agent(..., output_type=Model)`, every model call asks for JSON that fits the
model's JSON schema (`ModelSettings.output_schema`: OpenAI-style `response_format`, a grammar on
`LocalModel`). While the answer streams, each text delta is parsed as partial JSON
(`pydantic_core.from_json(..., allow_partial="trailing-strings")`) and every new partial object is sent as a
`custom` event, `{"partial_output": {...}}`. A complete answer is validated:
- valid: the validated object, dumped to JSON, is kept in the answer's
  `metadata["output"]`; `Agent.get_output()` turns it back into the pydantic object;
- invalid: the answer is kept with `metadata["output_error"]`, a user message quoting the
  validation error asks for a corrected answer (`metadata["output_retry"]` counts them), and the
  model answers again, at most `output_retries` times; then the run fails with
  `OutputValidationError`.

A stop keeps the partial text as a `stopped` answer, which has no `output`: the result is `None`,
never a half-validated object. `resume` continues the stopped JSON and validates it at its end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pydantic
import pydantic_core

from ..errors import ModelError, UserError
from ..messages import Message

__all__ = ["OutputValidationError", "PartialOutput", "output_of", "retries_so_far"]


class OutputValidationError(ModelError):
    """The model's answer did not fit `output_type`, again after every allowed retry."""


def check_output_type(output_type: Any) -> type[pydantic.BaseModel] | None:
    """`output_type` if it is a pydantic model class (or `None`).

    Raises:
        UserError: it is something else.
    """
    if output_type is None or (
        isinstance(output_type, type) and issubclass(output_type, pydantic.BaseModel)
    ):
        return output_type
    raise UserError(
        f"output_type must be a pydantic BaseModel subclass, not {output_type!r}; wrap other "
        "types in one (class Answer(BaseModel): value: ...)"
    )


class PartialOutput:
    """Parses an answer's text as it streams; `feed()` returns each new partial object once."""

    def __init__(self) -> None:
        self._text = ""  # the answer's text so far
        self._last: Any = None  # the last partial object handed out

    def feed(self, text: str) -> Any | None:
        """Add `text`; return the partial object if it changed, else `None`."""
        self._text += text
        try:
            partial = pydantic_core.from_json(self._text, allow_partial="trailing-strings")
        except ValueError:
            return None  # not JSON (yet): nothing to show
        if partial == self._last:
            return None
        self._last = partial
        return partial


def validate(output_type: type[pydantic.BaseModel], answer: Message) -> Message:
    """`answer` with `metadata["output"]` (valid) or `metadata["output_error"]` (invalid)."""
    try:
        value = output_type.model_validate_json(answer.content)
    except pydantic.ValidationError as exc:
        return answer.model_copy(
            update={"metadata": {**answer.metadata, "output_error": _error_text(exc)}}
        )
    return answer.model_copy(
        update={"metadata": {**answer.metadata, "output": value.model_dump(mode="json")}}
    )


def _error_text(exc: pydantic.ValidationError) -> str:
    return json.dumps(exc.errors(include_url=False, include_context=False), default=str)


def retry_message(answer: Message, attempt: int) -> Message:
    """The user message that shows the model why `answer` was rejected."""
    return Message.user(
        "Your answer does not fit the required JSON schema. The validation errors: "
        f"{answer.metadata['output_error']}. Answer again with only JSON that fits the schema.",
        metadata={"output_retry": attempt},
    )


def retries_so_far(messages: Sequence[Message]) -> int:
    """How many corrections were asked for since the person's last message."""
    count = 0
    for message in reversed(messages):
        if message.role == "user":
            if "output_retry" not in message.metadata:
                break
            count += 1
    return count


def output_of(
    output_type: type[pydantic.BaseModel], messages: Sequence[Message]
) -> pydantic.BaseModel | None:
    """The validated output of the last answer in `messages`, or `None` if it has none (stopped,
    invalid, or not an answer)."""
    last = messages[-1] if messages else None
    if last is None or last.role != "assistant" or last.status != "complete":
        return None
    data = last.metadata.get("output")
    return None if data is None else output_type.model_validate(data)
