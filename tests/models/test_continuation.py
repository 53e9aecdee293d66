"""True continuation: the exact prompt each provider receives to continue a stopped answer.

- llama.cpp's `llama-server` (`continuation="prefill"`): the messages end with the partial answer;
- vLLM (`"continue_final_message"`): the same, plus `continue_final_message: true` and
  `add_generation_prompt: false`;
- OpenAI and any other server (`"instruction"`, the fallback): the partial answer, then a user
  message asking to continue.

The SmolLM2 side (`LocalModel` prefill through the chat template) is in
`tests/models/test_local_continuation.py`.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from tests._openai_stub import finish_chunk, openai_stub, sse, text_chunk

from tether import Agent, InMemoryCheckpointer, UserError
from tether.messages import Message
from tether.models import CONTINUE_PROMPT, OpenAICompatible, TextDelta
from tether.testing import Gate

pytestmark = pytest.mark.anyio

WATCHDOG = 10.0
PARTIAL = Message.assistant("Once upon a", status="stopped")
CONVERSATION = [Message.user("Tell me a story"), PARTIAL]


async def _continue(continuation: Any) -> tuple[dict[str, Any], list[Any]]:
    with openai_stub(sse(text_chunk(" time"), finish_chunk("stop"))) as stub:
        model = OpenAICompatible(stub.base_url, "m", continuation=continuation)
        with anyio.fail_after(WATCHDOG):
            async with model.stream_continuation(CONVERSATION) as deltas:
                got = [d async for d in deltas]
        await model.aclose()
    return stub.requests[0], got


async def test_llama_server_prefill_sends_the_partial_answer_last_and_nothing_else() -> None:
    body, got = await _continue("prefill")
    assert body["messages"] == [
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": "Once upon a"},
    ]
    assert "continue_final_message" not in body
    assert TextDelta(" time") in got


async def test_vllm_continue_final_message_asks_for_it_explicitly() -> None:
    body, _ = await _continue("continue_final_message")
    assert body["messages"][-1] == {"role": "assistant", "content": "Once upon a"}
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False


async def test_openai_fallback_adds_one_user_message_asking_to_continue() -> None:
    body, _ = await _continue("instruction")
    assert body["messages"] == [
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": "Once upon a"},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]
    assert "continue_final_message" not in body


def test_unknown_continuation_is_a_user_error_naming_it() -> None:
    with pytest.raises(UserError, match=r"'prefil'"):
        OpenAICompatible("http://127.0.0.1:1/v1", "m", continuation="prefil")  # type: ignore[arg-type]


def test_continuing_a_conversation_that_ends_with_a_user_message_is_a_user_error() -> None:
    model = OpenAICompatible("http://127.0.0.1:1/v1", "m", continuation="prefill")
    with pytest.raises(UserError, match=r"'user'"):
        model.stream_continuation([Message.user("hi")])


async def test_agent_resume_prefills_and_appends_to_the_same_message() -> None:
    """Stop mid-answer, resume: the server gets the partial answer last, its text extends it."""
    gate = Gate("mid-answer")
    with openai_stub(
        sse(text_chunk("Once upon"), text_chunk(" a"), gate, text_chunk(" never sent")),
        sse(text_chunk(" time, a dragon"), finish_chunk("stop")),
    ) as stub:
        model = OpenAICompatible(stub.base_url, "m", continuation="prefill")
        agent = Agent(model, checkpointer=InMemoryCheckpointer(), instructions="Be brief.")
        with anyio.fail_after(WATCHDOG):
            async for event in agent.arun("Tell me a story", thread_id="t"):
                if event.type == "message_delta" and event.content == " a":
                    assert await agent.astop(thread_id="t")
            stopped = (await agent.aget_messages("t"))[-1]
            events = [e async for e in agent.aresume("t")]
        gate.release()
        await model.aclose()
    assert stopped.status == "stopped" and stopped.content == "Once upon a"
    assert events[-1].status == "completed"
    assert [e.content for e in events if e.type == "message_delta"] == [" time, a dragon"]
    assert stub.requests[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": "Once upon a"},
    ]
    messages = await agent.aget_messages("t")
    assert [(m.id, m.content, m.status) for m in messages[1:]] == [
        (stopped.id, "Once upon a time, a dragon", "complete")
    ]
