"""`examples/fastapi_stop.py` (seed 001): one stop endpoint, both of the forum's approaches.

The example's routes are exercised with a scripted agent whose model and tools block on gates.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest

from tether import Agent, InMemoryCheckpointer, ToolsIgnoredWarning, tool
from tether.testing import Gate, ScriptedModel, ToolCallStep

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_stop.py"
WATCHDOG = 10


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_stop_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():  # its default local model cannot call the example's tools
        warnings.simplefilter("ignore", ToolsIgnoredWarning)
        spec.loader.exec_module(module)
    return module


def research_agent(model: ScriptedModel, searching: Gate, reports: list[str]) -> Agent:
    @tool
    async def search_docs(query: str) -> str:
        """Search."""
        await searching.wait()
        return "found"

    @tool
    async def write_report(topic: str) -> str:
        """Report."""
        reports.append(topic)
        return "written"

    return Agent(
        model,
        tools=[search_docs, write_report],
        checkpointer=InMemoryCheckpointer(),
        parallel_tool_calls=False,
    )


async def messages(c: httpx.AsyncClient, thread_id: str) -> list[tuple[str, str]]:
    r = await c.get(f"/messages/{thread_id}")
    return [(m["role"], m["status"]) for m in r.json()]


async def ended(agent: Agent, run_id: str) -> None:
    handle = agent.registry.local(run_id)
    if handle is not None:
        await handle.wait()


async def test_hard_stop_cancels_the_running_tool_and_the_thread_continues() -> None:
    searching, reports = Gate("search"), []
    model = ScriptedModel(
        [
            ToolCallStep("search_docs", {"query": "stop"}),
            ToolCallStep("write_report", {"topic": "x"}),
        ],
        "Fine, I stopped.",
    )
    agent = research_agent(model, searching, reports)
    app = load_example().create_app(agent)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        with anyio.fail_after(WATCHDOG):
            r = await c.post("/run/t1", json={"message": "research"})
            run_id = r.json()["run_id"]
            await searching.reached()  # the first tool is running
            assert (await c.post("/run/t1", json={"message": "again"})).status_code == 409
            r = await c.post("/stop/t1?mode=now")
            assert r.json() == {"status": "stopped", "mode": "now"}
            run = (await c.get(f"/runs/{run_id}")).json()
            assert await messages(c, "t1") == [
                ("user", "complete"),
                ("assistant", "complete"),
                ("tool", "cancelled"),
                ("tool", "cancelled"),
            ]
            r = await c.post("/run/t1", json={"message": "go on"})
            await ended(agent, r.json()["run_id"])
            after = await messages(c, "t1")
    assert (run["status"], run["stop_mode"], run["stop_reason"]) == (
        "cancelled",
        "now",
        "Stop button",
    )
    assert reports == []  # the tool after the stopped one never started
    assert after[-2:] == [("user", "complete"), ("assistant", "complete")]
    seen = model.calls[-1]
    assert [m.status for m in seen if m.role == "tool"] == ["cancelled", "cancelled"]


async def test_stop_after_step_lets_the_model_turn_finish_and_runs_no_tool() -> None:
    searching, reports = Gate("search"), []
    thinking = Gate("thinking")
    model = ScriptedModel(
        ["Let me check.", thinking, ToolCallStep("write_report", {"topic": "x"})],
        "Sure.",
    )
    agent = research_agent(model, searching, reports)
    app = load_example().create_app(agent)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        with anyio.fail_after(WATCHDOG):
            r = await c.post("/run/t1", json={"message": "report"})
            run_id = r.json()["run_id"]
            await thinking.reached()  # mid model turn
            r = await c.post("/stop/t1?mode=after_step&wait=false")
            assert r.json()["status"] == "stopped"
            thinking.release()  # the turn finishes; the run stops at the step boundary
            await ended(agent, run_id)
            run = (await c.get(f"/runs/{run_id}")).json()
            stopped = await messages(c, "t1")
            r = await c.post("/run/t1", json={"message": "never mind"})
            await ended(agent, r.json()["run_id"])
            after = await messages(c, "t1")
    assert (run["status"], run["stop_mode"]) == ("cancelled", "after_step")
    assert reports == []  # the tool the finished turn asked for never ran
    assert stopped[:2] == [("user", "complete"), ("assistant", "complete")]
    assert after[-1] == ("assistant", "complete")
    assert [m.status for m in model.calls[-1] if m.role == "tool"] == ["cancelled"]


async def test_the_example_mounts_the_full_tether_server_under_a_prefix() -> None:
    agent = research_agent(ScriptedModel(default_reply="hi"), Gate(), [])
    app = load_example().create_app(agent)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        page = await c.get("/tether/")
        script = await c.get("/tether/ui/app.js")
        info = (await c.get("/tether/info")).json()
    assert page.status_code == 200
    assert 'src="ui/app.js"' in page.text  # relative: works under any prefix
    assert script.status_code == 200
    assert info["apps"] == ["default"]
