"""How `LocalModel` talks to a llama.cpp model: the prompt text, the tool-call grammar, and the
parser that turns constrained output back into tool calls.

Prompt. The conversation is rendered with the chat template stored in the GGUF file (SmolLM2's is
ChatML), the way llama-cpp-python's own chat handler renders it. Two things are added:
- tools: a system section lists each tool as JSON and says how to call one,
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; earlier calls are rendered in that
  same form, so the model sees its own format;
- continuation: the template is rendered with the stopped answer as the last message, and the
  prompt is cut right after that answer's text, so it ends mid-turn (no end-of-turn marker, no
  added user message) and the model's next tokens extend the answer. vLLM's
  `continue_final_message` works the same way.

Grammar. With tools, generation is constrained by a llama.cpp GBNF grammar built from the tools'
JSON schemas: a call is `<tool_call>`, a JSON object whose `name` is one of the tools and whose
`arguments` fit that tool's schema, then `</tool_call>`. `tool_choice="auto"` also allows a plain
text answer (any text that does not start with `<`), so the model chooses between the two with its
first token; `"required"` (or a tool's name) allows only a call. One call per answer. A string
argument whose schema sets no `maxLength` is bounded to `STRING_LIMIT` (100) characters, so that a
small model that loops inside a string still closes its call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.errors import ModelError, UserError
from tether.ids import new_id
from tether.messages import Message
from tether.models.base import ModelDelta, TextDelta, ToolCallChunk, ToolSpec

__all__ = [
    "CALL_BRANCH",
    "CALL_CLOSE",
    "CALL_OPEN",
    "ToolCallParser",
    "answer_grammar",
    "chat_dicts",
]

CALL_BRANCH = "tether-call"
"""The grammar rule of a tool call; a grammar without it allows no call."""
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

_TOOLS_HEADER = (
    "You can call these tools. Each is given as JSON with its name, what it does, and the JSON "
    "schema of its arguments:"
)
_TOOLS_FOOTER = (
    f'To call a tool, answer with only {CALL_OPEN}{{"name": ..., "arguments": {{...}}}}{CALL_CLOSE}, '
    "taking the arguments' values from the user's request. After a tool's result arrives, "
    "answer the user with it."
)


def chat_dicts(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[dict[str, str]]:
    """Role/content dicts for the chat template, with the tools' system section when given."""
    out = [{"role": m.role, "content": _content(m)} for m in messages]
    if tools:
        listing = "\n".join(
            json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters})
            for t in tools
        )
        section = f"{_TOOLS_HEADER}\n{listing}\n{_TOOLS_FOOTER}"
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{section}"}
        else:
            out.insert(0, {"role": "system", "content": section})
    return out


def _content(message: Message) -> str:
    calls = "".join(
        f"{CALL_OPEN}{json.dumps({'name': c.name, 'arguments': _arguments(c.arguments)})}"
        f"{CALL_CLOSE}"
        for c in message.tool_calls
    )
    return f"{message.content}{calls}"


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a malformed call from another model: show it as it was


def answer_grammar(
    tools: Sequence[ToolSpec], tool_choice: str, output_schema: Mapping[str, Any] | None
) -> str | None:
    """The GBNF grammar that constrains an answer, or `None` when nothing constrains it.

    The branches: one tool call (when tools are offered and `tool_choice` is not `"none"`), and
    the answer itself: JSON that fits `output_schema` when given, else (under `"auto"`) any text
    that does not start with `<`.

    Raises:
        UserError: `tool_choice` names no tool, or a schema cannot become a grammar.
    """
    names = [t.name for t in tools]
    if tool_choice not in ("auto", "required", "none", *names):
        raise UserError(
            f"tool_choice {tool_choice!r} is not 'auto', 'required', 'none' or one of the "
            f"tools {names!r}"
        )
    offered = (
        []
        if tool_choice == "none"
        else [t for t in tools if tool_choice in (t.name, "auto", "required")]
    )
    may_answer = not offered or tool_choice == "auto"
    if not offered and output_schema is None:
        return None
    branches: list[str] = []
    rules: list[str] = []
    if offered:
        variants = [
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": _bounded(t.parameters)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in offered
        ]
        schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
        rules.append(_schema_rules(schema, "tether-call", ["name", "arguments"]))
        branches.append(f"{json.dumps(CALL_OPEN)} tether-call {json.dumps(CALL_CLOSE)}")
    if may_answer and output_schema is not None:
        rules.append(_schema_rules(output_schema, "tether-output", []))
        branches.append("tether-output")
    elif may_answer:
        rules.append("tether-text ::= [^<] [^\\x00]*")
        branches.append("tether-text")
    return "\n".join([f"root ::= {' | '.join(branches)}", *rules])


STRING_LIMIT = 100
"""The most characters a tool-call string argument may have when its schema sets no `maxLength`.

Greedy decoding of a small model can loop inside a string ("query.query.query…"); a bound makes
every call close, so a call is never lost to `max_tokens`."""


def _bounded(schema: Any) -> Any:
    """`schema` with `maxLength: STRING_LIMIT` on every free-form string it holds."""
    if isinstance(schema, list):
        return [_bounded(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: _bounded(value) for key, value in schema.items()}
    free = not {"maxLength", "enum", "const", "pattern", "format"} & out.keys()
    if out.get("type") == "string" and free:
        out["maxLength"] = STRING_LIMIT
    return out


def _schema_rules(schema: Mapping[str, Any], name: str, order: list[str]) -> str:
    """The GBNF rules of a JSON schema, with its top rule renamed to `name`."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema), prop_order=order)
    except Exception as exc:  # the converter raises bare exceptions for schemas it cannot handle
        raise UserError(
            f"the JSON schema {dict(schema)!r} cannot be turned into a llama.cpp grammar "
            f"({exc}); simplify the types of the tool's parameters or of the output"
        ) from exc
    # The converter names its top rule `root` and its helpers after the schema's properties, so
    # two schemas may share a rule name (e.g. `space`): prefix every rule name with `name`,
    # outside string literals and character classes.
    rules = set(re.findall(r"^([a-zA-Z][\w-]*) ::=", gbnf, flags=re.MULTILINE))

    def rename(token: re.Match[str]) -> str:
        word = token.group(0)
        if word not in rules:
            return word
        return name if word == "root" else f"{name}-{word}"

    return _GBNF_TOKEN.sub(rename, gbnf)


# A GBNF string literal or character class (left as they are), or a word that may name a rule.
_GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[a-zA-Z][\w-]*')


@dataclass
class ToolCallParser:
    """Splits constrained output into text deltas and, once complete, one tool call.

    The first character decides: `<` starts a call (the grammar allows no text answer that starts
    with it), anything else is a text answer streamed as it comes. A call is held back until its
    closing tag, then handed out whole; a call cut short (a stop, `max_tokens`) is dropped.
    """

    # whether the answer may be a call at all (the grammar offers one); if not, all is text
    calls: bool = True
    # everything generated so far, while it may still be a tool call
    _held: str = ""
    # None until the first character arrives, then whether this answer is a tool call
    _is_call: bool | None = None
    # the call's id; fixed once the call is complete
    _call_id: str = field(default_factory=lambda: f"call_{new_id()}")
    # whether the call was handed out (at most once)
    done: bool = False

    def feed(self, text: str) -> list[ModelDelta]:
        """The deltas that the generated `text` completes."""
        if not text:
            return []
        if self._is_call is None:
            self._is_call = self.calls and text.startswith("<")
        if not self._is_call:
            return [TextDelta(text)]
        self._held += text
        if self.done or CALL_CLOSE not in self._held:
            return []
        self.done = True
        body = self._held[len(CALL_OPEN) : self._held.index(CALL_CLOSE)]
        try:
            call = json.loads(body)
            name, arguments = call["name"], call["arguments"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"the grammar-constrained tool call {body!r} did not parse") from exc
        return [
            ToolCallChunk(index=0, id=self._call_id, name=name, arguments=json.dumps(arguments))
        ]

    @property
    def is_call(self) -> bool:
        """Whether the answer so far is a tool call."""
        return bool(self._is_call)
