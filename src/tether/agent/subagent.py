"""An agent as another agent's tool: `agent.as_tool(name=..., description=...)`.

The model calls the tool with one argument, `input` (the task, as text). The call runs the agent as
a child run (see `tether.children`) on its own thread, `"<thread>/<run id>/<tool>.<tool call id>"`,
with its events streamed under the path `"<tool>:<tool call id>"`. The tool's result is the child's
last answer.

A `now` stop of the parent stops the child at once. The child's partial answer is stored `stopped`
on the child's thread, and the parent's tool call is answered with a tool message of status
`cancelled` whose text carries that partial answer (with a `tool_call_finished` event saying
`cancelled`), so the parent's transcript stays valid and shows what the sub-agent had produced. (If
the child had just completed when the stop arrived, the call is answered `complete` with its
answer instead.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ..children import child_thread_id, run_child
from ..context import RunContext
from ..errors import UserError
from ..events import ToolCallFinished
from ..ids import new_id
from ..messages import Message, ToolCall
from ..tools.tool import Tool

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .agent import Agent

__all__ = ["STOPPED_SUBAGENT_RESULT", "AgentTool"]

STOPPED_SUBAGENT_RESULT = (
    "Cancelled: the run was stopped while {name!r} was answering. Its partial answer: "
)
"""The start of the `cancelled` result of a stopped agent tool; its partial answer follows."""


def _ask(input: str) -> str:
    """Ask the agent.

    Args:
        input: The task or question for the agent, with everything it needs to know.
    """
    raise NotImplementedError  # the signature gives the schema; AgentTool.run does the work


class AgentTool(Tool):
    """A tool that runs an agent (made by `Agent.as_tool`)."""

    def __init__(self, agent: Agent, *, name: str | None, description: str | None) -> None:
        name = name or agent.name
        if not name:
            raise UserError("as_tool() needs a name: pass name=... or give the agent a name")
        if description is None:
            description = agent.description
        if not description:
            raise UserError(
                f"as_tool() needs a description of what agent {name!r} does, for the model: "
                "pass description=... or give the agent a description"
            )
        super().__init__(_ask, name=name, description=description)
        self.agent = agent

    def __repr__(self) -> str:
        return f"AgentTool({self.name!r})"

    async def run(
        self, arguments: str | Mapping[str, Any], *, ctx: RunContext | None = None
    ) -> str:
        """Run the agent on the call's `input` and return its answer (a call without an id).

        Raises:
            ToolArgumentsError: the arguments are not `{"input": "<text>"}`.
            UserError: called without a run context (outside a run).

        Cancellation: as `run_call`.
        """
        if ctx is None:
            raise UserError(f"agent tool {self.name!r} runs inside a run; call the agent instead")
        return await self.run_call(
            ToolCall(id=new_id(), name=self.name, arguments=_text(arguments)), ctx
        )

    async def run_call(self, call: ToolCall, ctx: RunContext) -> str:
        """Run the agent for the tool call `call` and return the text of its last answer.

        Raises:
            ToolArgumentsError: the arguments are not `{"input": "<text>"}`.
            RunFailedError: the agent's run failed.

        Cancellation: the child run is stopped at once; the call is answered with a `cancelled`
        tool message that carries the child's partial answer, then the cancellation propagates.
        """
        task = self.validate(call.arguments)["input"]

        def answer_stopped(values: dict[str, Any], completed: bool) -> None:
            answer = _last_answer(values)
            content = (
                answer if completed else STOPPED_SUBAGENT_RESULT.format(name=self.name) + answer
            )
            status: Literal["complete", "cancelled"] = "complete" if completed else "cancelled"
            thread_id = child_thread_id(ctx.thread_id, ctx.run_id, _segment(call))
            ctx._keep(
                Message.tool(
                    content,
                    tool_call_id=call.id,
                    name=call.name,
                    status=status,
                    metadata={"thread_id": thread_id},
                )
            )
            if ctx._handle is not None:
                ctx._handle.emit(
                    ToolCallFinished,
                    node=ctx.node,
                    tool_call_id=call.id,
                    name=call.name,
                    status=status,
                    content=content,
                )

        values = await run_child(
            self.agent,
            task,
            ctx,
            segment=_segment(call),
            path=f"{self.name}:{call.id}",
            on_stopped=answer_stopped,
            span_key=call.id,
        )
        if ctx._stopping():  # the stop arrived as the child completed: keep its answer
            answer_stopped(values, True)
        return _last_answer(values)


def _segment(call: ToolCall) -> str:
    return f"{call.name}.{call.id}"


def _last_answer(values: dict[str, Any]) -> str:
    for message in reversed(values.get("messages") or []):
        if message.role == "assistant":
            return str(message.content)
    return ""


def _text(arguments: str | Mapping[str, Any]) -> str:
    import json

    return arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
