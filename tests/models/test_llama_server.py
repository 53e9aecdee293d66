"""`OpenAICompatible` against a real llama.cpp server running SmolLM2-135M-Instruct."""

from __future__ import annotations

import statistics
import time

import anyio
import pytest

from tether.messages import Message
from tether.models import Finish, ModelSettings, OpenAICompatible, TextDelta

pytestmark = [pytest.mark.anyio, pytest.mark.llm]

WATCHDOG = 60.0
# The request a fresh client makes; its time to first token is what the idle check compares.
PROBE = [Message.user("Say hello.")]
# The request that is stopped mid-stream; it would run for a long time if nobody stopped it.
LONG = [Message.user("Write a very long story about a dragon who learns to bake bread.")]
TOKENS_BEFORE_STOP = 8


async def _first_token_seconds(model: OpenAICompatible) -> float:
    start = time.perf_counter()
    async with model.stream(PROBE, settings=ModelSettings(max_tokens=4, temperature=0)) as deltas:
        async for delta in deltas:
            if isinstance(delta, TextDelta):
                return time.perf_counter() - start
    raise AssertionError("the probe produced no text")


async def _long_request(model: OpenAICompatible, *, max_tokens: int, stop_after: int) -> int:
    """Stream the long request; stop (by cancelling) after `stop_after` text deltas."""
    seen = 0
    settings = ModelSettings(max_tokens=max_tokens, temperature=0)
    with anyio.CancelScope() as scope:
        async with model.stream(LONG, settings=settings) as deltas:
            async for delta in deltas:
                if isinstance(delta, TextDelta):
                    seen += 1
                    if seen == stop_after:
                        scope.cancel()
    return seen


async def test_streams_text_from_smollm2(llama_base_url: str) -> None:
    model = OpenAICompatible(llama_base_url, "smollm2")
    with anyio.fail_after(WATCHDOG):
        async with model.stream(PROBE, settings=ModelSettings(max_tokens=16)) as deltas:
            got = [d async for d in deltas]
    await model.aclose()
    text = "".join(d.text for d in got if isinstance(d, TextDelta))
    assert len([d for d in got if isinstance(d, TextDelta)]) > 1  # it streamed, token by token
    assert text.strip()
    assert Finish("length") in got


async def test_server_is_idle_right_after_a_mid_stream_stop(llama_base_url: str) -> None:
    """After a stop, a fresh request's first token comes within 2x the idle baseline.

    Each round runs the long prompt twice, each followed by the probe: once to a small
    `max_tokens` (it ends by itself: the idle baseline), once stopped after as many tokens. The
    rounds interleave the two so that load from other processes hits both alike. If the stopped
    request's connection leaked, the server would keep generating it (interrupt_requests is off)
    and the probe would wait behind up to 2000 tokens.
    """
    model = OpenAICompatible(llama_base_url, "smollm2")
    baseline: list[float] = []
    after_stop: list[float] = []
    with anyio.fail_after(WATCHDOG):
        await _first_token_seconds(model)  # warm up
        for _ in range(5):
            await _long_request(model, max_tokens=TOKENS_BEFORE_STOP, stop_after=10**6)
            baseline.append(await _first_token_seconds(model))
            seen = await _long_request(model, max_tokens=2000, stop_after=TOKENS_BEFORE_STOP)
            assert seen == TOKENS_BEFORE_STOP
            after_stop.append(await _first_token_seconds(model))
    await model.aclose()
    idle, stopped = statistics.median(baseline), statistics.median(after_stop)
    assert stopped <= 2 * idle, f"first token after a stop {stopped:.3f}s vs idle {idle:.3f}s"
