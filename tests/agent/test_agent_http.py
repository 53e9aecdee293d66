"""Agents over real HTTP: a scripted OpenAI-style server (tool calls) and llama.cpp with SmolLM2."""

from __future__ import annotations

import statistics
import time

import anyio
import pytest

from tests._openai_stub import finish_chunk, openai_stub, sse, text_chunk, tool_chunk
from tests.core.test_transcript import assert_valid_openai_transcript
from tether import Agent, InMemoryCheckpointer, MessageDeltaEvent, tool
from tether.models import ModelSettings, OpenAICompatible
from tether.testing import Gate

pytestmark = pytest.mark.anyio


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def test_streamed_tool_calls_run_and_the_answer_follows() -> None:
    with openai_stub(
        sse(
            tool_chunk(0, id="c1", name="weather", arguments='{"ci'),
            tool_chunk(0, arguments='ty": "Oslo"}'),
            finish_chunk("tool_calls"),
        ),
        sse(text_chunk("It is "), text_chunk("sunny."), finish_chunk("stop")),
    ) as stub:
        agent = Agent(
            OpenAICompatible(stub.base_url, "stub"),
            tools=[weather],
            checkpointer=InMemoryCheckpointer(),
        )
        result = await agent.ainvoke("Weather in Oslo?", thread_id="t")
    messages = result["messages"]
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[2].content == "sunny in Oslo"
    assert messages[-1].content == "It is sunny."
    second = stub.requests[1]["messages"]
    assert second[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'
    assert second[2] == {"role": "tool", "content": "sunny in Oslo", "tool_call_id": "c1"}


async def test_stop_mid_stream_closes_the_http_response_and_keeps_the_partial() -> None:
    gate = Gate()
    with openai_stub(
        sse(text_chunk("Partial "), text_chunk("answer"), gate, text_chunk(" never")),
        sse(text_chunk("Continuing."), finish_chunk("stop")),
    ) as stub:
        agent = Agent(OpenAICompatible(stub.base_url, "stub"), checkpointer=InMemoryCheckpointer())
        async for event in agent.arun("Hi", thread_id="t"):
            if isinstance(event, MessageDeltaEvent) and event.content == "answer":
                await gate.reached()
                assert await agent.astop(thread_id="t")
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(stub.disconnected.wait, 10)
        messages = await agent.aget_messages("t")
        assert (messages[-1].content, messages[-1].status) == ("Partial answer", "stopped")
        await agent.ainvoke("and?", thread_id="t")
    sent = stub.requests[1]["messages"]
    assert sent[-2] == {"role": "assistant", "content": "Partial answer"}
    assert_valid_openai_transcript(await agent.aget_messages("t"))


async def _first_token_seconds(model: OpenAICompatible) -> float:
    from tether import Message

    start = time.perf_counter()
    async with model.stream(
        [Message.user("Say hi.")], settings=ModelSettings(max_tokens=4)
    ) as deltas:
        async for _ in deltas:
            return time.perf_counter() - start
    return time.perf_counter() - start


@pytest.mark.llm
async def test_agent_stop_on_a_real_llm_leaves_the_server_idle_and_the_thread_usable(
    llama_base_url: str,
) -> None:
    """After a stop mid-stream, a fresh request's first token comes within 2x the idle baseline.

    Each round runs the same long prompt twice, each followed by a probe request: once capped at
    5 tokens (it ends by itself: the idle baseline, with the same prompt cache state), once
    stopped after 5 tokens. A leaked connection would keep the server generating up to 1,500
    tokens and the probe would queue behind them.
    """
    prompt = "Write a very long story about a dragon who learns to code."
    model = OpenAICompatible(llama_base_url, "smollm2")
    agent = Agent(
        model,
        checkpointer=InMemoryCheckpointer(),
        settings=ModelSettings(max_tokens=1500, temperature=0),
    )
    capped = Agent(
        model,
        checkpointer=InMemoryCheckpointer(),
        settings=ModelSettings(max_tokens=5, temperature=0),
    )
    idle, after = [], []
    with anyio.fail_after(300):
        await _first_token_seconds(model)  # warm up
        for round_ in range(5):
            await capped.ainvoke(prompt, thread_id=f"capped-{round_}")
            idle.append(await _first_token_seconds(model))
            thread = f"story-{round_}"
            deltas = 0
            async for event in agent.arun(prompt, thread_id=thread):
                if isinstance(event, MessageDeltaEvent):
                    deltas += 1
                    if deltas == 5:
                        assert await agent.astop(thread_id=thread)
            after.append(await _first_token_seconds(model))
            stopped = (await agent.aget_messages(thread))[-1]
            assert stopped.status == "stopped" and stopped.content
        result = await agent.ainvoke("Give the dragon a name, in one word.", thread_id="story-0")
    assert result["messages"][-1].status == "complete"
    assert statistics.median(after) <= 2 * statistics.median(idle), (idle, after)
    await model.aclose()
