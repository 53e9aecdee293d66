"""Process isolation for tools that must die on a stop: `isolation="process"`.

Mechanism. `run_in_process` starts a Python child that calls `serve()` of this module, with the
parent's `sys.path` (as `PYTHONPATH`). It writes one JSON request to the child's stdin: where the
function lives (module and qualified name; a script's path when the tool lives in `__main__`) and
the validated arguments as JSON. It reads one JSON reply from the child's stdout: `{"ok": text}` or
`{"error": {...}}`. The child imports the function, validates the arguments again with the same
`Tool`, calls it, and converts the result to text. Nothing is pickled: the arguments and the result
are JSON. While the function runs, the child's `sys.stdout` points at its stderr, so a `print()` in
a tool cannot corrupt the reply; the child's stderr is the parent's.

Stop guarantee. When `run_in_process` is cancelled, it terminates the child (SIGTERM), waits up to
`kill_after` seconds for it to exit, then kills it (SIGKILL), and reaps it — all in a shielded
scope — before the cancellation propagates. When the call returns, the child is gone.

Cost: a fresh interpreter per call (about 0.1–0.3 s to import tether and the tool's module).
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import anyio
from anyio.abc import Process

from tether.errors import TetherError

__all__ = ["ProcessTool", "ToolProcessError", "run_in_process", "serve"]

# The child's program: `tether.tools.tool.child_main`, which calls `serve()` with what runs a
# `Tool`. Not `-m`: runpy warns when it runs a module that is already imported.
_CHILD_MAIN = "from tether.tools.tool import child_main; child_main()"


class ProcessTool(Protocol):
    """What `run_in_process` needs of a tool: its name and its module-level function."""

    @property
    def name(self) -> str: ...

    @property
    def fn(self) -> Callable[..., Any]: ...


# Seconds a terminated child gets to exit before it is killed.
KILL_AFTER = 1.0
# Seconds reaping a killed child may take at most; SIGKILL cannot be refused, so this is generous.
_REAP_DEADLINE = 5.0


class ToolProcessError(TetherError):
    """A process tool raised in its child process, or the child died without a reply.

    Attributes:
        tool_name: The tool.
        error_type: The name of the exception's class in the child, or `None` if it died.
        child_traceback: The formatted traceback from the child, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        tool_name: str,
        error_type: str | None = None,
        child_traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.tool_name = tool_name
        self.error_type = error_type
        self.child_traceback = child_traceback


async def run_in_process(
    tool: ProcessTool, arguments: dict[str, Any], *, kill_after: float = KILL_AFTER
) -> str:
    """Run `tool` with JSON `arguments` in a child process and return its result text.

    Raises:
        ToolProcessError: the function raised in the child, or the child died without a reply.

    Cancellation: the child is terminated, killed after `kill_after` seconds if it is still
    there, and reaped (shielded) before the cancellation propagates.
    """
    request = _request(tool, arguments)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    process = await anyio.open_process(
        [sys.executable, "-c", _CHILD_MAIN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        env=env,
    )
    try:
        assert process.stdin is not None  # a pipe, opened above
        assert process.stdout is not None  # a pipe, opened above
        async with process.stdin:
            await process.stdin.send(json.dumps(request).encode())
        reply = bytearray()
        async for chunk in process.stdout:
            reply += chunk
        code = await process.wait()
    finally:
        await _end(process, kill_after)
    return _result(tool.name, bytes(reply), code)


async def _end(process: Process, kill_after: float) -> None:
    """Make sure the child is gone and reaped; shielded, so it also runs when cancelled."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(kill_after):
                await process.wait()
        if process.returncode is None:
            process.kill()
        with anyio.move_on_after(_REAP_DEADLINE):
            await process.aclose()


def _request(tool: ProcessTool, arguments: dict[str, Any]) -> dict[str, Any]:
    module = tool.fn.__module__
    main_path = None
    if module == "__main__":
        main_path = getattr(sys.modules["__main__"], "__file__", None)
    return {
        "module": module,
        "qualname": tool.fn.__qualname__,
        "main_path": main_path,
        "arguments": arguments,
    }


def _result(tool_name: str, reply: bytes, code: int) -> str:
    try:
        data = json.loads(reply) if reply else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("ok"), str):
        text: str = data["ok"]
        return text
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = data["error"]
        raise ToolProcessError(
            f"tool {tool_name!r} raised {error.get('type')}: {error.get('message')} "
            "(in its subprocess)",
            tool_name=tool_name,
            error_type=error.get("type"),
            child_traceback=error.get("traceback"),
        )
    raise ToolProcessError(
        f"the subprocess of tool {tool_name!r} exited with code {code} without a result "
        f"(it wrote {reply[:200]!r}); see its stderr above",
        tool_name=tool_name,
    )


def _locate(request: dict[str, Any]) -> Any:
    """The object the request names: a `Tool` or a plain function."""
    if request.get("main_path"):
        # The tool lives in a script run as `__main__`: run it as `__mp_main__`, as
        # multiprocessing's spawn does, so its `if __name__ == "__main__"` block does not run.
        namespace: Any = runpy.run_path(request["main_path"], run_name="__mp_main__")
        parts = request["qualname"].split(".")
        obj = namespace[parts[0]]
        rest = parts[1:]
    else:
        obj = importlib.import_module(request["module"])
        rest = request["qualname"].split(".")
    for part in rest:
        obj = getattr(obj, part)
    return obj


def serve(run: Callable[[Any, dict[str, Any]], str]) -> None:
    """The child's loop for one call: read a request on stdin, call `run(target, arguments)` on
    the object it names, and write the reply on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # a print() in the tool must not corrupt the reply
    request = json.loads(sys.stdin.buffer.read())
    try:
        reply: dict[str, Any] = {"ok": run(_locate(request), request["arguments"])}
    except Exception as exc:  # reported to the parent, which raises ToolProcessError
        reply = {
            "error": {
                "type": type(exc).__qualname__,
                "message": str(exc),
                "traceback": traceback.format_exc(),
            }
        }
    out.write(json.dumps(reply))
    out.flush()
