"""The model protocol: one async stream of deltas per model call.

Every provider implements `Model.stream`, an async context manager that yields an async iterator of
`ModelDelta` items: `TextDelta`, `ToolCallChunk`, `Usage` and `Finish`. The context manager owns the
call's resources (an HTTP response, a generation thread). When the `async with` block exits, for any
reason — the stream ended, the caller stopped reading, an error, or cancellation — the provider
releases them, so the LLM stops generating. That is why a model stream is a context manager and not
an async generator: a generator that is abandoned mid-iteration is only finalized by the garbage
collector, and trio's and anyio's rules forbid yielding from one inside a cancel scope.

Typical use, by the agent's model node:

    async with model.stream(messages, tools=specs) as deltas:
        async for delta in deltas:
            ...

`Model.complete` drains a stream into one `Message` for callers that do not stream.

Continuation. `Model.stream_continuation` continues a stopped assistant message (the agent's
`resume`). A provider that can prefill the assistant turn sends the conversation ending with the
partial answer and streams only the new text (`continuation = "prefill"`); the others fall back to
an added user message, `CONTINUE_PROMPT`, that asks the model to carry on
(`continuation = "instruction"`), which a small model may answer by starting over.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.errors import ModelError, UserError
from tether.ids import new_id
from tether.messages import Message, MessageBuilder, MessageDelta, ToolCallDelta

__all__ = [
    "CONTINUE_PROMPT",
    "Continuation",
    "Finish",
    "Model",
    "ModelDelta",
    "ModelError",
    "ModelSettings",
    "TextDelta",
    "ToolCallChunk",
    "ToolSpec",
    "Usage",
    "to_message_delta",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text, to append to what came before."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallChunk:
    """A fragment of a streamed tool call.

    Fragments with the same `index` belong to one call. The first usually carries `id` and `name`;
    the `arguments` fragments concatenate to the call's JSON arguments.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of the call, when the provider reports them (usually once, near the end)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Finish:
    """Why the model stopped: `"stop"`, `"length"`, `"tool_calls"`, or a provider's own reason."""

    reason: str


ModelDelta = TextDelta | ToolCallChunk | Usage | Finish
"""One item of a model stream."""

Continuation = Literal["prefill", "continue_final_message", "instruction"]
"""How a provider continues a stopped answer: the prompt ends with the partial answer
(`"prefill"`; vLLM's `"continue_final_message"` is the same with an explicit request flag), or a
user message asks the model to go on (`"instruction"`, the fallback)."""

CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without repeating "
    "anything and without any preamble."
)
"""The user message the `"instruction"` fallback appends to continue a stopped answer."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the model is told about a tool: its name, what it does, and a JSON schema of its
    arguments (an object schema)."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict[str, Any]:
        """This tool in the OpenAI chat-completions `tools` format."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSettings:
    """Sampling settings for one call; `None` leaves a setting to the provider's default."""

    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    tool_choice: str | None = None
    """`"auto"` (the model decides), `"required"` (it must call a tool), `"none"` (it must not),
    or a tool's name (it must call that tool); `None` is `"auto"`. Used only when tools are given."""
    output_schema: dict[str, Any] | None = None
    """A JSON schema the answer's text must fit (structured output): OpenAI-style servers get it
    as `response_format`, `LocalModel` as a grammar."""

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(f"max_tokens must be at least 1, not {self.max_tokens!r}")
        if isinstance(self.stop, str):
            raise UserError(f"stop must be a tuple of strings, not the string {self.stop!r}")

    def to_openai(self) -> dict[str, Any]:
        """The settings that are set, as OpenAI request fields."""
        out: dict[str, Any] = {}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        if self.stop is not None:
            out["stop"] = list(self.stop)
        if self.seed is not None:
            out["seed"] = self.seed
        if self.output_schema is not None:
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": self.output_schema},
            }
        if self.tool_choice in ("auto", "required", "none"):
            out["tool_choice"] = self.tool_choice
        elif self.tool_choice is not None:
            out["tool_choice"] = {"type": "function", "function": {"name": self.tool_choice}}
        return out


class Model(ABC):
    """A chat model that streams its answer.

    Subclasses implement `stream`. A model object is safe to share between runs and event loops;
    each call of `stream` is independent (a provider that can only run one generation at a time
    queues them).
    """

    name: str
    """A short name for logs and run records, e.g. `"openai:gpt-4o-mini"`."""

    supports_tools: bool = True
    """Whether the model can call tools; an `Agent` given tools on a model that cannot warns."""

    continuation: Continuation = "instruction"
    """How `stream_continuation` continues a stopped answer (see the module docstring)."""

    @abstractmethod
    def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[ModelDelta]]:
        """Start one model call and stream its answer.

        Args:
            messages: The conversation, oldest first. Assistant messages with `status="stopped"`
                are sent as plain assistant messages; tool results with `status="cancelled"` as
                plain tool results.
            tools: The tools the model may call.
            settings: Sampling settings; `None` uses the provider's defaults.

        Returns:
            An async context manager. Entering it sends the request (and raises `ModelError` if
            the provider refuses it); it yields an async iterator of `ModelDelta`s. Exiting it, for
            any reason including cancellation, ends the call: the provider stops generating.
        """

    def stream_continuation(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[ModelDelta]]:
        """Continue the last message of `messages`, a stopped assistant answer, and stream the
        new text only (the caller appends it to that message).

        The default is the `"instruction"` fallback: the model gets `messages` plus a user
        message, `CONTINUE_PROMPT`, asking it to carry on. Providers that can prefill the
        assistant turn override this so that the prompt ends with the partial answer itself.

        Raises:
            UserError: `messages` does not end with an assistant message.

        Cancellation: as for `stream`.
        """
        _check_continuable(messages)
        return self.stream(
            [*messages, Message.user(CONTINUE_PROMPT)], tools=tools, settings=settings
        )

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> Message:
        """Run one call to the end and return the assistant message.

        The message's `metadata` holds `finish_reason` and, when reported, `usage`
        (`{"prompt_tokens": ..., "completion_tokens": ...}`).

        On cancellation the call is closed (as for `stream`) and the cancellation propagates; the
        partial answer is lost. Use `stream` to keep it.
        """
        message_id = new_id()
        builder = MessageBuilder(message_id)
        metadata: dict[str, Any] = {}
        async with self.stream(messages, tools=tools, settings=settings) as deltas:
            async for delta in deltas:
                if isinstance(delta, Finish):
                    metadata["finish_reason"] = delta.reason
                elif isinstance(delta, Usage):
                    metadata["usage"] = {
                        "prompt_tokens": delta.prompt_tokens,
                        "completion_tokens": delta.completion_tokens,
                    }
                else:
                    builder.add(to_message_delta(delta, message_id))
        return builder.build().model_copy(update={"metadata": metadata})

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most models hold nothing
        """Release what the model holds (connection pools, loaded weights); the default has none.

        Cancellation: safe to cancel; what was not released is released by the garbage collector.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _check_continuable(messages: Sequence[Message]) -> None:
    if not messages or messages[-1].role != "assistant":
        last = messages[-1].role if messages else None
        raise UserError(
            f"a continuation needs messages that end with the assistant answer to continue, "
            f"not with {last!r}; use stream() to start a new answer"
        )


def to_message_delta(delta: TextDelta | ToolCallChunk, message_id: str) -> MessageDelta:
    """Turn a text or tool-call delta into the `MessageDelta` of the message `message_id`.

    The agent streams these as `message_delta` events and folds them with a `MessageBuilder`.
    """
    if isinstance(delta, TextDelta):
        return MessageDelta(id=message_id, content=delta.text)
    return MessageDelta(
        id=message_id,
        tool_calls=(
            ToolCallDelta(
                index=delta.index, id=delta.id, name=delta.name, arguments=delta.arguments
            ),
        ),
    )
