"""The stop contract inside `LocalModel`'s tool calling, at random stop points (hypothesis).

`LocalModel` runs as in production (its generation thread, hand-off, prompt rendering and
grammar-constrained call parsing), but over a scripted stand-in for `llama_cpp.Llama`, so that
hundreds of stops are cheap and deterministic. The real SmolLM2 runs in
`tests/models/test_local_tools.py`.

The script: a question gets a call written token by token (`<tool_call>{"name": ...}</tool_call>`),
the tool blocks until released, and the result gets a text answer. After a stop anywhere: S1, S4
(valid transcript, no half-written call kept; rollback restores), S5 (a new message works), S6 (no
registry entry, no generation thread left), S7.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.test_transcript import assert_valid_openai_transcript
from tests.graph._scenario import check_stop_record, check_terminal
from tether import Agent, InMemoryCheckpointer, RunFinished, tool
from tether.models import LocalModel

pytest.importorskip("llama_cpp")  # the grammar is built with llama-cpp-python's converter

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CALL = [
    "<",
    "tool",
    "_call",
    ">",
    '{"name": "search", ',
    '"arguments": {"query": "dra',
    'gons"}}',
    "</tool_call>",
]
ANSWER = ["Dragons ", "hoard ", "gold."]


class ScriptedLlama:
    """Just enough of `llama_cpp.Llama` for `LocalModel`: a ChatML template and scripted tokens.

    A prompt that ends with a user turn gets `CALL`, any other `ANSWER`; each token is one
    streamed chunk, as llama-cpp-python streams them.
    """

    metadata: ClassVar[dict[str, str]] = {"tokenizer.chat_template": CHATML}

    def token_eos(self) -> int:
        return 2

    def token_bos(self) -> int:
        return 1

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return {1: b"<|im_start|>", 2: b"<|im_end|>"}[tokens[0]]

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        self.last_prompt = text.decode()
        return list(text)

    def create_completion(self, prompt: list[int], **kwargs: Any) -> Iterator[dict[str, Any]]:
        turns = bytes(prompt).decode().split("<|im_start|>")
        script = CALL if turns[-2].startswith("user") else ANSWER  # [-1] is the answer's turn
        for piece in script:
            yield {"choices": [{"text": piece, "finish_reason": None}]}
        yield {"choices": [{"text": "", "finish_reason": "stop"}]}

    def close(self) -> None:
        pass


def local_model() -> LocalModel:
    model = LocalModel()
    model._llama = ScriptedLlama()  # the stand-in; loading is skipped when set
    return model


async def scenario(stop_after: int, mode: str) -> None:
    release = threading.Event()

    @tool
    def search(query: str) -> str:
        """Search the docs (a sync tool in a worker thread)."""
        release.wait(10)
        return f"notes on {query}"

    model = local_model()
    agent = Agent(model, tools=[search], checkpointer=InMemoryCheckpointer())
    with anyio.fail_after(20):
        release.set()
        await agent.ainvoke("warm up", thread_id="t")
        release.clear()
        before = await agent.aget_messages("t")
        events: list[Any] = []
        stopped = False
        async for event in agent.arun("Tell me about dragons", thread_id="t"):
            events.append(event)
            if len(events) == stop_after and not isinstance(event, RunFinished):
                stopped = await agent.astop(thread_id="t", mode=mode, wait=False)
                release.set()
            if event.type == "tool_call_started" and stop_after > len(events):
                release.set()
        release.set()
        final = check_terminal(events)
        record = await agent.aget_run(final.run_id)
        assert record is not None
        messages = await agent.aget_messages("t")
        assert_valid_openai_transcript(messages)
        new = messages[len(before) :]
        calls = [c for m in new for c in m.tool_calls]
        assert all(c.name == "search" and c.arguments == '{"query": "dragons"}' for c in calls)
        assert not any("<tool" in m.content for m in new)  # no half-written call kept as text
        if stopped and final.status == "cancelled":
            check_stop_record(record, mode=mode)
            if mode == "rollback":
                assert messages == before
        else:
            assert final.status == "completed"
            assert [m.role for m in new] == ["user", "assistant", "tool", "assistant"]
        assert agent.registry.size() == 0
        assert await anyio.to_thread.run_sync(model.wait_idle, 10)
        release.set()
        result = await agent.ainvoke("more?", thread_id="t")
        assert result["messages"][-1].content == "Dragons hoard gold."


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_after=st.integers(1, 30), mode=st.sampled_from(["now", "after_step", "rollback"]))
def test_local_tool_calls_stopped_anywhere_keep_the_contract(stop_after: int, mode: str) -> None:
    anyio.run(scenario, stop_after, mode)
