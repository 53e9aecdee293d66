"""Module-level tools for the process-isolation tests: a child process imports them by name."""

from __future__ import annotations

import os
import signal
import socket
import threading

from tether.tools import tool


@tool(isolation="process")
def pid_and_sum(a: int, b: int = 1) -> dict[str, int]:
    """Add two numbers in a child process and say which process did it."""
    print("this goes to stderr, not into the reply")
    return {"pid": os.getpid(), "sum": a + b}


@tool(isolation="process")
async def async_in_child(text: str) -> str:
    """An async tool, run on the child's own event loop."""
    return text.upper()


@tool(isolation="process")
def fails(message: str) -> str:
    """Raise in the child."""
    raise KeyError(message)


@tool(isolation="process")
def hang(port: int, ignore_sigterm: bool = False) -> str:
    """Report this process's pid to `port`, then block forever."""
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(f"{os.getpid()}\n".encode())
    threading.Event().wait()
    return "never"
