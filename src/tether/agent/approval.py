"""Tool approval: a tool made with `@tool(requires_approval=True)` runs only once a person says so.

Before the agent's tools node runs any call, it collects the calls of tools that require approval
and asks with one `interrupt()`, whose payload is:

    {"type": "tool_approval", "tool_calls": [{"id": ..., "name": ..., "arguments": {...}}, ...]}

The run ends `interrupted`. The answer, given with `Command(resume=answer)` (or the HTTP resume
body), is a decision for every pending call, or one per call id:

- `"approve"` (or `True`): run the call as the model asked;
- `"reject"` (or `False`), or `{"action": "reject", "reason": "..."}`: do not run it; the model gets
  a tool result saying the user rejected it (and why);
- `{"action": "edit", "arguments": {...}}`: run it with these arguments instead;
- `{"<tool call id>": <decision>, ...}`: a decision per call; every pending call needs one.

An answer that does not fit fails the resumed run with a `UserError` that says what to send; the
thread stays paused at the same question, so the answer can simply be sent again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import UserError
from ..interrupts import interrupt
from ..messages import ToolCall
from ..tools.tool import Tool

__all__ = ["REJECTED_TOOL_RESULT", "Decision", "approval_calls", "approval_id", "ask_approval"]

REJECTED_TOOL_RESULT = "Rejected: the user did not allow this tool call."


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's decision on one tool call."""

    action: Literal["approve", "reject", "edit"]
    arguments: dict[str, Any] | None = None  # for `edit`
    reason: str | None = None  # for `reject`

    def result_text(self) -> str:
        """The tool result the model sees for a rejected call."""
        return REJECTED_TOOL_RESULT + (f" Reason: {self.reason}" if self.reason else "")


def ask_approval(calls: Sequence[ToolCall], tools: Mapping[str, Tool]) -> dict[str, Decision]:
    """Ask a person about the calls whose tool requires approval; their decisions by call id.

    Raises `GraphInterrupt` (through `interrupt()`) the first time; returns on resume.
    """
    pending = [c for c in calls if c.name in tools and tools[c.name].requires_approval]
    if not pending:
        return {}
    answer = interrupt(
        {
            "type": "tool_approval",
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": _arguments(c)} for c in pending
            ],
        }
    )
    ids = [c.id for c in pending]
    if isinstance(answer, Mapping) and answer and set(answer) <= set(ids):
        missing = [i for i in ids if i not in answer]
        if missing:
            raise UserError(
                f"the approval answer {answer!r} has no decision for the tool calls {missing!r}; "
                "give one decision per pending call id, or one decision for all"
            )
        return {i: _decision(answer[i]) for i in ids}
    decision = _decision(answer)
    return dict.fromkeys(ids, decision)


def approval_calls(pause: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tool calls a pause (`interrupt()`'s JSON payload, as in the run record) waits to have
    approved, each `{id, name, arguments}`; [] when it is not a tool approval."""
    value = pause.get("value") if pause is not None else None
    if not isinstance(value, dict) or value.get("type") != "tool_approval":
        return []
    return [c for c in value.get("tool_calls") or () if isinstance(c, dict) and "id" in c]


def approval_id(pause: dict[str, Any], call_id: str) -> str:
    """The id of the approval of one pending call: it names the pause, so a stale answer is
    told apart from one to the question the thread waits on now."""
    return f"{pause.get('id')}:{call_id}"


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments  # the model's text as it was; the tool reports it when called


def _decision(value: Any) -> Decision:
    if value is True or value == "approve":
        return Decision("approve")
    if value is False or value == "reject":
        return Decision("reject")
    if isinstance(value, Mapping):
        action = value.get("action")
        reason = value.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise UserError(f"a rejection's reason must be a string, not {reason!r}")
        if action == "approve":
            return Decision("approve")
        if action == "reject":
            return Decision("reject", reason=reason)
        if action == "edit":
            arguments = value.get("arguments")
            if not isinstance(arguments, Mapping):
                raise UserError(
                    f"an edit needs the new arguments as an object, not {arguments!r}: "
                    "{'action': 'edit', 'arguments': {...}}"
                )
            return Decision("edit", arguments=dict(arguments))
    raise UserError(
        f"{value!r} is not an approval decision; send 'approve', 'reject', "
        "{'action': 'reject', 'reason': ...}, {'action': 'edit', 'arguments': {...}}, "
        "or a mapping of tool call id to one of these"
    )
