"""Human-in-the-loop over HTTP: the pause in the run, the events and the thread; the resume body;
a stop while waiting for approval."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from tests.core.test_transcript import assert_valid_openai_transcript
from tether import Agent, InMemoryCheckpointer, Message, tool
from tether.server import create_app
from tether.testing import ScriptedModel, ToolCallStep

pytestmark = pytest.mark.anyio
WATCHDOG = 10
HI = {"input": {"messages": [{"role": "user", "content": "email ada"}]}}


def served() -> tuple[httpx.AsyncClient, list[str]]:
    sent: list[str] = []

    @tool(requires_approval=True)
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        return f"sent to {to}"

    model = ScriptedModel(
        [ToolCallStep("send_email", {"to": "ada"}, id="c1")], default_reply="Done."
    )
    agent = Agent(model, tools=[send_email], checkpointer=InMemoryCheckpointer(), name="mail")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(create_app(agent)), base_url="http://tether"
    )
    return client, sent


def sse_events(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data:").strip())
        for line in text.splitlines()
        if line.startswith("data:")
    ]


async def test_the_pause_is_visible_in_the_stream_the_run_and_the_thread_and_a_resume_body_continues() -> (
    None
):
    client, sent = served()
    async with client:
        with anyio.fail_after(WATCHDOG):
            r = await client.post("/threads/t/runs/stream", json=HI)
        final = sse_events(r.text)[-1]
        assert final["type"] == "run_finished" and final["status"] == "interrupted"
        question = final["interrupt"]["value"]
        assert question["type"] == "tool_approval"
        assert question["tool_calls"] == [
            {"id": "c1", "name": "send_email", "arguments": {"to": "ada"}}
        ]
        run = (await client.get(f"/threads/t/runs/{final['run_id']}")).json()
        assert run["status"] == "interrupted" and run["interrupt"] == final["interrupt"]
        thread = (await client.get("/threads/t")).json()
        assert thread["status"] == "interrupted"
        assert thread["interrupt"]["id"] == final["interrupt"]["id"]
        assert sent == []

        r = await client.post("/threads/t/runs/wait", json={"command": {"resume": "nope"}})
        assert r.status_code == 200 and r.json()["run"]["status"] == "failed"
        assert (await client.get("/threads/t")).json()["status"] == "error"  # still paused:
        assert (await client.get("/threads/t")).json()["interrupt"]["id"] == final["interrupt"][
            "id"
        ]
        r = await client.post(
            "/threads/t/runs/wait",
            json={"command": {"resume": {"action": "edit", "arguments": {"to": "bob"}}}},
        )
        assert r.status_code == 200, r.text
        assert r.json()["run"]["status"] == "completed"
        assert sent == ["bob"]
        thread = (await client.get("/threads/t")).json()
        assert thread["interrupt"] is None and thread["status"] == "idle"
        assert thread["messages"][-1]["content"] == "Done."


async def test_a_resume_body_with_input_too_is_refused_and_changes_nothing() -> None:
    client, sent = served()
    async with client:
        await client.post("/threads/t/runs/wait", json=HI)
        r = await client.post("/threads/t/runs/wait", json={**HI, "command": {"resume": "approve"}})
        assert r.status_code == 422
        assert "command" in r.json()["error"]["message"]
        assert (await client.get("/threads/t")).json()["status"] == "interrupted"
        assert sent == []


async def test_a_stop_while_waiting_for_approval_cancels_it_and_the_thread_continues() -> None:
    client, sent = served()
    async with client:
        r = await client.post("/threads/t/runs/wait", json=HI)
        run_id = r.json()["run"]["run_id"]
        r = await client.post("/threads/t/stop", params={"reason": "no"})
        assert r.json()["stopped"] is True
        run = (await client.get(f"/threads/t/runs/{run_id}")).json()
        assert run["status"] == "cancelled" and run["stop_reason"] == "no"
        thread = (await client.get("/threads/t")).json()
        assert thread["interrupt"] is None
        messages = [Message.model_validate(m) for m in thread["messages"]]
        assert_valid_openai_transcript(messages)
        assert messages[-1].status == "cancelled"
        r = await client.post("/threads/t/stop")
        assert r.json()["stopped"] is False
        r = await client.post(
            "/threads/t/runs/wait",
            json={"input": {"messages": [{"role": "user", "content": "never mind"}]}},
        )
        assert r.json()["run"]["status"] == "completed"
        assert sent == []


async def test_a_rolled_back_resume_leaves_the_thread_interrupted_with_its_pending_question() -> (
    None
):
    entered, sent = anyio.Event(), []

    @tool(requires_approval=True)
    async def send_email(to: str) -> str:
        """Send an email (blocks until stopped)."""
        entered.set()
        await anyio.sleep_forever()
        sent.append(to)
        return f"sent to {to}"

    model = ScriptedModel(
        [ToolCallStep("send_email", {"to": "ada"}, id="c1")], default_reply="Done."
    )
    agent = Agent(model, tools=[send_email], checkpointer=InMemoryCheckpointer(), name="mail")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(create_app(agent)), base_url="http://tether"
    )
    async with client:
        with anyio.fail_after(WATCHDOG):
            paused = (await client.post("/threads/t/runs/wait", json=HI)).json()["run"]
            question = paused["interrupt"]
            r = await client.post("/threads/t/runs", json={"command": {"resume": "approve"}})
            assert r.status_code == 200, r.text
            resumed = r.json()["run_id"]
            await entered.wait()
            assert (await client.get("/threads/t")).json()["status"] == "busy"
            r = await client.post("/threads/t/stop", params={"mode": "rollback", "wait": True})
            assert r.json()["stopped"] is True and r.json()["run_id"] == resumed
        run = (await client.get(f"/threads/t/runs/{resumed}")).json()
        assert run["status"] == "cancelled" and run["stop_mode"] == "rollback"
        thread = (await client.get("/threads/t")).json()
        assert thread["status"] == "interrupted"
        assert thread["interrupt"]["id"] == question["id"]
        assert thread["interrupt"]["value"] == question["value"]
        assert thread["active_run_id"] is None
        assert sent == []
        # and the pause is still answerable
        with anyio.fail_after(WATCHDOG):
            r = await client.post("/threads/t/runs/wait", json={"command": {"resume": "reject"}})
        assert r.json()["run"]["status"] == "completed"
        assert (await client.get("/threads/t")).json()["status"] == "idle"


async def test_a_sub_agents_approval_pauses_the_parent_over_http_with_the_childs_path() -> None:
    """A sub-agent's tool that requires approval pauses the parent run; the thread and the run
    show the question with the child's `path`, and the resume body answers the sub-agent."""
    sent: list[str] = []

    @tool(requires_approval=True)
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        return f"sent to {to}"

    mailer = Agent(
        ScriptedModel([ToolCallStep("send_email", {"to": "ada"}, id="k1")], default_reply="Sent."),
        tools=[send_email],
        name="mailer",
        description="Sends emails.",
        checkpointer=InMemoryCheckpointer(),
    )
    lead = Agent(
        ScriptedModel([ToolCallStep("mailer", {"input": "email ada"}, id="c1")], "All done."),
        tools=[mailer.as_tool()],
        name="lead",
        checkpointer=InMemoryCheckpointer(),
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(create_app(lead)), base_url="http://tether"
    )
    async with client:
        with anyio.fail_after(WATCHDOG):
            run = (await client.post("/threads/t/runs/wait", json=HI)).json()["run"]
        assert run["status"] == "interrupted"
        assert run["interrupt"]["path"] == ["mailer:c1"]
        assert run["interrupt"]["value"]["type"] == "tool_approval"
        assert [c["id"] for c in run["interrupt"]["value"]["tool_calls"]] == ["k1"]
        thread = (await client.get("/threads/t")).json()
        assert thread["status"] == "interrupted"
        assert thread["interrupt"]["id"] == run["interrupt"]["id"]
        assert sent == []
        with anyio.fail_after(WATCHDOG):
            r = await client.post("/threads/t/runs/wait", json={"command": {"resume": "approve"}})
        assert r.json()["run"]["status"] == "completed", r.text
        assert sent == ["ada"]
        thread = (await client.get("/threads/t")).json()
        assert thread["status"] == "idle" and thread["interrupt"] is None
        assert [m["content"] for m in thread["messages"] if m["role"] == "tool"] == ["Sent."]
        assert thread["messages"][-1]["content"] == "All done."
