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

from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import anyio

from ..app import RunOptions
from ..commands import Resume
from ..context import RunContext
from ..coordination.base import RunRegistry
from ..engine import Program
from ..errors import UserError
from ..events import Event, ToolCallFinished, ToolCallStarted
from ..graph.compiled import CompiledGraph, GraphProgram
from ..graph.state_graph import END, StateGraph
from ..handle import RunStream, SyncRunStream
from ..ids import new_id
from ..messages import Message, MessageBuilder, MessageDelta, ToolCall
from ..models.base import (
    Finish,
    Model,
    ModelSettings,
    TextDelta,
    ToolCallChunk,
    Usage,
    to_message_delta,
)
from ..models.registry import resolve_model
from ..storage.base import Checkpointer
from ..tools.tool import Tool
from ..tools.tool import tool as make_tool
from ..transcript import repair_transcript

__all__ = ["RESUME_PROMPT", "Agent", "create_agent"]

RESUME_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without repeating "
    "anything and without any preamble."
)


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
    ) -> None:
        self.model = resolve_model(model) if isinstance(model, str) else model
        if not isinstance(self.model, Model):
            raise UserError(f"model must be a tether Model or a name like 'local', not {model!r}")
        self.tools = {
            t.name: t for t in (x if isinstance(x, Tool) else make_tool(x) for x in tools)
        }
        self.instructions = instructions
        self.parallel_tool_calls = parallel_tool_calls
        self.settings = settings
        if max_turns < 1:
            raise UserError(f"max_turns must be >= 1, not {max_turns!r}")
        graph = StateGraph()
        graph.add_node("model", self._model_node)
        graph.add_node("tools", self._tools_node)
        graph.set_entry_point("model")
        graph.add_conditional_edges("model", _route, {"tools": "tools", END: END})
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

    # runs
    def _program(self, input: Any, options: RunOptions) -> Program:
        if isinstance(input, Resume):
            options.config["resume"] = True
            return GraphProgram(self, {}, self.recursion_limit)
        return super()._program(input, options)

    def run(
        self,
        input: Any,
        *,
        stream: Literal[True] = True,
        thread_id: str | None = None,
        multitask_strategy: str = "reject",
    ) -> SyncRunStream[Event]:
        """Start a run and iterate its events (Agno's surface); every event carries `run_id`.

        Only streaming is offered here, so the return type never depends on a flag: use
        `invoke()` for the final state.
        """
        if stream is not True:
            raise UserError("Agent.run() always streams; use agent.invoke(...) for the final state")
        return self.stream(input, thread_id=thread_id, multitask_strategy=multitask_strategy)

    def arun(
        self, input: Any, *, thread_id: str | None = None, multitask_strategy: str = "reject"
    ) -> RunStream:
        """Async `run()`: an async iterator of events."""
        return self.astream(input, thread_id=thread_id, multitask_strategy=multitask_strategy)

    def aresume(self, thread_id: str, *, multitask_strategy: str = "reject") -> RunStream:
        """Continue the thread's stopped answer where it ended (the UI's Continue); streams events.

        The new text extends the same message, which becomes `complete` (or `stopped` again).
        """
        return self.astream(Resume(), thread_id=thread_id, multitask_strategy=multitask_strategy)

    def resume(self, thread_id: str, *, multitask_strategy: str = "reject") -> SyncRunStream[Event]:
        """Sync `aresume()`."""
        return self.stream(Resume(), thread_id=thread_id, multitask_strategy=multitask_strategy)

    async def aget_messages(self, thread_id: str) -> list[Message]:
        """The thread's conversation, as stored (stopped answers and cancelled results included)."""
        return list((await self.aget_state(thread_id)).values.get("messages", []))

    def get_messages(self, thread_id: str) -> list[Message]:
        """Sync `aget_messages()`."""
        return self._sync(self.aget_messages, thread_id)

    # nodes
    def _prompt(self, messages: Sequence[Message], resuming: bool) -> list[Message]:
        prompt = repair_transcript(messages)
        if self.instructions:
            prompt.insert(0, Message.system(self.instructions))
        if resuming:
            prompt.append(Message.user(RESUME_PROMPT))
        return prompt

    async def _model_node(self, state: dict[str, Any], ctx: RunContext) -> AsyncIterator[Any]:
        """Stream one model answer. Cancelled: the model call is closed; the partial is kept."""
        messages: list[Message] = state["messages"]
        resumed = _resumable(messages) if ctx.config.get("resume") else None
        message_id = resumed.id if resumed is not None else new_id()
        builder = MessageBuilder(message_id)
        if resumed is not None:
            builder.add(MessageDelta(id=message_id, content=resumed.content))
        metadata: dict[str, Any] = {"model": self.model.name}
        prompt = self._prompt(messages, resumed is not None)
        specs = [t.spec for t in self.tools.values()]
        async with self.model.stream(prompt, tools=specs, settings=self.settings) as deltas:
            async for delta in deltas:
                if isinstance(delta, TextDelta | ToolCallChunk):
                    piece = to_message_delta(delta, message_id)
                    builder.add(piece)
                    yield piece
                elif isinstance(delta, Usage):
                    metadata["usage"] = {
                        "prompt_tokens": delta.prompt_tokens,
                        "completion_tokens": delta.completion_tokens,
                    }
                elif isinstance(delta, Finish):
                    metadata["finish_reason"] = delta.reason
        yield builder.build().model_copy(update={"metadata": metadata})

    async def _tools_node(self, state: dict[str, Any], ctx: RunContext) -> None:
        """Run the last answer's tool calls; each result is kept the moment it is ready."""
        calls = state["messages"][-1].tool_calls
        if self.parallel_tool_calls and len(calls) > 1:
            async with anyio.create_task_group() as tg:
                for call in calls:
                    tg.start_soon(self._call_tool, call, ctx)
        else:
            for call in calls:
                await self._call_tool(call, ctx)

    async def _call_tool(self, call: ToolCall, ctx: RunContext) -> None:
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
                content = await found.run(call.arguments)
            except Exception as exc:  # the model sees the failure and may retry or explain it
                status = "error"
                content = f"Error: {type(exc).__name__}: {exc}"
        metadata = {"error": True} if status == "error" else {}
        ctx.send(Message.tool(content, tool_call_id=call.id, name=call.name, metadata=metadata))
        ctx.emit_event(
            ToolCallFinished, tool_call_id=call.id, name=call.name, status=status, content=content
        )


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
    return (
        "tools"
        if last.role == "assistant" and last.tool_calls and last.status == "complete"
        else END
    )


def create_agent(model: Model | str = "local", **kwargs: Any) -> Agent:
    """`Agent(model, **kwargs)`, by the name other frameworks use."""
    return Agent(model, **kwargs)
