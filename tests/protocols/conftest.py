"""Fixtures for the protocol tests: the Node.js clients (installed with `npm ci`) and a server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.server._client import Server, serve
from tests.server.conftest import make_served

__all__ = ["NodeClients", "make_served"]  # make_served: in-process servers over ASGI

NODE_DIR = Path(__file__).resolve().parent / "node"
STAMP = NODE_DIR / "node_modules" / ".tether-lock.sha256"
NPM_TIMEOUT = 600  # seconds for `npm ci` on a cold cache
CLIENT_TIMEOUT = 120  # seconds a client script may take (it has its own 60 s watchdog)
SERVED = Path(__file__).resolve().parent.parent / "server"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class NodeClients:
    """The installed Node.js protocol clients; `run(script, *args)` returns its JSON output."""

    node: str

    def run(self, script: str, *args: str) -> Any:
        done = subprocess.run(
            [self.node, str(NODE_DIR / script), *args],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def node_clients() -> NodeClients:
    """Node.js 20+ with the clients of tests/protocols/node installed by `npm ci`.

    `npm ci` runs only when package-lock.json changed since the last install (a stamp in
    node_modules records its hash), so a second test run starts at once. Without node or npm the
    tests are skipped with the reason (failed when `CI=true`).
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("Node.js and npm are needed for the protocol clients (install Node.js 20+)")
    assert node is not None and npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    major = int(version.stdout.strip().lstrip("v").split(".")[0] or 0)
    if major < 20:
        _unavailable(f"Node.js 20+ is needed for the protocol clients, not {version.stdout!r}")
    lock = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    if not STAMP.is_file() or STAMP.read_text() != lock:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            _unavailable(f"`npm ci` in {NODE_DIR} failed:\n{done.stderr[-2000:]}")
        STAMP.write_text(lock)
    return NodeClients(node)


@pytest.fixture(scope="package")
def served() -> Iterator[Server]:
    """One real uvicorn process (for all protocol tests) serving tests/server/_served.py (a scripted agent with gates)."""
    with serve(app_dir=SERVED) as srv:
        yield srv
