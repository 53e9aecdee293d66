"""Transcript repair is pure, idempotent, and always yields a valid OpenAI-style transcript."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tether import Message, ToolCall, repair_transcript
from tether.transcript import dangling_tool_calls


def assert_valid_openai_transcript(messages: list[Message]) -> None:
    """Every tool call is answered right after its assistant message (in any order, as OpenAI
    allows); no orphan results."""
    i = 0
    while i < len(messages):
        msg = messages[i]
        assert msg.role != "tool", f"orphan or misplaced tool result at {i}: {msg!r}"
        if msg.role == "assistant":
            assert msg.content or msg.tool_calls or msg.status == "complete"
        ids = [c.id for c in msg.tool_calls]
        answered = []
        j = i + 1
        while j < len(messages) and messages[j].role == "tool":
            answered.append(messages[j].tool_call_id)
            j += 1
        assert sorted(answered) == sorted(ids), f"calls {ids} answered by {answered}"
        assert len(set(answered)) == len(answered)
        i = j


def test_dangling_call_gets_a_cancelled_result_and_orphan_is_dropped() -> None:
    call = ToolCall(id="c1", name="search")
    fixed = repair_transcript(
        [
            Message.user("q"),
            Message.tool("orphan", tool_call_id="nope"),
            Message.assistant("", tool_calls=(call,), status="stopped"),
        ]
    )
    assert [m.role for m in fixed] == ["user", "assistant", "tool"]
    assert fixed[-1].status == "cancelled" and fixed[-1].tool_call_id == "c1"
    assert dangling_tool_calls(fixed) == []


def test_empty_stopped_assistant_message_is_dropped_but_partial_text_is_kept() -> None:
    fixed = repair_transcript(
        [
            Message.user("q"),
            Message.assistant("", status="stopped"),
            Message.assistant("par", status="stopped"),
        ]
    )
    assert [(m.content, m.status) for m in fixed] == [("q", "complete"), ("par", "stopped")]


call_ids = st.sampled_from(["a", "b", "c", "d"])
messages = st.one_of(
    st.builds(Message.user, st.text(max_size=3)),
    st.builds(
        lambda text, ids, status: Message.assistant(
            text,
            tool_calls=tuple(ToolCall(id=i, name="t") for i in dict.fromkeys(ids)),
            status=status,
        ),
        st.text(max_size=3),
        st.lists(call_ids, max_size=3),
        st.sampled_from(["complete", "stopped"]),
    ),
    st.builds(lambda i: Message.tool("r", tool_call_id=i), call_ids),
)


@given(st.lists(messages, max_size=12))
def test_repair_always_yields_a_valid_transcript_and_is_idempotent(
    transcript: list[Message],
) -> None:
    fixed = repair_transcript(transcript)
    assert_valid_openai_transcript(fixed)
    assert repair_transcript(fixed) == fixed
    kept_text = [m.content for m in transcript if m.role == "user"]
    assert [m.content for m in fixed if m.role == "user"] == kept_text
