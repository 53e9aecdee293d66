"""`ModelSettings.tool_choice` and `output_schema` as OpenAI request fields."""

from __future__ import annotations

from tether.messages import Message
from tether.models import ModelSettings, OpenAICompatible, ToolSpec

MODEL = OpenAICompatible("http://127.0.0.1:1/v1", "m")
HI = [Message.user("hi")]
SEARCH = ToolSpec("search", "Search.")


def test_output_schema_is_sent_as_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = MODEL.request_body(HI, settings=ModelSettings(output_schema=schema))
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }


def test_tool_choice_is_sent_in_openai_form_only_with_tools() -> None:
    named = MODEL.request_body(HI, tools=[SEARCH], settings=ModelSettings(tool_choice="search"))
    assert named["tool_choice"] == {"type": "function", "function": {"name": "search"}}
    required = MODEL.request_body(
        HI, tools=[SEARCH], settings=ModelSettings(tool_choice="required")
    )
    assert required["tool_choice"] == "required"
    assert "tool_choice" not in MODEL.request_body(HI, settings=ModelSettings(tool_choice="auto"))
