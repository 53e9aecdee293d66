"""`isolation="process"`: the tool runs in a child process, which is killed on a stop."""

from __future__ import annotations

import json
import os
import socket

import anyio
import anyio.to_thread
import pytest
from tests.tools._process_tools import async_in_child, fails, hang, pid_and_sum

from tether.tools import ToolArgumentsError, ToolProcessError
from tether.tools.process import run_in_process

pytestmark = pytest.mark.anyio

WATCHDOG = 30.0


async def test_process_tool_runs_in_a_child_and_returns_json() -> None:
    with anyio.fail_after(WATCHDOG):
        result = json.loads(await pid_and_sum.run('{"a": 2}'))
    assert result["sum"] == 3
    assert result["pid"] != os.getpid()


async def test_async_process_tool_runs_in_the_child() -> None:
    with anyio.fail_after(WATCHDOG):
        assert await async_in_child.run({"text": "hi"}) == "HI"


async def test_exception_in_child_becomes_tool_process_error() -> None:
    with anyio.fail_after(WATCHDOG), pytest.raises(ToolProcessError) as info:
        await fails.run({"message": "gone"})
    assert info.value.error_type == "KeyError"
    assert "'gone'" in str(info.value)
    assert info.value.child_traceback is not None
    assert "KeyError" in info.value.child_traceback


async def test_arguments_are_validated_before_a_child_starts() -> None:
    with pytest.raises(ToolArgumentsError, match="a: Input should be a valid integer"):
        await pid_and_sum.run({"a": "two"})


async def _run_hang_and_cancel(ignore_sigterm: bool) -> int:
    """Start `hang` in a child, wait for it to report its pid, cancel; return the pid."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(WATCHDOG)
        port = server.getsockname()[1]
        args = {"port": port, "ignore_sigterm": ignore_sigterm}

        def child_pid() -> int:
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as reader:
                return int(reader.readline())

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_in_process(hang, hang.json_arguments(args), kill_after=0.2))
            pid = await anyio.to_thread.run_sync(child_pid)
            os.kill(pid, 0)  # alive
            tg.cancel_scope.cancel()
    return pid


async def test_cancel_kills_the_child_process() -> None:
    with anyio.fail_after(WATCHDOG):
        pid = await _run_hang_and_cancel(ignore_sigterm=False)
    with pytest.raises(ProcessLookupError):  # gone, and reaped (a zombie would still answer)
        os.kill(pid, 0)


async def test_child_that_ignores_sigterm_is_killed_after_the_deadline() -> None:
    with anyio.fail_after(WATCHDOG):
        pid = await _run_hang_and_cancel(ignore_sigterm=True)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_tool_run_cancelled_kills_the_child() -> None:
    """The same through `Tool.run`, the agent's entry point."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(WATCHDOG)
        port = server.getsockname()[1]

        def child_pid() -> int:
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as reader:
                return int(reader.readline())

        with anyio.fail_after(WATCHDOG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hang.run, {"port": port})
                pid = await anyio.to_thread.run_sync(child_pid)
                tg.cancel_scope.cancel()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
