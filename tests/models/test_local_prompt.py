"""`LocalModel`'s prompt pieces without the model: the tools' section, the grammar, the parser."""

from __future__ import annotations

import json

import pytest

from tether.errors import ModelError, UserError
from tether.messages import Message, ToolCall
from tether.models import TextDelta, ToolCallChunk, ToolSpec
from tether.models.local_prompt import CALL_CLOSE, CALL_OPEN, ToolCallParser, chat_dicts
from tether.tools.tool import tool

SEARCH = ToolSpec(
    "search",
    "Search the docs.",
    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)


def test_tools_are_listed_in_the_system_message_after_the_instructions() -> None:
    chat = chat_dicts([Message.system("Be brief."), Message.user("hi")], [SEARCH])
    assert chat[0]["role"] == "system"
    assert chat[0]["content"].startswith("Be brief.\n\n")
    assert (
        json.dumps(
            {"name": "search", "description": "Search the docs.", "parameters": SEARCH.parameters}
        )
        in chat[0]["content"]
    )
    assert CALL_OPEN in chat[0]["content"]
    assert chat[1] == {"role": "user", "content": "hi"}


def test_without_a_system_message_the_tools_get_their_own() -> None:
    chat = chat_dicts([Message.user("hi")], [SEARCH])
    assert [c["role"] for c in chat] == ["system", "user"]


def test_without_tools_the_messages_pass_as_they_are() -> None:
    assert chat_dicts([Message.user("hi")], []) == [{"role": "user", "content": "hi"}]


def test_earlier_calls_are_rendered_in_the_call_format_the_model_uses() -> None:
    call = ToolCall(id="c1", name="search", arguments='{"query": "x"}')
    chat = chat_dicts([Message.assistant("Let me look.", tool_calls=(call,))], [])
    assert chat[0]["content"] == (
        f'Let me look.{CALL_OPEN}{{"name": "search", "arguments": {{"query": "x"}}}}{CALL_CLOSE}'
    )


def test_parser_streams_text_that_does_not_start_a_call() -> None:
    parser = ToolCallParser()
    assert parser.feed("Hello") == [TextDelta("Hello")]
    assert parser.feed(" <b>") == [TextDelta(" <b>")]
    assert not parser.is_call and not parser.done


def test_parser_holds_a_call_back_until_it_is_complete() -> None:
    parser = ToolCallParser()
    pieces = [
        CALL_OPEN,
        '{"name": "search", ',
        '"arguments": {"query": "dra',
        'gons"}}',
        CALL_CLOSE,
    ]
    out = [parser.feed(p) for p in pieces]
    assert out[:-1] == [[], [], [], []]
    [chunk] = out[-1]
    assert isinstance(chunk, ToolCallChunk)
    assert (chunk.index, chunk.name, json.loads(chunk.arguments)) == (
        0,
        "search",
        {"query": "dragons"},
    )
    assert chunk.id and parser.done and parser.is_call


def test_parser_drops_a_call_cut_short() -> None:
    parser = ToolCallParser()
    assert parser.feed(CALL_OPEN + '{"name": "sea') == []
    assert not parser.done


def test_parser_reports_a_call_that_does_not_parse() -> None:
    parser = ToolCallParser()
    with pytest.raises(ModelError, match="did not parse"):
        parser.feed(CALL_OPEN + "{nope}" + CALL_CLOSE)


def test_grammar_offers_every_tool_or_text_under_auto() -> None:
    pytest.importorskip("llama_cpp")
    from tether.models.local_prompt import answer_grammar

    @tool
    def lookup(city: str, days: int = 1) -> str:
        """Forecast."""
        return city

    grammar = answer_grammar([SEARCH, lookup.spec], "auto", None)
    assert grammar is not None
    root = grammar.splitlines()[0]
    assert root.startswith(f"root ::= {json.dumps(CALL_OPEN)} tether-call {json.dumps(CALL_CLOSE)}")
    assert "| tether-text" in root
    assert '\\"search\\"' in grammar and '\\"lookup\\"' in grammar
    assert "tether-call ::=" in grammar and "\nroot ::=" not in grammar
    required = answer_grammar([SEARCH, lookup.spec], "lookup", None)
    assert required is not None
    assert "tether-text" not in required and '\\"search\\"' not in required


def test_grammar_for_an_unknown_tool_choice_is_a_user_error_naming_it() -> None:
    pytest.importorskip("llama_cpp")
    from tether.models.local_prompt import answer_grammar

    with pytest.raises(UserError, match=r"'find'"):
        answer_grammar([SEARCH], "find", None)


def test_no_grammar_without_tools_or_schema_and_a_schema_grammar_for_output() -> None:
    pytest.importorskip("llama_cpp")
    from tether.models.local_prompt import answer_grammar

    assert answer_grammar([SEARCH], "none", None) is None
    assert answer_grammar([], "auto", None) is None
    schema = {"type": "object", "properties": {"space": {"type": "string"}}}
    grammar = answer_grammar([SEARCH], "auto", schema)
    assert grammar is not None
    assert grammar.splitlines()[0].endswith("| tether-output")
    # the two schemas' helper rules (both have `space`) do not collide
    names = [line.split(" ::=")[0] for line in grammar.splitlines() if " ::=" in line]
    assert len(names) == len(set(names))


def test_parser_without_a_call_branch_passes_call_like_text_through() -> None:
    parser = ToolCallParser(calls=False)
    assert parser.feed(CALL_OPEN) == [TextDelta(CALL_OPEN)]
    assert not parser.is_call


def test_grammar_bounds_free_form_string_arguments_so_every_call_closes() -> None:
    pytest.importorskip("llama_cpp")
    from tether.models.local_prompt import STRING_LIMIT, _bounded, answer_grammar

    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "code": {"type": "string", "maxLength": 3},
        },
    }
    props = _bounded(schema)["properties"]
    assert props["query"]["maxLength"] == STRING_LIMIT
    assert props["tags"]["items"]["maxLength"] == STRING_LIMIT
    assert "maxLength" not in props["mode"] and props["code"]["maxLength"] == 3
    assert "maxLength" not in schema["properties"]["query"]  # the tool's own schema is untouched
    grammar = answer_grammar([SEARCH], "required", None)
    assert grammar is not None
    query = next(line for line in grammar.splitlines() if "query ::=" in line)
    assert query.count("char") == STRING_LIMIT  # at most STRING_LIMIT characters, then the quote
