"""The Vercel AI SDK (`ai` on npm) drives `/ai-sdk/chat` on a real uvicorn server.

`node/ai_sdk_chat.mjs` uses the SDK's own `AbstractChat` + `DefaultChatTransport` (what `useChat`
is made of): it sends a message, calls `stop()` mid-answer (once in the text, once while a tool
runs), then sends the next message on the same chat. These tests check what the client saw and,
over tether's REST API, what the server kept.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import httpx
import pytest

from tests.server._client import Server

from .conftest import NodeClients

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def chat(served: Server, node_clients: NodeClients) -> dict[str, Any]:
    return dict(node_clients.run("ai_sdk_chat.mjs", served.url))


def text(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def server_view(
    served: Server, thread_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The thread's messages and its runs (oldest first), from tether's REST API."""
    with httpx.Client(base_url=served.url, timeout=30) as c:
        thread = c.get(f"/threads/{thread_id}").raise_for_status().json()
        runs = c.get(f"/threads/{thread_id}/runs").raise_for_status().json()
    return thread["messages"], list(reversed(runs))


def test_stop_in_the_text_cancels_the_run_keeps_the_partial_and_the_chat_continues(
    chat: dict[str, Any], served: Server
) -> None:
    seen = chat["text"]
    # The client: the partial answer stays in the chat after stop(), and the next answer arrives.
    assert text(seen["stoppedMessage"]) == "Hello"
    assert seen["stoppedMessage"]["metadata"]["tether"]["threadId"] == seen["chatId"]
    assert seen["afterStop"]["status"] == "ready"
    assert [text(m) for m in seen["afterStop"]["messages"]] == ["hi", "Hello"]
    assert seen["finishes"][0]["isAbort"] is True
    final = seen["final"]
    assert final["status"] == "ready" and final["error"] is None
    assert text(final["messages"][-1]) == "You said: go on. Before that I said: Hello (stopped)."
    last_meta = final["messages"][-1]["metadata"]["tether"]
    assert (last_meta["status"], last_meta["reason"]) == ("completed", None)

    # The server: run cancelled by the disconnect, partial kept as stopped, thread continued.
    messages, runs = server_view(served, seen["chatId"])
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "hi", "complete"),
        ("assistant", "Hello", "stopped"),
        ("user", "go on", "complete"),
        ("assistant", "You said: go on. Before that I said: Hello (stopped).", "complete"),
    ]
    assert [(r["status"], r["stop_requested_by"]) for r in runs] == [
        ("cancelled", "disconnect"),
        ("completed", None),
    ]
    assert runs[0]["run_id"] == seen["stoppedMessage"]["metadata"]["tether"]["runId"]


def test_stop_during_a_tool_call_gives_it_a_cancelled_result_and_the_chat_continues(
    chat: dict[str, Any], served: Server
) -> None:
    seen = chat["tool"]
    parts = seen["stoppedMessage"]["parts"]
    assert [p["type"] for p in parts if p["type"] != "step-start"] == ["text", "tool-lookup"]
    tool_part = next(p for p in parts if p["type"] == "tool-lookup")
    assert tool_part["input"] == {"query": "tides"} and tool_part["state"] == "input-available"
    assert seen["afterStop"]["status"] == "ready"
    assert seen["final"]["status"] == "ready" and seen["final"]["error"] is None

    messages, runs = server_view(served, seen["chatId"])
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),  # "Let me look." with the tool call
        ("tool", "cancelled"),  # the synthetic result of the stopped call
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[1]["tool_calls"][0]["id"] == tool_part["toolCallId"]
    assert messages[2]["tool_call_id"] == tool_part["toolCallId"]
    assert [(r["status"], r["stop_requested_by"]) for r in runs] == [
        ("cancelled", "disconnect"),
        ("completed", None),
    ]


@pytest.mark.anyio
async def test_ui_message_stream_wire_format_and_a_stop_from_elsewhere_is_marked(
    make_served: Any,
) -> None:
    """Over ASGI: the exact chunks, and a server-side stop ends with abort + finish(cancelled)."""
    from tether.testing import Gate

    gate = Gate("g")
    served = await make_served(["Hi", " there", gate, " never"])
    body = {
        "id": "chat-1",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hello"}]}],
        "trigger": "submit-message",
    }
    responses: list[httpx.Response] = []

    async def post() -> None:
        responses.append(await served.client.post("/ai-sdk/chat", json=body))

    with anyio.fail_after(30) as watchdog:
        async with anyio.create_task_group() as tg:
            tg.start_soon(post)
            await gate.reached()  # the answer so far is "Hi there"
            assert await served.app.astop(thread_id="chat-1", reason="enough")
    assert not watchdog.cancelled_caught
    [r] = responses
    assert r.status_code == 200
    assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("data: [DONE]\n\n")
    chunks: list[Any] = []
    for line in r.text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            chunks.append(data if data == "[DONE]" else json.loads(data))
    kinds = [c if c == "[DONE]" else c["type"] for c in chunks]
    assert kinds == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "abort",
        "finish",
        "[DONE]",
    ]
    message_id = chunks[2]["id"]
    assert chunks[5] == {"type": "text-end", "id": message_id}
    assert chunks[6] == {"type": "abort", "reason": "enough"}
    assert chunks[7]["finishReason"] == "other"
    assert chunks[7]["messageMetadata"]["tether"]["status"] == "cancelled"
    assert chunks[0]["messageMetadata"]["tether"] == {
        "threadId": "chat-1",
        "runId": chunks[0]["messageId"],
    }
    state = await served.app.aget_state("chat-1")
    assert [(m.role, m.content, m.status) for m in state.values["messages"]] == [
        ("user", "hello", "complete"),
        ("assistant", "Hi there", "stopped"),
    ]


@pytest.mark.anyio
async def test_bad_requests_get_clear_errors_and_lose_nothing(make_served: Any) -> None:
    served = await make_served()
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hello"}]}
    regen = await served.client.post(
        "/ai-sdk/chat", json={"id": "c", "messages": [user], "trigger": "regenerate-message"}
    )
    assert regen.status_code == 422 and "regenerate-message" in regen.text
    no_user = await served.client.post(
        "/ai-sdk/chat",
        json={"id": "c", "messages": [{"id": "a", "role": "assistant", "parts": []}]},
    )
    assert no_user.status_code == 422 and "no new message" in no_user.text
    unknown_app = await served.client.post(
        "/ai-sdk/chat", params={"app": "nope"}, json={"id": "c2", "messages": [user]}
    )
    assert unknown_app.status_code == 422 and "'nope'" in unknown_app.text
    assert (await served.app.aget_state("c")).values.get("messages", []) == []


@pytest.mark.anyio
async def test_api_keys_guard_both_protocol_endpoints_and_threads_stay_private(
    make_served: Any,
) -> None:
    served = await make_served(api_keys={"alice-key-123": "alice", "bob-key-4567": "bob"})
    a = {"Authorization": "Bearer alice-key-123"}
    b = {"X-API-Key": "bob-key-4567"}
    ui_body = {
        "id": "private",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
    }
    ag_body = {
        "threadId": "private",
        "runId": "r",
        "messages": [{"id": "u9", "role": "user", "content": "hi"}],
    }
    assert (await served.client.post("/ai-sdk/chat", json=ui_body)).status_code == 401
    assert (await served.client.post("/ag-ui", json=ag_body)).status_code == 401
    ok = await served.client.post("/ai-sdk/chat", json=ui_body, headers=a)
    assert ok.status_code == 200 and ok.text.endswith("data: [DONE]\n\n")
    # Bob can neither continue nor read Alice's thread through either protocol: his "private"
    # is his own thread (each key has its own thread ids), and his runs see only his messages.
    bob_ui = await served.client.post("/ai-sdk/chat", json=ui_body, headers=b)
    assert bob_ui.status_code == 200 and '"threadId":"private"' in bob_ui.text
    assert (await served.client.post("/ag-ui", json=ag_body, headers=b)).status_code == 200
    bob_view = (await served.client.get("/threads/private", headers=b)).json()
    assert [m["role"] for m in bob_view["messages"]] == ["user", "assistant"] * 2
    alice_id = f"{hashlib.sha256(b'alice-key-123').hexdigest()[:16]}:private"
    messages = (await served.app.aget_state(alice_id)).values["messages"]
    assert [m.role for m in messages] == ["user", "assistant"]


def test_tool_approval_uses_the_sdks_own_approval_parts_and_resumes_on_the_answer(
    chat: dict[str, Any], served: Server
) -> None:
    """A run paused before a tool that requires approval turns the call's tool part to
    `approval-requested`; `addToolApprovalResponse` (sent automatically) resumes the run: an
    approved call runs (`output-available`), a rejected one is `output-denied`."""
    seen = chat["approval"]
    assert seen["error"] is None and seen["status"] == "ready"

    def send_part(message: dict[str, Any]) -> dict[str, Any]:
        return next(p for p in message["parts"] if p["type"] == "tool-send")

    asked = send_part(seen["askedAda"])
    assert asked["state"] == "approval-requested" and asked["input"] == {"to": "ada"}
    interrupt = next(p for p in seen["askedAda"]["parts"] if p["type"] == "data-interrupt")
    assert interrupt["data"]["value"]["type"] == "tool_approval"
    assert asked["approval"]["id"] == f"{interrupt['data']['id']}:{asked['toolCallId']}"
    paused_meta = seen["finishes"][0]["metadata"]["tether"]
    assert paused_meta["status"] == "interrupted"
    assert paused_meta["interrupt"]["id"] == interrupt["data"]["id"]

    done = send_part(seen["approved"])
    assert done["state"] == "output-available" and done["output"] == "sent to ada"
    assert done["toolCallId"] == asked["toolCallId"]
    assert text(seen["approved"]).endswith(
        "You said: message ada. Before that I said: Sending. (complete)."
    )
    assert seen["finishes"][1]["metadata"]["tether"]["status"] == "completed"

    denied = send_part(seen["rejected"])
    assert send_part(seen["askedBob"])["state"] == "approval-requested"
    assert denied["state"] == "output-denied"
    assert denied["approval"]["approved"] is False and denied["approval"]["reason"] == "not bob"

    messages, runs = server_view(served, seen["chatId"])
    tools = [m for m in messages if m["role"] == "tool"]
    assert [t["content"] for t in tools] == [
        "sent to ada",
        "Rejected: the user did not allow this tool call. Reason: not bob",
    ]
    assert [r["status"] for r in runs] == ["interrupted", "completed", "interrupted", "completed"]


def _approval_client() -> tuple[httpx.AsyncClient, Any]:
    """An agent whose model asks for two calls of `send` (which requires approval), served over
    ASGI."""
    from tether import Agent, InMemoryCheckpointer, tool
    from tether.server import create_app
    from tether.testing import ScriptedModel, ToolCallStep

    @tool(requires_approval=True)
    def send(to: str) -> str:
        """Send a message."""
        return f"sent to {to}"

    model = ScriptedModel(
        [ToolCallStep("send", {"to": "ada"}, id="c1"), ToolCallStep("send", {"to": "bo"}, id="c2")],
        default_reply="Done.",
    )
    agent = Agent(model, tools=[send], name="mail", checkpointer=InMemoryCheckpointer())
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(create_app(agent)), base_url="http://tether"
    )
    return client, agent


def _chunks(r: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in r.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


@pytest.mark.anyio
async def test_approval_wire_format_and_answers_that_do_not_fit_are_refused() -> None:
    client, agent = _approval_client()
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "send both"}]}
    async with client:
        with anyio.fail_after(30):
            r = await client.post("/ai-sdk/chat", json={"id": "c", "messages": [user]})
        chunks = _chunks(r)
        kinds = [c["type"] for c in chunks]
        assert kinds[-5:] == [
            "finish-step",
            "data-interrupt",
            "tool-approval-request",
            "tool-approval-request",
            "finish",
        ]
        pause = chunks[-4]["data"]
        assert chunks[-4]["id"] == pause["id"]
        assert [c["toolCallId"] for c in chunks[-3:-1]] == ["c1", "c2"]
        assert [c["approvalId"] for c in chunks[-3:-1]] == [
            f"{pause['id']}:c1",
            f"{pause['id']}:c2",
        ]
        assert kinds.count("tool-input-available") == 2  # announced before their approval requests

        def answered(*approvals: tuple[str, str, bool]) -> dict[str, Any]:
            parts = [
                {
                    "type": "tool-send",
                    "toolCallId": call,
                    "state": "approval-responded",
                    "input": {},
                    "approval": {"id": approval, "approved": ok},
                }
                for call, approval, ok in approvals
            ]
            return {
                "id": "c",
                "messages": [user, {"id": "a1", "role": "assistant", "parts": parts}],
                "messageId": "a1",
            }

        one = await client.post("/ai-sdk/chat", json=answered(("c1", f"{pause['id']}:c1", True)))
        assert one.status_code == 422 and "'c2'" in one.text
        stale = await client.post(
            "/ai-sdk/chat",
            json=answered(("c1", "old:c1", True), ("c2", f"{pause['id']}:c2", True)),
        )
        assert stale.status_code == 422 and "'c1'" in stale.text
        assert (await agent.aget_state("c")).metadata["interrupt"]["id"] == pause["id"]

        with anyio.fail_after(30):
            r = await client.post(
                "/ai-sdk/chat",
                json=answered(
                    ("c1", f"{pause['id']}:c1", True), ("c2", f"{pause['id']}:c2", False)
                ),
            )
        assert r.status_code == 200, r.text
        chunks = _chunks(r)
        outputs = [c for c in chunks if c["type"].startswith("tool-output")]
        assert sorted(outputs, key=lambda c: c["toolCallId"]) == [
            {"type": "tool-output-available", "toolCallId": "c1", "output": "sent to ada"},
            {"type": "tool-output-denied", "toolCallId": "c2"},
        ]
        assert chunks[-1]["messageMetadata"]["tether"]["status"] == "completed"
        again = await client.post(
            "/ai-sdk/chat",
            json=answered(("c1", f"{pause['id']}:c1", True), ("c2", f"{pause['id']}:c2", True)),
        )
        assert again.status_code == 422 and "waits for none" in again.text
