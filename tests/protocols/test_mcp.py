"""MCP tools against a real MCP server (the SDK's own `MCPServer`) in a subprocess: stdio and HTTP.

Each test drives an `Agent` whose scripted model calls the server's tools. A stop during the
10-second tool `slow` must reach the server as MCP's cancellation (the server's own `report` tool
tells what it saw), leave the run `cancelled` with a synthetic cancelled result, and keep the
session usable for the next run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tether import (
    Agent,
    CustomEvent,
    InMemoryCheckpointer,
    RunFinished,
    ToolCallFinished,
    UserError,
)
from tether.testing import ScriptedModel, ToolCallStep
from tether.tools import ToolArgumentsError
from tether.tools.mcp import (
    MCPToolError,
    MCPToolset,
    mcp_tools,
    stdio_server,
    streamable_http_server,
)

pytestmark = pytest.mark.anyio

SERVER = str(Path(__file__).with_name("_mcp_server.py"))
WATCHDOG = 60  # seconds; starting a Python MCP server on a loaded machine takes several


def stdio() -> Any:
    return stdio_server(sys.executable, [SERVER, "stdio"])


async def stop_during_slow_then_continue(tools: MCPToolset) -> None:
    """The shared scenario: stop the agent while `slow(10)` runs on the server, then go on."""
    model = ScriptedModel(
        [ToolCallStep("slow", {"seconds": 10})],
        [ToolCallStep("echo", {"text": "still here"})],
        "Done.",
    )
    agent = Agent(model, tools=tools, checkpointer=InMemoryCheckpointer())
    progress: list[Any] = []
    events = []
    stream = agent.astream("work", thread_id="t")
    async for event in stream:
        events.append(event)
        if isinstance(event, CustomEvent):
            progress.append(event.data)
            if len(progress) == 2:  # the server is inside the tool, reporting progress
                assert await agent.astop(thread_id="t", reason="user pressed stop")
    final = events[-1]
    assert isinstance(final, RunFinished) and final.status == "cancelled"
    assert progress[0] == {
        "type": "mcp_progress",
        "server": tools.server.label,
        "tool": "slow",
        "progress": 1.0,
        "total": 200.0,
        "message": "tick 1",
    }
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [(f.name, f.status) for f in finished] == [("slow", "cancelled")]
    run = await agent.aget_run(final.run_id)
    assert run is not None and run.status == "cancelled" and run.stop_reason == "user pressed stop"
    messages = await agent.aget_messages("t")
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("tool", "cancelled"),
    ]

    # The server saw MCP's cancellation and its 10 s of work stopped there: the handler was
    # cancelled after a few ticks and never finished. (`report` waits for the cancellation.)
    report = json.loads(await tools.call("report", {"wait_cancelled": 1}))
    assert report["cancelled"] == 1
    [call] = report["calls"]
    assert call["cancelled"] is True and call["finished"] is False
    assert 2 <= call["ticks"] < 200

    # The same session serves the next run on the thread.
    events = [e async for e in agent.astream("go on", thread_id="t")]
    assert events[-1].status == "completed"  # type: ignore[union-attr]
    messages = await agent.aget_messages("t")
    assert messages[-3].tool_calls[0].name == "echo"
    assert (messages[-2].role, messages[-2].content) == ("tool", "still here")
    assert messages[-1].content == "Done."
    assert tools.sessions_opened == 1


async def test_stdio_stop_cancels_the_mcp_call_on_the_server_and_the_session_stays_usable() -> None:
    with anyio.fail_after(WATCHDOG) as watchdog:
        async with mcp_tools(stdio()) as tools:
            assert [t.name for t in tools] == [
                "echo",
                "slow",
                "report",
                "stuck",
                "ignore",
                "crash",
                "pid",
            ]
            assert tools[0].spec.parameters["required"] == ["text"]
            await stop_during_slow_then_continue(tools)
    assert not watchdog.cancelled_caught


@pytest.fixture
def http_mcp_server() -> Iterator[str]:
    """The test MCP server over streamable HTTP, on a socket bound here (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, SERVER, "http", str(sock.fileno())], pass_fds=(sock.fileno(),)
    )
    sock.close()
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_streamable_http_stop_cancels_the_mcp_call_on_the_server(
    http_mcp_server: str,
) -> None:
    with anyio.fail_after(WATCHDOG) as watchdog:
        async with mcp_tools(
            streamable_http_server(http_mcp_server), include=["slow", "echo", "report"]
        ) as tools:
            assert sorted(t.name for t in tools) == ["echo", "report", "slow"]
            await stop_during_slow_then_continue(tools)
    assert not watchdog.cancelled_caught


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1]
    return not status.startswith("Z")  # a zombie has stopped working too


async def test_a_stdio_server_that_ignores_the_cancellation_is_killed_and_replaced(
    tmp_path: Path,
) -> None:
    signal = tmp_path / "blocked.fifo"
    os.mkfifo(signal)
    model = ScriptedModel(
        [ToolCallStep("stuck", {"seconds": 60, "signal": str(signal)})], default_reply="ok"
    )
    with anyio.fail_after(WATCHDOG) as watchdog:
        async with mcp_tools(stdio(), cancel_grace=0.5) as tools:
            first_pid = int(await tools.call("pid", {}))
            agent = Agent(model, tools=tools, checkpointer=InMemoryCheckpointer())
            stream = agent.astream("block", thread_id="t")
            async for event in stream:
                if event.type == "tool_call_started":
                    break
            # The server writes to the FIFO just before it blocks its event loop.
            line = await anyio.to_thread.run_sync(signal.read_text, abandon_on_cancel=True)
            assert line == "blocking\n"
            await stream.aclose()  # a disconnect: stops the run
            handle = stream.handle
            assert handle is not None
            await handle.wait()
            assert handle.status == "cancelled"
            # The stuck server answers neither the cancellation nor the ping: after the grace its
            # process is killed and a new one serves the next call (which waits for it).
            second_pid = int(await tools.call("pid", {}))
            assert second_pid != first_pid
            assert not alive(first_pid)
            assert tools.sessions_opened == 2
            result = await agent.ainvoke("again", thread_id="t")
            assert result["messages"][-1].content == "ok"
            assert [m.status for m in result["messages"] if m.role == "tool"] == ["cancelled"]
    assert not watchdog.cancelled_caught


async def test_restart_on_cancel_stops_a_responsive_server_that_ignores_the_cancellation() -> None:
    model = ScriptedModel([ToolCallStep("ignore", {"seconds": 60})], default_reply="ok")
    with anyio.fail_after(WATCHDOG) as watchdog:
        async with mcp_tools(stdio(), restart_on_cancel=True) as tools:
            first_pid = int(await tools.call("pid", {}))
            agent = Agent(model, tools=tools, checkpointer=InMemoryCheckpointer())
            async for event in agent.astream("work", thread_id="t"):
                if isinstance(event, CustomEvent):  # the server is inside `ignore`
                    assert await agent.astop(thread_id="t")
            assert event.status == "cancelled"  # type: ignore[union-attr]
            second_pid = int(await tools.call("pid", {}))  # waits for the new session
            assert second_pid != first_pid
            assert not alive(first_pid)
            assert tools.sessions_opened == 2
    assert not watchdog.cancelled_caught


async def test_mcp_tool_errors_and_bad_arguments_are_clear() -> None:
    with anyio.fail_after(WATCHDOG) as watchdog:
        async with mcp_tools(stdio(), include=["echo", "crash", "pid"], prefix="srv_") as tools:
            echo, crash, pid = tools
            assert echo.name == "srv_echo"
            assert await echo.run('{"text": "hi"}') == "hi"
            with pytest.raises(MCPToolError, match="srv_echo"):
                await echo.run("{}")  # the server rejects the missing argument
            with pytest.raises(ToolArgumentsError, match="not JSON"):
                await echo.run("{oops")
            first_pid = int(await pid.run("{}"))
            with pytest.raises(MCPToolError, match="Connection closed"):
                await crash.run("{}")  # the server process exits
            assert int(await pid.run("{}")) != first_pid  # a new process serves the next call
            assert tools.sessions_opened == 2
    assert not watchdog.cancelled_caught
    with pytest.raises(MCPToolError, match="closed"):
        await echo.run('{"text": "late"}')


async def test_unknown_include_and_unreachable_servers_are_clear_errors() -> None:
    with anyio.fail_after(WATCHDOG) as watchdog:
        with pytest.raises(UserError, match=r"has no tools \['nope'\]; it has \['crash', 'echo'"):
            async with mcp_tools(stdio(), include=["nope"]):
                pass
        with pytest.raises(MCPToolError, match="could not start or reach the MCP server"):
            async with mcp_tools(streamable_http_server("http://127.0.0.1:9/mcp")):
                pass
    assert not watchdog.cancelled_caught
    with pytest.raises(UserError, match="http:// or https://"):
        streamable_http_server("127.0.0.1:9")
    with pytest.raises(UserError, match="cancel_grace"):
        mcp_tools(stdio(), cancel_grace=0)
