"""The stop contract through both front-end protocols, at random stop points (hypothesis).

Each example streams a scripted answer of `TOKENS` through `/ai-sdk/chat` or `/ag-ui` (over ASGI)
and stops the run at a random token (a gate parks the model there) from the server side. Then:
the protocol stream ends with its own end event (never truncated), the run is `cancelled`, the
thread holds exactly the streamed prefix as a `stopped` answer, and the next message on the same
thread completes and sees it.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.server._chat import chat_app
from tether.server import create_app
from tether.testing import Gate, ScriptedModel

TOKENS = ["Once", " upon", " a", " time", " there", " was"]


def request(
    protocol: str, thread_id: str, text: str, message_id: str
) -> tuple[str, dict[str, Any]]:
    if protocol == "ai-sdk":
        return "/ai-sdk/chat", {
            "id": thread_id,
            "messages": [
                {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}
            ],
        }
    return "/ag-ui", {
        "threadId": thread_id,
        "runId": f"client-{message_id}",
        "messages": [{"id": message_id, "role": "user", "content": text}],
    }


def chunks(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def scenario(protocol: str, stop_at: int) -> None:
    gate = Gate("stop-here")
    model = ScriptedModel([*TOKENS[:stop_at], gate, *TOKENS[stop_at:]], "Next answer.")
    app = chat_app(model)
    api = create_app(app)
    responses: list[httpx.Response] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as c:
        path, body = request(protocol, "t", "tell me", "u1")

        async def post() -> None:
            responses.append(await c.post(path, json=body))

        with anyio.fail_after(30) as watchdog:
            async with anyio.create_task_group() as tg:
                tg.start_soon(post)
                await gate.reached()
                assert await app.astop(thread_id="t", reason="random stop")
            [r] = responses
            sent = chunks(r.text)
            partial = "".join(TOKENS[:stop_at])
            if protocol == "ai-sdk":
                assert sent[-1] == "[DONE]"
                assert sent[-2]["type"] == "finish"
                assert sent[-2]["messageMetadata"]["tether"]["status"] == "cancelled"
                streamed = "".join(c["delta"] for c in sent[:-1] if c["type"] == "text-delta")
                kinds = [c["type"] for c in sent[:-1]]
                assert kinds.count("text-start") == kinds.count("text-end")
            else:
                assert sent[-1]["type"] == "RUN_FINISHED" and sent[-1]["outcome"] == {
                    "type": "cancelled"
                }
                streamed = "".join(e["delta"] for e in sent if e["type"] == "TEXT_MESSAGE_CONTENT")
                kinds = [e["type"] for e in sent]
                assert kinds.count("TEXT_MESSAGE_START") == kinds.count("TEXT_MESSAGE_END")
                assert kinds.count("STEP_STARTED") == kinds.count("STEP_FINISHED")
            assert streamed == partial
            [run] = await app.alist_runs("t")
            assert run.status == "cancelled" and run.stop_reason == "random stop"
            messages = (await app.aget_state("t")).values["messages"]
            expected = [("user", "tell me", "complete")]
            if partial:
                expected.append(("assistant", partial, "stopped"))
            assert [(m.role, m.content, m.status) for m in messages] == expected

            path, body = request(protocol, "t", "go on", "u2")
            nxt = await c.post(path, json=body)
            assert nxt.status_code == 200
            messages = (await app.aget_state("t")).values["messages"]
            assert [(m.role, m.status) for m in messages[-2:]] == [
                ("user", "complete"),
                ("assistant", "complete"),
            ]
            assert messages[-1].content == "Next answer."
            assert [m.content for m in model.calls[1] if m.role == "assistant"] == (
                [partial] if partial else []
            )
        assert not watchdog.cancelled_caught


@settings(max_examples=14, deadline=None)
@given(protocol=st.sampled_from(["ai-sdk", "ag-ui"]), stop_at=st.integers(0, len(TOKENS)))
def test_a_stop_anywhere_ends_the_protocol_stream_cleanly_and_the_thread_continues(
    protocol: str, stop_at: int
) -> None:
    anyio.run(scenario, protocol, stop_at)
