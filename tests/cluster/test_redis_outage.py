"""Redis restarted mid-run, on a test-owned `redis-server` (never the shared one).

While Redis is down: runs keep running and can finish, a stop for a run in another process is
refused with `CoordinationUnavailableError` (HTTP 503) rather than dropped, and nothing hangs.
Once it is back (empty: no persistence), every process writes its live runs back, so a stop
from elsewhere lands again, and releases owed during the outage are made (sizes back to 0).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from tether import Agent
from tether.coordination.redis import RedisRunRegistry
from tether.errors import CoordinationUnavailableError
from tether.storage.postgres import PostgresCheckpointer
from tether.testing import Gate, ScriptedModel

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis]


class OwnRedis:
    """A `redis-server` on a free loopback port that the test may stop and start."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = 100  # readiness poll of a freshly started server (bounded), not a test sync
        for _ in range(deadline):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            subprocess.run(["sleep", "0.05"], check=True)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop()


@pytest.fixture
async def node(postgres_dsn: str, own_redis: OwnRedis) -> AsyncIterator[Callable[..., Agent]]:
    async with AsyncExitStack() as stack:

        def make(*turns: Any) -> Agent:
            checkpointer = PostgresCheckpointer(postgres_dsn)
            registry = RedisRunRegistry(own_redis.url, prefix="outage", lease=2.0, timeout=0.5)
            stack.push_async_callback(checkpointer.aclose)
            stack.push_async_callback(registry.aclose)
            model = ScriptedModel(*turns, default_reply="ok")
            return Agent(model, checkpointer=checkpointer, registry=registry)

        yield make


async def test_redis_restart_mid_run_refuses_then_delivers_stops_and_runs_keep_running(
    node: Callable[..., Agent], own_redis: OwnRedis
) -> None:
    gates = [Gate("g1"), Gate("g2")]
    a, b = node(["a1 ", gates[0]], ["a2 ", gates[1]]), node()
    with anyio.fail_after(30) as watchdog:
        first = await a.astart("one", thread_id="o1")
        await gates[0].reached()
        second = await a.astart("two", thread_id="o2")
        await gates[1].reached()
        own_redis.stop()
        with pytest.raises(CoordinationUnavailableError, match="unreachable"):
            await b.astop(run_id=first.run_id)
        assert first.status == "running"  # the refused stop changed nothing
        gates[1].release()  # a run finishes while Redis is down
        await second.wait()
        assert second.status == "completed"
        own_redis.start()  # empty: the keys are gone
        while not (result := await _try_stop(b, first.run_id)):  # until A wrote its runs back
            await anyio.sleep(0.05)
        await first.wait()
        assert first.status == "cancelled"
        while a.registry.size() or b.registry.size():  # the release owed since the outage
            await anyio.sleep(0.05)
    assert not watchdog.cancel_called
    assert result
    again = await b.ainvoke("three", thread_id="o2")  # the thread was released in Redis too
    assert again["messages"][-1].content == "ok"


async def _try_stop(agent: Agent, run_id: str) -> bool:
    try:
        return await agent.astop(run_id=run_id, wait=False)
    except CoordinationUnavailableError:
        return False
