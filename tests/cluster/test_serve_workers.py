"""`tether serve --workers N --database-url --redis-url`: N real processes on one port."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests._services import require_redis
from tests.cluster.conftest import fresh_schema

ROOT = Path(__file__).resolve().parents[2]
TETHER = [str(Path(sys.executable).parent / "tether")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_workers_without_redis_is_refused_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_REDIS_URL"}
    done = subprocess.run(
        [*TETHER, "serve", "tests/cluster/_node.py:agent", "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "--workers 2 needs --redis-url" in done.stderr


@pytest.mark.postgres
@pytest.mark.redis
def test_serve_workers_2_serves_one_port_from_two_processes_sharing_runs() -> None:
    url, port = require_redis(), free_port()
    prefix = f"tether-serve-{secrets.token_hex(4)}"
    with fresh_schema() as dsn:
        proc = subprocess.Popen(
            [
                *TETHER,
                "serve",
                "tests/cluster/_node.py:agent",
                "--port",
                str(port),
                "--workers",
                "2",
                "--database-url",
                dsn,
                "--redis-url",
                url,
            ],
            cwd=ROOT,
            env={**os.environ, "TETHER_REDIS_PREFIX": prefix},
            stdout=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):  # readiness poll while the workers import the app (bounded)
                try:
                    if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    subprocess.run(["sleep", "0.1"], check=True)
            assert len(children(proc.pid)) == 2
            r = httpx.post(
                f"{base}/threads/w1/runs/wait",
                json={"input": {"messages": [{"role": "user", "content": "hi"}]}},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            run_id = r.headers["X-Tether-Run-Id"]
            for _ in range(10):  # fresh connections land on either process
                got = httpx.get(f"{base}/threads/w1/runs/{run_id}", timeout=30)
                assert got.json()["status"] == "completed"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
