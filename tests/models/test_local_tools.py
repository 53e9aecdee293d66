"""`LocalModel` with the real SmolLM2: grammar-constrained tool calls and continuation by prefill."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anyio
import anyio.to_thread
import pytest

from tether.messages import Message
from tether.models import (
    CONTINUE_PROMPT,
    Finish,
    LocalModel,
    ModelDelta,
    ModelSettings,
    TextDelta,
    ToolCallChunk,
    ToolSpec,
)

pytestmark = [pytest.mark.llm, pytest.mark.anyio]

WATCHDOG = 300.0  # generous: grammar sampling on a loaded 2-core machine is slow
SEARCH = ToolSpec(
    "search",
    "Search the documentation.",
    {
        "type": "object",
        "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["query", "limit"],
    },
)
GREEDY = ModelSettings(temperature=0, max_tokens=40)


@pytest.fixture(scope="module")
def model(local_model_ready: None) -> Iterator[LocalModel]:
    model = LocalModel()
    yield model
    assert model.wait_idle(WATCHDOG)
    anyio.run(model.aclose)


async def _drain(
    model: LocalModel,
    messages: list[Message],
    *,
    tools: list[ToolSpec] = (),  # type: ignore[assignment]
    settings: ModelSettings = GREEDY,
    continuation: bool = False,
) -> list[ModelDelta]:
    call = model.stream_continuation if continuation else model.stream
    with anyio.fail_after(WATCHDOG):
        async with call(messages, tools=tools, settings=settings) as deltas:
            return [d async for d in deltas]


async def test_required_tool_choice_yields_one_call_whose_arguments_fit_the_schema(
    model: LocalModel,
) -> None:
    got = await _drain(
        model,
        [Message.user("Find the docs about stopping a run.")],
        tools=[SEARCH],
        settings=ModelSettings(temperature=0, max_tokens=60, tool_choice="required"),
    )
    calls = [d for d in got if isinstance(d, ToolCallChunk)]
    assert len(calls) == 1 and calls[0].name == "search" and calls[0].id
    arguments = json.loads(calls[0].arguments)
    assert set(arguments) == {"query", "limit"}
    assert isinstance(arguments["query"], str) and isinstance(arguments["limit"], int)
    assert not [d for d in got if isinstance(d, TextDelta)]
    assert got[-1] == Finish("tool_calls")


async def test_tool_choice_none_answers_in_text(model: LocalModel) -> None:
    got = await _drain(
        model,
        [Message.user("Say hello.")],
        tools=[SEARCH],
        settings=ModelSettings(temperature=0, max_tokens=12, tool_choice="none"),
    )
    assert "".join(d.text for d in got if isinstance(d, TextDelta)).strip()
    assert not [d for d in got if isinstance(d, ToolCallChunk)]


async def test_continuation_prompt_ends_with_the_partial_answer_mid_turn(
    model: LocalModel,
) -> None:
    messages = [Message.user("Tell me a story."), Message.assistant("Once upon a time, a")]
    prompt = await model.render_prompt(messages, continue_final=True)
    assert prompt.endswith(
        "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\nOnce upon a time, a"
    )
    assert CONTINUE_PROMPT not in prompt
    fresh = await model.render_prompt(messages[:1])
    assert prompt == fresh + "Once upon a time, a"  # the answer's own turn, not a new one


async def test_continuation_after_a_stop_extends_the_sentence_without_restarting(
    model: LocalModel,
) -> None:
    """Stop after a few words, continue by prefill: the new text carries on from the stopped
    words; it does not start the answer over."""
    question = [Message.user("Write one sentence about the sea.")]
    head = ""
    with anyio.fail_after(WATCHDOG):
        async with model.stream(question, settings=GREEDY) as deltas:
            async for delta in deltas:
                if isinstance(delta, TextDelta):
                    head += delta.text
                    if len(head.split()) >= 4:
                        break
    assert await anyio.to_thread.run_sync(model.wait_idle, WATCHDOG)
    tail_deltas = await _drain(
        model,
        [*question, Message.assistant(head, status="stopped")],
        settings=ModelSettings(temperature=0, max_tokens=12),
        continuation=True,
    )
    tail = "".join(d.text for d in tail_deltas if isinstance(d, TextDelta))
    assert tail.strip()
    assert not tail.lstrip().startswith(head.split()[0])  # no restart of the answer
    assert "<|im_start|>" not in tail and "<|im_end|>" not in tail
