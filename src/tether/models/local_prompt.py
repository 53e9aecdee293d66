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
first token; `"required"` (or a tool's name) allows only a call. One call per answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.errors import ModelError, UserError
from tether.ids import new_id
from tether.messages import Message
from tether.models.base import ModelDelta, TextDelta, ToolCallChunk, ToolSpec

__all__ = ["CALL_CLOSE", "CALL_OPEN", "ToolCallParser", "chat_dicts", "tool_grammar"]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

_TOOLS_HEADER = (
    "You can call these tools. Each is given as JSON with its name, what it does, and the JSON "
    "schema of its arguments:"
)
_TOOLS_FOOTER = (
    f'To call a tool, answer with only {CALL_OPEN}{{"name": "<tool name>", "arguments": '
    f"{{<arguments>}}}}{CALL_CLOSE}. After a tool's result arrives, answer the user."
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


def tool_grammar(tools: Sequence[ToolSpec], tool_choice: str) -> str:
    """The GBNF grammar that constrains an answer to one tool call (or, with `"auto"`, text).

    Raises:
        UserError: `tool_choice` names no tool, or a tool's schema cannot become a grammar.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    names = [t.name for t in tools]
    if tool_choice in ("auto", "required"):
        chosen = list(tools)
    elif tool_choice in names:
        chosen = [t for t in tools if t.name == tool_choice]
    else:
        raise UserError(
            f"tool_choice {tool_choice!r} is not 'auto', 'required', 'none' or one of the "
            f"tools {names!r}"
        )
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in chosen
    ]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    try:
        call = json_schema_to_gbnf(json.dumps(schema), prop_order=["name", "arguments"])
    except Exception as exc:  # the converter raises bare exceptions for schemas it cannot handle
        raise UserError(
            f"the tools' argument schemas {[t.parameters for t in chosen]!r} cannot be turned "
            f"into a llama.cpp grammar ({exc}); simplify the tool's parameter types"
        ) from exc
    # The converter names its top rule `root`; it becomes one branch of ours.
    call = re.sub(r"^root ::=", "tether-call ::=", call, count=1, flags=re.MULTILINE)
    root = f"root ::= {json.dumps(CALL_OPEN)} tether-call {json.dumps(CALL_CLOSE)}"
    if tool_choice == "auto":
        root += " | tether-text\ntether-text ::= [^<] [^\\x00]*"
    return f"{root}\n{call}"


@dataclass
class ToolCallParser:
    """Splits constrained output into text deltas and, once complete, one tool call.

    The first character decides: `<` starts a call (the grammar allows no text answer that starts
    with it), anything else is a text answer streamed as it comes. A call is held back until its
    closing tag, then handed out whole; a call cut short (a stop, `max_tokens`) is dropped.
    """

    # everything generated so far, while it may still be a tool call; emptied once it is text
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
            self._is_call = text.startswith("<")
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
