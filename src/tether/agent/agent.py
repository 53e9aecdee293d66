"""`Agent`: an LLM-and-tools loop, built as a graph of two nodes.

    model ──(tool calls?)──▶ tools ──▶ model ──▶ … ──▶ END

The `model` node streams the model's answer as `message_delta` events into one assistant message.
The `tools` node runs the calls of that message (concurrently by default) and sends each result as a
tool message the moment it is ready. Stops, by where they land:

- in the model stream: the HTTP response (or local generation) is closed, so the LLM stops
  generating; the partial answer is kept with `status="stopped"`; tool calls whose JSON was not
  finished are dropped;
- in the tools: running async tools are cancelled, sync tools abandoned (their result discarded),
  process tools killed; tools not yet started never start; every call without a result gets a
  synthetic result with `status="cancelled"` (and a `tool_call_finished` event saying so);
- between the two: the last checkpoint stands.

`mode="after_step"` lets the current model turn or tool batch finish first. Before every model call
the transcript is repaired, so whatever was stopped, the next message (or `resume`) just works.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Unpack

import anyio
import pydantic

from .. import tracing
from .._twin import SyncStreamTwin, SyncTwin
from ..app import RunOptions
from ..commands import Resume
from ..context import RunContext
from ..coordination.base import RunRegistry
from ..engine import Program
from ..errors import RunCancelledError, UserError
from ..events import Event, ToolCallFinished, ToolCallStarted
from ..graph.compiled import CompiledGraph, GraphProgram
from ..graph.state_graph import END, StateGraph
from ..handle import RunStream, SyncRunStream
from ..ids import new_id
from ..interrupts import GraphInterrupt
from ..messages import Message, MessageBuilder, MessageDelta, ToolCall
from ..models.base import (
    CONTINUE_PROMPT,
    Finish,
    Model,
    ModelSettings,
    TextDelta,
    ToolCallChunk,
    Usage,
    to_message_delta,
)
from ..models.local import LocalModel
from ..models.openai import OpenAICompatible
from ..models.registry import resolve_model
from ..run import StartOptions, StreamOptions
from ..storage.base import Checkpointer
from ..tools.tool import Tool
from ..tools.tool import tool as make_tool
from ..transcript import repair_transcript
from .approval import Decision, ask_approval
from .output import (
    OutputValidationError,
    PartialOutput,
    check_output_type,
    output_of,
    retries_so_far,
    retry_message,
    validate,
)
from .subagent import AgentTool

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["RESUME_PROMPT", "Agent", "ToolsIgnoredWarning", "create_agent"]

RESUME_PROMPT = CONTINUE_PROMPT
"""The user message that asks a model without assistant prefill to continue a stopped answer."""


class ToolsIgnoredWarning(UserWarning):
    """An agent was given tools on a model that cannot call tools."""


class Agent(CompiledGraph):
    """An agent: a model that may call tools, looping until it answers.

    Args:
        model: A `Model`, or a short name: `"local"` (SmolLM2 in-process), `"openai:<model>"`.
        tools: Tools (`@tether.tool` objects, or plain typed functions).
        instructions: The system prompt. It is sent with every model call, never stored.
        name: The agent's name (the server serves apps by name).
        checkpointer: Storage; default SQLite under `./.tether/`.
        registry: Run coordination; default in-process.
        max_turns: The most model calls one run may make.
        parallel_tool_calls: Run the tool calls of one answer concurrently.
        settings: Sampling settings for every model call.
        description: What the agent is (Agno's keyword); sent before `instructions` in the
            system prompt.
        output_type: A pydantic model: the answer is JSON validated into it (structured output;
            see `tether.agent.output`), read with `get_output()` / `invoke_output()`.
        output_retries: How many times an answer that does not validate is sent back to the
            model with the error before the run fails with `OutputValidationError`.
        tracer_provider: An OpenTelemetry `TracerProvider` for this agent's spans (see
            `tether.tracing`); by default the global one, when OpenTelemetry is installed.

    Warns (`ToolsIgnoredWarning`) when given tools on a model that cannot call tools.
    """

    def __init__(
        self,
        model: Model | str = "local",
        *,
        tools: Sequence[Tool | Any] = (),
        instructions: str | None = None,
        name: str | None = None,
        checkpointer: Checkpointer | None = None,
        registry: RunRegistry | None = None,
        max_turns: int = 10,
        parallel_tool_calls: bool = True,
        settings: ModelSettings | None = None,
        description: str | None = None,
        output_type: type[pydantic.BaseModel] | None = None,
        output_retries: int = 2,
        tracer_provider: Any = None,
    ) -> None:
        self.model = resolve_model(model) if isinstance(model, str) else model
        if not isinstance(self.model, Model):
            raise UserError(f"model must be a tether Model or a name like 'local', not {model!r}")
        for label, text in (("description", description), ("instructions", instructions)):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{label} must be a string, not {text!r}")
        self.description = description
        self.tools = {
            t.name: t for t in (x if isinstance(x, Tool) else make_tool(x) for x in tools)
        }
        self.instructions = instructions
        if self.tools and not self.model.supports_tools:
            warnings.warn(
                f"model {self.model.name!r} cannot call tools, so the agent's tools "
                f"{sorted(self.tools)!r} are never called; use a model that can call tools",
                ToolsIgnoredWarning,
                stacklevel=2,
            )
        self.parallel_tool_calls = parallel_tool_calls
        self.settings = settings
        if max_turns < 1:
            raise UserError(f"max_turns must be >= 1, not {max_turns!r}")
        self.output_type = check_output_type(output_type)
        if output_retries < 0:
            raise UserError(f"output_retries must be >= 0, not {output_retries!r}")
        self.output_retries = output_retries
        if self.output_type is not None:
            schema = self.output_type.model_json_schema()
            self.settings = dataclasses.replace(settings or ModelSettings(), output_schema=schema)
        graph = StateGraph()
        graph.add_node("model", self._model_node)
        graph.add_node("tools", self._tools_node)
        graph.set_entry_point("model")
        graph.add_conditional_edges("model", _route, {"tools": "tools", "model": "model", END: END})
        graph.add_edge("tools", "model")
        super().__init__(
            graph.topology(),
            checkpointer=checkpointer,
            registry=registry,
            interrupt_before=frozenset(),
            interrupt_after=frozenset(),
            recursion_limit=2 * max_turns,
            name=name,
        )
        if tracer_provider is not None:
            tracing.instrument(self, tracer_provider=tracer_provider)

    # runs
    def _program(self, input: Any, options: RunOptions) -> Program:
        if isinstance(input, Resume):
            return GraphProgram(self, {}, self.recursion_limit, resume=True)
        return super()._program(input, options)

    def arun(
        self,
        input: Any,
        *,
        stream: Literal[True] = True,
        config: Mapping[str, Any] | None = None,
        **options: Unpack[StreamOptions],
    ) -> RunStream:
        """Start a run and iterate its events (Agno's surface); every event carries `run_id`.

        Takes the options of `astream` (`thread_id`, `multitask_strategy`, `on_disconnect`, …;
        see `StreamOptions`). Only streaming is offered here, so the return type never depends on
        a flag: use `invoke()` / `ainvoke()` for the final state.
        """
        if stream is not True:
            raise UserError(
                "Agent.run() and arun() always stream; use agent.invoke(...) or "
                "agent.ainvoke(...) for the final state"
            )
        return self.astream(input, config, **options)

    run = SyncStreamTwin(arun, SyncRunStream[Event])

    def aresume(self, thread_id: str, *, multitask_strategy: str = "reject") -> RunStream:
        """Continue the thread's stopped answer where it ended (the UI's Continue); streams events.

        The new text extends the same message, which becomes `complete` (or `stopped` again).
        """
        return self.astream(Resume(), thread_id=thread_id, multitask_strategy=multitask_strategy)

    resume = SyncStreamTwin(aresume, SyncRunStream[Event])

    async def aget_messages(self, thread_id: str) -> list[Message]:
        """The thread's conversation, as stored (stopped answers and cancelled results included)."""
        return list((await self.aget_state(thread_id)).values.get("messages", []))

    get_messages = SyncTwin(aget_messages)

    async def aget_output(self, thread_id: str) -> pydantic.BaseModel | None:
        """The validated output of the thread's last answer (`output_type`), or `None` if that
        answer was stopped, did not validate, or is not an answer.

        Raises:
            UserError: the agent has no `output_type`.
        """
        return output_of(self._output_type(), await self.aget_messages(thread_id))

    get_output = SyncTwin(aget_output)

    async def ainvoke_output(
        self,
        input: Any,
        config: Mapping[str, Any] | None = None,
        **options: Unpack[StartOptions],
    ) -> pydantic.BaseModel | None:
        """Run to the end and return the validated output, or `None` if the run was stopped.

        Takes the arguments of `ainvoke` (see `StartOptions`).

        Raises:
            UserError: the agent has no `output_type`.
            RunFailedError: the run failed (its `__cause__` is an `OutputValidationError` when
                the answer never validated).

        Cancellation: the run is stopped (`requested_by="disconnect"`), as for `ainvoke`.
        """
        output_type = self._output_type()
        try:
            values = await self.ainvoke(input, config, **options)
        except RunCancelledError:
            return None
        return output_of(output_type, values["messages"])

    invoke_output = SyncTwin(ainvoke_output)

    def _output_type(self) -> type[pydantic.BaseModel]:
        if self.output_type is None:
            raise UserError("this agent has no output_type; pass Agent(..., output_type=YourModel)")
        return self.output_type

    def as_tool(self, *, name: str | None = None, description: str | None = None) -> AgentTool:
        """This agent as a tool of another agent (a sub-agent); see `tether.agent.subagent`.

        Args:
            name: The tool's name for the model; by default the agent's `name`.
            description: What the agent does, for the model; by default its `description`.

        Raises:
            UserError: there is no name or no description to use.
        """
        return AgentTool(self, name=name, description=description)

    # nodes
    def _prompt(self, messages: Sequence[Message]) -> list[Message]:
        prompt = repair_transcript(messages)
        system = [t for t in (self.description, self.instructions) if t]
        if self.settings is not None and self.settings.output_schema is not None:
            schema = json.dumps(self.settings.output_schema)
            system.append(f"Answer with only JSON that fits this JSON schema: {schema}")
        if system:
            prompt.insert(0, Message.system("\n\n".join(system)))
        return prompt

    async def _model_node(self, state: dict[str, Any], ctx: RunContext) -> AsyncIterator[Any]:
        """Stream one model answer. Cancelled: the model call is closed; the partial is kept."""
        messages: list[Message] = state["messages"]
        resumed = _resumable(messages) if ctx.resume else None
        message_id = resumed.id if resumed is not None else new_id()
        builder = MessageBuilder(message_id)
        if resumed is not None:
            builder.add(MessageDelta(id=message_id, content=resumed.content))
        metadata: dict[str, Any] = {"model": self.model.name}
        prompt = self._prompt(messages)
        specs = [t.spec for t in self.tools.values()]
        # A resumed answer ends the prompt: the model continues that very message. (An empty
        # stopped answer was dropped by the repair: the model starts it afresh.)
        continuing = resumed is not None and prompt[-1].id == resumed.id
        call = self.model.stream_continuation if continuing else self.model.stream
        partial = PartialOutput() if self.output_type is not None else None
        named = False  # a text delta named `message_id` to the graph: later text is a plain str
        if partial is not None and resumed is not None:
            partial.feed(resumed.content)
        with self._span(ctx, f"chat {self.model.name}", self._chat_attributes()) as span:
            async with call(prompt, tools=specs, settings=self.settings) as deltas:
                async for delta in deltas:
                    if type(delta) is TextDelta:  # the token hot path: no isinstance chain
                        text = delta.text
                        builder.add_text(text)
                        # The first text names the message; a `str` then extends it (the graph's
                        # cheapest path: no `MessageDelta` built per token).
                        yield text if named else MessageDelta(id=message_id, content=text)
                        named = True
                        if partial is not None:
                            value = partial.feed(text)
                            if value is not None:
                                ctx.emit({"partial_output": value})
                    elif isinstance(delta, TextDelta | ToolCallChunk):
                        piece = to_message_delta(delta, message_id)
                        builder.add(piece)
                        yield piece
                        named = named or isinstance(delta, TextDelta)
                        if partial is not None and isinstance(delta, TextDelta):
                            value = partial.feed(delta.text)
                            if value is not None:
                                ctx.emit({"partial_output": value})
                    elif isinstance(delta, Usage):
                        metadata["usage"] = {
                            "prompt_tokens": delta.prompt_tokens,
                            "completion_tokens": delta.completion_tokens,
                        }
                    elif isinstance(delta, Finish):
                        metadata["finish_reason"] = delta.reason
            if span is not None:
                span.set_attributes(_usage_attributes(metadata))
        answer = builder.build().model_copy(update={"metadata": metadata})
        if self.output_type is None or answer.tool_calls:
            yield answer
            return
        answer = validate(self.output_type, answer)
        yield answer
        if "output_error" in answer.metadata:
            attempt = retries_so_far(messages) + 1
            if attempt > self.output_retries:
                raise OutputValidationError(
                    f"the answer did not fit {self.output_type.__name__} after "
                    f"{self.output_retries} retries: {answer.metadata['output_error']}; "
                    "simplify the output type or use a stronger model"
                )
            yield retry_message(answer, attempt)

    async def _tools_node(self, state: dict[str, Any], ctx: RunContext) -> None:
        """Run the last answer's tool calls; each result is kept the moment it is ready."""
        # Tools that require approval: one interrupt() asks about all of them before any runs.
        decisions = ask_approval(state["messages"][-1].tool_calls, self.tools)
        calls: list[ToolCall] = []
        for call in state["messages"][-1].tool_calls:
            decision = decisions.get(call.id)
            if decision is not None and decision.action == "reject":
                self._reject(call, decision, ctx)
            elif decision is not None and decision.arguments is not None:
                calls.append(call.model_copy(update={"arguments": json.dumps(decision.arguments)}))
            else:
                calls.append(call)
        if self.parallel_tool_calls and len(calls) > 1:
            async with anyio.create_task_group() as tg:
                for call in calls:
                    tg.start_soon(self._call_tool, call, ctx)
        else:
            for call in calls:
                await self._call_tool(call, ctx)

    def _reject(self, call: ToolCall, decision: Decision, ctx: RunContext) -> None:
        """Answer a call the person rejected, without running it."""
        ctx.emit_event(
            ToolCallStarted, tool_call_id=call.id, name=call.name, arguments=call.arguments
        )
        content = decision.result_text()
        ctx.send(
            Message.tool(content, tool_call_id=call.id, name=call.name, metadata={"rejected": True})
        )
        ctx.emit_event(
            ToolCallFinished, tool_call_id=call.id, name=call.name, status="error", content=content
        )

    async def _call_tool(self, call: ToolCall, ctx: RunContext) -> None:
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.id,
            "gen_ai.tool.type": "function",
        }
        # keyed by the call: a sub-agent's run (an `AgentTool`) hangs under this span
        with self._span(ctx, f"execute_tool {call.name}", attributes, key=call.id) as span:
            status = await self._run_tool(call, ctx)
            if span is not None:
                span.set_attribute("tether.tool.status", status)

    async def _run_tool(self, call: ToolCall, ctx: RunContext) -> str:
        ctx.emit_event(
            ToolCallStarted, tool_call_id=call.id, name=call.name, arguments=call.arguments
        )
        found = self.tools.get(call.name)
        status: Literal["complete", "error"] = "complete"
        if found is None:
            status = "error"
            content = f"Error: there is no tool {call.name!r}; the tools are {sorted(self.tools)!r}"
        else:
            try:
                if isinstance(found, AgentTool):
                    content = await found.run_call(call, ctx)
                else:
                    content = await found.run(call.arguments, ctx=ctx)
            except GraphInterrupt:
                raise  # the tool asked a person (interrupt()): the run pauses
            except Exception as exc:  # the model sees the failure and may retry or explain it
                status = "error"
                content = f"Error: {type(exc).__name__}: {exc}"
        metadata = {"error": True} if status == "error" else {}
        ctx.send(Message.tool(content, tool_call_id=call.id, name=call.name, metadata=metadata))
        ctx.emit_event(
            ToolCallFinished, tool_call_id=call.id, name=call.name, status=status, content=content
        )
        return status

    # tracing
    def _span(
        self, ctx: RunContext, name: str, attributes: dict[str, Any], *, key: str | None = None
    ) -> AbstractContextManager[Span | None]:
        """A span under the node's span (`tether.tracing`); `None` when the run is untraced."""
        return tracing.span(ctx, name, attributes, key=key)

    def _chat_attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": _provider_name(self.model),
            "gen_ai.request.model": self.model.name,
        }
        settings = self.settings
        if settings is not None and settings.temperature is not None:
            out["gen_ai.request.temperature"] = settings.temperature
        if settings is not None and settings.max_tokens is not None:
            out["gen_ai.request.max_tokens"] = settings.max_tokens
        return out


def _usage_attributes(metadata: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    usage = metadata.get("usage")
    if usage:
        out["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
        out["gen_ai.usage.output_tokens"] = usage["completion_tokens"]
    if "finish_reason" in metadata:
        out["gen_ai.response.finish_reasons"] = [metadata["finish_reason"]]
    return out


def _provider_name(model: Model) -> str:
    """The GenAI semantic conventions' provider name, as far as tether can tell."""
    if isinstance(model, LocalModel):
        return "llama.cpp"
    if isinstance(model, OpenAICompatible):
        return "openai" if "api.openai.com" in model.base_url else "openai_compatible"
    return type(model).__name__


def _resumable(messages: Sequence[Message]) -> Message | None:
    """The stopped answer a `Resume` continues: the last message, if it is a stopped text answer."""
    last = messages[-1] if messages else None
    if (
        last is not None
        and last.role == "assistant"
        and last.status == "stopped"
        and not last.tool_calls
    ):
        return last
    return None


def _route(state: dict[str, Any]) -> str:
    last = state["messages"][-1]
    if last.role == "user" and "output_retry" in last.metadata:
        return "model"  # structured output that did not validate: the model answers again
    return (
        "tools"
        if last.role == "assistant" and last.tool_calls and last.status == "complete"
        else END
    )


def create_agent(model: Model | str = "local", **kwargs: Any) -> Agent:
    """`Agent(model, **kwargs)`, by the name other frameworks use."""
    return Agent(model, **kwargs)
