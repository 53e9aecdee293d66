from __future__ import annotations

import pytest

from tether import Message, MessageDelta, UserError, add_messages
from tether.messages import MessageBuilder, ToolCallDelta


def test_constructors_set_roles_and_defaults() -> None:
    assert Message.user("hi").role == "user"
    assert Message.assistant("a").role == "assistant"
    assert Message.system("s").role == "system"
    tool = Message.tool("r", tool_call_id="c1")
    assert (tool.role, tool.tool_call_id) == ("tool", "c1")
    text = Message.text_message("Chunk 1")
    assert (text.role, text.content, text.status) == ("assistant", "Chunk 1", "complete")
    assert Message.user("x").id != Message.user("x").id


def test_add_messages_merges_by_id_and_appends_deltas() -> None:
    first = Message.user("q")
    merged = add_messages(
        [first], [MessageDelta(id="a", content="Hel"), MessageDelta(id="a", content="lo")]
    )
    assert [m.content for m in merged] == ["q", "Hello"]
    replaced = add_messages(merged, Message.assistant("Bye", id="a"))
    assert [m.content for m in replaced] == ["q", "Bye"]
    assert add_messages(None, {"role": "user", "content": "dict"})[0].content == "dict"


def test_add_messages_rejects_other_types_with_a_clear_error() -> None:
    with pytest.raises(UserError, match="messages channel"):
        add_messages([], [42])  # type: ignore[list-item]


def test_builder_assembles_tool_calls_and_drops_unfinished_ones_when_stopped() -> None:
    builder = MessageBuilder("m")
    builder.add(MessageDelta(id="m", content="Let me look. "))
    builder.add(
        MessageDelta(
            id="m", tool_calls=(ToolCallDelta(index=0, id="c0", name="search", arguments='{"q": '),)
        )
    )
    builder.add(MessageDelta(id="m", tool_calls=(ToolCallDelta(index=0, arguments='"x"}'),)))
    builder.add(
        MessageDelta(
            id="m", tool_calls=(ToolCallDelta(index=1, id="c1", name="calc", arguments='{"a": 1'),)
        )
    )
    complete_calls = builder.build("stopped").tool_calls
    assert [c.name for c in complete_calls] == ["search"]
    assert complete_calls[0].args == {"q": "x"}
    assert builder.build("stopped").status == "stopped"


def test_openai_round_trip() -> None:
    msg = Message.from_openai(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        }
    )
    assert msg.tool_calls[0].name == "f"
    assert Message.from_openai(msg.to_openai()).tool_calls == msg.tool_calls
    with pytest.raises(UserError, match="not a valid message"):
        Message.from_openai({"role": "robot", "content": "x"})
