"""Test-side helpers: a real uvicorn process on a free port, and an SSE reader.

`serve()` binds a loopback socket in the test process and hands its file descriptor to uvicorn
(see `_uvicorn.py`), so the port is known and already listening before uvicorn starts: the first request
simply waits in the listen backlog until the server accepts it. No port race, no readiness polling.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["SSE", "Server", "read_sse", "serve"]

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 60.0  # seconds uvicorn may take to import the app and answer


@dataclass(frozen=True)
class SSE:
    """One server-sent event."""

    event: str
    id: str | None
    data: Any  # decoded JSON (or the raw text when it is not JSON)


async def read_sse(lines: AsyncIterator[str]) -> AsyncIterator[SSE]:
    """Parse SSE messages from a response's lines; comments (pings) are skipped."""
    event, ident, data = "message", None, []
    async for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield SSE(event, ident, value)
            event, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value_text = line.partition(":")
            value_text = value_text.removeprefix(" ")
            if field == "event":
                event = value_text
            elif field == "id":
                ident = value_text
            elif field == "data":
                data.append(value_text)


@dataclass(frozen=True)
class Server:
    """A running server: its base URL and process."""

    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def serve(
    target: str = "_served:api",
    *,
    app_dir: Path = HERE,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Run `uvicorn target` in a subprocess on a free loopback port; kill it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_uvicorn.py"), str(sock.fileno()), str(app_dir), target],
        pass_fds=(sock.fileno(),),
        env={**os.environ, **(env or {})},
    )
    sock.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{port}"
    try:
        httpx.get(f"{url}/healthz", timeout=STARTUP_TIMEOUT).raise_for_status()
        yield Server(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
