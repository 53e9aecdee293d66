"""AG-UI's official client (`@ag-ui/client`'s `HttpAgent`) drives `/ag-ui` on a real uvicorn server.

`node/ag_ui_agent.mjs` runs two scenarios: `abortRun()` mid-answer and then the next message, and a
stop from elsewhere (the REST cancel endpoint) while the client listens. The client's own event
verifier rejects any stream that breaks the protocol (a truncated one included).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from tests.server._client import Server
from tether import MessagesState
from tether.testing import Gate

from .conftest import NodeClients

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def agui(served: Server, node_clients: NodeClients) -> dict[str, Any]:
    return dict(node_clients.run("ag_ui_agent.mjs", served.url))


def server_view(
    served: Server, thread_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The thread's messages and its runs (oldest first), from tether's REST API."""
    with httpx.Client(base_url=served.url, timeout=30) as c:
        thread = c.get(f"/threads/{thread_id}").raise_for_status().json()
        runs = c.get(f"/threads/{thread_id}/runs").raise_for_status().json()
    return thread["messages"], list(reversed(runs))


def test_abort_run_cancels_the_run_keeps_the_partial_and_the_thread_continues(
    agui: dict[str, Any], served: Server
) -> None:
    seen = agui["abort"]
    stopped = seen["stopped"]
    assert stopped["types"][:2] == ["RUN_STARTED", "STEP_STARTED"]
    assert stopped["types"].count("TEXT_MESSAGE_CONTENT") == 2
    partial = [m for m in stopped["messages"] if m["role"] == "assistant"]
    assert [m["content"] for m in partial] == ["Hello"]

    nxt = seen["next"]
    assert nxt["errors"] == []
    assert nxt["types"][0] == "RUN_STARTED" and nxt["types"][-1] == "RUN_FINISHED"
    assert nxt["finished"] == [
        {"outcome": "success", "result": {"status": "completed", "reason": None}}
    ]
    assert nxt["messages"][-1]["content"] == "You said: go on. Before that I said: Hello (stopped)."

    messages, runs = server_view(served, seen["threadId"])
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "hi", "complete"),
        ("assistant", "Hello", "stopped"),
        ("user", "go on", "complete"),
        ("assistant", "You said: go on. Before that I said: Hello (stopped).", "complete"),
    ]
    assert messages[1]["id"] == partial[0]["id"]  # AG-UI's message ids are tether's
    assert [(r["status"], r["stop_requested_by"]) for r in runs] == [
        ("cancelled", "disconnect"),
        ("completed", None),
    ]
    assert runs[0]["run_id"] == stopped["runId"]


def test_a_stop_from_elsewhere_ends_the_clients_stream_with_run_finished_cancelled(
    agui: dict[str, Any], served: Server
) -> None:
    seen = agui["elsewhere"]
    assert seen["cancelStatus"] == 200
    assert seen["errors"] == []
    assert seen["types"][-3:] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]
    assert seen["last"]["outcome"] == {"type": "cancelled"}
    assert seen["last"]["result"] == {"status": "cancelled", "reason": "stopped elsewhere"}
    assert seen["last"]["runId"] == seen["runId"] and seen["last"]["threadId"] == seen["threadId"]
    assert seen["finished"] == [{"outcome": "cancelled", "result": seen["last"]["result"]}]
    assert [m["content"] for m in seen["messages"] if m["role"] == "assistant"] == ["Partial"]

    messages, runs = server_view(served, seen["threadId"])
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "hi", "complete"),
        ("assistant", "Partial", "stopped"),
    ]
    assert [(r["status"], r["stop_requested_by"]) for r in runs] == [("cancelled", "user")]


class Greeting(MessagesState):
    """A conversation and a name that a node asks a person for."""

    name: str


def events_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.anyio
async def test_tool_calls_and_results_and_a_stop_during_a_tool_stream_as_ag_ui_events(
    make_served: Any,
) -> None:
    """Over ASGI: the exact events when a stop lands in a tool (the result is the cancelled one)."""
    from tests.server._chat import chat_app
    from tether import tool
    from tether.server import create_app
    from tether.testing import ScriptedModel, ToolCallStep

    gate = Gate("tool")

    @tool
    async def lookup(query: str) -> str:
        """Look something up."""
        await gate.wait()
        return "never"

    model = ScriptedModel(["Looking.", ToolCallStep("lookup", {"query": "tides"}, id="c1")])
    app = chat_app(model, tools=[lookup])
    api = create_app(app)
    body = {
        "threadId": "t-ag",
        "runId": "client-run-1",
        "messages": [{"id": "u1", "role": "user", "content": "tides?"}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }
    responses: list[httpx.Response] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as c:

        async def post() -> None:
            responses.append(await c.post("/ag-ui", json=body))

        with anyio.fail_after(30) as watchdog:
            async with anyio.create_task_group() as tg:
                tg.start_soon(post)
                await gate.reached()
                assert await app.astop(thread_id="t-ag", reason="enough")
        assert not watchdog.cancelled_caught
    [r] = responses
    events = events_of(r.text)
    assert [e["type"] for e in events] == [
        "RUN_STARTED",
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "STEP_FINISHED",
        "STEP_STARTED",
        "TOOL_CALL_RESULT",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    answer_id = events[2]["messageId"]
    assert events[5] == {
        "type": "TOOL_CALL_START",
        "toolCallId": "c1",
        "toolCallName": "lookup",
        "parentMessageId": answer_id,
    }
    assert json.loads(events[6]["delta"]) == {"query": "tides"}
    assert events[10]["toolCallId"] == "c1" and events[10]["role"] == "tool"
    assert events[-1]["outcome"] == {"type": "cancelled"}
    assert events[0]["runId"] == events[-1]["runId"] != "client-run-1"
    run = await app.aget_run(events[0]["runId"])
    assert run is not None and run.metadata["ag_ui_run_id"] == "client-run-1"
    state = await app.aget_state("t-ag")
    assert [(m.role, m.status) for m in state.values["messages"]] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("tool", "cancelled"),
    ]
    assert state.values["messages"][2].id == events[10]["messageId"]


@pytest.mark.anyio
async def test_a_failed_run_ends_with_run_error_and_bad_input_is_refused(make_served: Any) -> None:
    served = await make_served(default_reply=None)  # no scripted turn: the model call fails
    body = {
        "threadId": "t-err",
        "runId": "r",
        "messages": [{"id": "u1", "role": "user", "content": "hi"}],
    }
    r = await served.client.post("/ag-ui", json=body)
    events = events_of(r.text)
    assert events[0]["type"] == "RUN_STARTED"
    assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == "run_failed"
    bad = await served.client.post("/ag-ui", json={"threadId": "t-err"})
    assert bad.status_code == 422
    again = await served.client.post("/ag-ui", json=body)  # u1 is already on the thread
    assert again.status_code == 422 and "no new message" in again.text


def test_tool_approval_is_an_ag_ui_interrupt_answered_by_resume_entries(
    agui: dict[str, Any], served: Server
) -> None:
    """A run paused before a tool that requires approval ends with RUN_FINISHED's interrupt
    outcome (one interrupt per call, with its `toolCallId`); the client's `runAgent({resume})`
    resumes it: approved, the tool runs; rejected, the model gets the rejection."""
    seen = agui["approval"]
    asked = seen["askedAda"]
    assert asked["errors"] == [] and asked["types"][-1] == "RUN_FINISHED"
    assert [f["outcome"] for f in asked["finished"]] == ["interrupt"]
    [pending] = asked["pending"]
    assert pending["reason"] == "tool_approval"
    assert pending["metadata"]["tether"] == {"name": "send", "arguments": {"to": "ada"}, "path": []}
    assert pending["id"].endswith(":" + pending["toolCallId"])
    assert pending["responseSchema"]["required"] == ["approved"]

    approved = seen["approved"]
    assert approved["errors"] == [] and approved["pending"] == []
    assert [f["outcome"] for f in approved["finished"]] == ["success"]
    results = [e for e in approved["events"] if e["type"] == "TOOL_CALL_RESULT"]
    assert [(r["toolCallId"], r["content"]) for r in results] == [
        (pending["toolCallId"], "sent to ada")
    ]

    assert "not addressed by resume" in (seen["unanswered"] or "")
    rejected = seen["rejected"]
    assert rejected["errors"] == [] and [f["outcome"] for f in rejected["finished"]] == ["success"]
    tool_messages = [m for m in seen["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [
        "sent to ada",
        "Rejected: the user did not allow this tool call. Reason: not bob",
    ]

    messages, runs = server_view(served, seen["threadId"])
    assert [m["content"] for m in messages if m["role"] == "tool"] == [
        m["content"] for m in tool_messages
    ]
    assert [r["status"] for r in runs] == ["interrupted", "completed", "interrupted", "completed"]


@pytest.mark.anyio
async def test_interrupts_on_the_wire_and_resume_entries_that_do_not_fit_are_refused() -> None:
    """Over ASGI: a plain `interrupt()` and a tool approval as AG-UI interrupts, and the 422s."""
    from tether import Agent, InMemoryCheckpointer, StateGraph, interrupt, tool
    from tether.server import create_app
    from tether.testing import ScriptedModel, ToolCallStep

    @tool(requires_approval=True)
    def send(to: str) -> str:
        """Send a message."""
        return f"sent to {to}"

    model = ScriptedModel([ToolCallStep("send", {"to": "ada"}, id="c1")], default_reply="Done.")
    agent = Agent(model, tools=[send], name="mail", checkpointer=InMemoryCheckpointer())

    def ask(state: dict[str, Any]) -> dict[str, Any]:
        return {"name": interrupt("your name?")}

    graph = StateGraph(Greeting)
    graph.add_node("ask", ask)
    graph.set_entry_point("ask")
    greeter = graph.compile(name="greeter", checkpointer=InMemoryCheckpointer())
    api = create_app({"mail": agent, "greeter": greeter})
    first = {
        "threadId": "t",
        "runId": "r",
        "messages": [{"id": "u1", "role": "user", "content": "go"}],
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as c:
        with anyio.fail_after(30):
            events = events_of((await c.post("/ag-ui", params={"app": "mail"}, json=first)).text)
        outcome = events[-1]["outcome"]
        [approval] = outcome["interrupts"]
        assert outcome["type"] == "interrupt" and approval["toolCallId"] == "c1"
        pause = (await agent.aget_state("t")).metadata["interrupt"]
        assert approval["id"] == f"{pause['id']}:c1"

        def resumed(*entries: dict[str, Any], user: bool = False) -> dict[str, Any]:
            extra = [{"id": "u2", "role": "user", "content": "also"}] if user else []
            return {**first, "messages": first["messages"] + extra, "resume": list(entries)}

        ok = {"interruptId": approval["id"], "status": "resolved", "payload": {"approved": True}}
        for body, says in [
            (resumed({**ok, "interruptId": "nope"}), "'nope'"),
            (resumed({**ok, "payload": "yes"}), "approved"),
            (resumed(ok, user=True), "both"),
        ]:
            r = await c.post("/ag-ui", params={"app": "mail"}, json=body)
            assert r.status_code == 422 and says in r.text, r.text
        assert (await agent.aget_state("t")).metadata["interrupt"]["id"] == pause["id"]
        edit = {**ok, "payload": {"approved": True, "editedArgs": {"to": "bob"}}}
        with anyio.fail_after(30):
            events = events_of(
                (await c.post("/ag-ui", params={"app": "mail"}, json=resumed(edit))).text
            )
        assert events[-1]["type"] == "RUN_FINISHED" and "outcome" not in events[-1]
        assert [e["content"] for e in events if e["type"] == "TOOL_CALL_RESULT"] == ["sent to bob"]
        r = await c.post("/ag-ui", params={"app": "mail"}, json=resumed(ok))
        assert r.status_code == 422 and "waits for no answer" in r.text

        with anyio.fail_after(30):
            events = events_of(
                (
                    await c.post(
                        "/ag-ui", params={"app": "greeter"}, json={**first, "threadId": "g"}
                    )
                ).text
            )
        [question] = events[-1]["outcome"]["interrupts"]
        assert question["reason"] == "interrupt" and question["message"] == "your name?"
        assert question["metadata"]["tether"] == {"value": "your name?", "node": "ask", "path": []}
        cancel = {"interruptId": question["id"], "status": "cancelled"}
        r = await c.post(
            "/ag-ui", params={"app": "greeter"}, json={**resumed(cancel), "threadId": "g"}
        )
        assert r.status_code == 422 and "stop the thread" in r.text
        answer = {"interruptId": question["id"], "status": "resolved", "payload": "Ada"}
        with anyio.fail_after(30):
            r = await c.post(
                "/ag-ui", params={"app": "greeter"}, json={**resumed(answer), "threadId": "g"}
            )
        assert events_of(r.text)[-1]["type"] == "RUN_FINISHED"
        assert (await greeter.aget_state("g")).values["name"] == "Ada"


def test_user_text_takes_only_string_text_of_content_parts() -> None:
    # Found by schemathesis: a part may carry a `text` extra field that is not a string (here in a
    # document part), which broke the join with a 500.
    from ag_ui.core import RunAgentInput

    from tether.server.ag_ui import _user_text

    run = RunAgentInput.model_validate(
        {
            "threadId": "t",
            "runId": "r",
            "state": None,
            "tools": [],
            "context": [],
            "forwardedProps": None,
            "messages": [
                {
                    "id": "u1",
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hello "},
                        {
                            "type": "document",
                            "text": {"not": "a string"},
                            "source": {
                                "type": "file",
                                "value": "x",
                                "mimeType": None,
                                "provider": None,
                            },
                        },
                        {"type": "text", "text": "there"},
                    ],
                }
            ],
        }
    )
    assert _user_text(run.messages[0].content) == "hello there"
