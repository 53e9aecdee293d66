"""Transcript repair: make any message list valid input for an OpenAI-style chat API.

`repair_transcript` is pure and idempotent. tether applies it to the thread's messages on every stop,
and the agent applies it again before every model call, so a conversation that was stopped anywhere
can always continue.

The rules, in order:
1. A stopped assistant message with no text and no tool calls carried nothing; it is dropped.
2. Tool results are moved right after the assistant message whose call they answer, in call order.
3. A tool result whose call is nowhere before it (an orphan) is dropped.
4. A tool call with no result gets a synthetic result with `status="cancelled"`.
5. A tool call id used again by a later message is removed from that message (ids must be unique).
"""

from __future__ import annotations

from collections.abc import Sequence

from .messages import Message

__all__ = ["CANCELLED_TOOL_RESULT", "dangling_tool_calls", "repair_transcript"]

CANCELLED_TOOL_RESULT = "Cancelled: the run was stopped before this tool call returned a result."


def repair_transcript(messages: Sequence[Message]) -> list[Message]:
    """Return `messages` with the rules of this module applied; the input is not changed."""
    results: dict[str, Message] = {}
    for msg in messages:
        if msg.role == "tool" and msg.tool_call_id is not None:
            results.setdefault(msg.tool_call_id, msg)

    out: list[Message] = []
    answered: set[str] = set()
    for msg in messages:
        if msg.role == "tool":
            continue  # placed after its assistant message below, or dropped as an orphan
        if any(call.id in answered for call in msg.tool_calls):
            fresh = tuple(c for c in msg.tool_calls if c.id not in answered)
            msg = msg.model_copy(update={"tool_calls": fresh})
        if (
            msg.role == "assistant"
            and msg.status == "stopped"
            and not msg.content
            and not msg.tool_calls
        ):
            continue
        out.append(msg)
        for call in msg.tool_calls:
            if call.id in answered:
                continue
            answered.add(call.id)
            result = results.get(call.id)
            if result is None:
                result = Message.tool(
                    CANCELLED_TOOL_RESULT,
                    tool_call_id=call.id,
                    name=call.name,
                    status="cancelled",
                    id=f"cancelled-{call.id}",
                )
            out.append(result)
    return out


def dangling_tool_calls(messages: Sequence[Message]) -> list[str]:
    """The ids of tool calls in `messages` that have no tool result."""
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    return [c.id for m in messages for c in m.tool_calls if c.id not in answered]
