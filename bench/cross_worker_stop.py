"""Stops and live events across processes through `RedisRunRegistry`, beside one process.

    python bench/cross_worker_stop.py [--stops 500] [--redis redis://127.0.0.1:6379/0] [--write]

Process A (a child of this script) runs an agent whose model streams a token every 2 ms until it is
stopped. Process B (this script) measures:
- **stop, cross-process**: B calls `request_stop` for A's run (mode `now`) → the run's
  `run_finished` timestamp in A (`time.time()` on both sides, one machine), and → B sees the
  thread released (the `free` notification back through Redis: the full round trip). The profile
  splits the one-way figure: B's script call returning, A's listener receiving the published stop
  (A's registry records it), and the rest (A's run unwinding to its terminal event);
- **stop, in-process baseline**: the same stop sent inside A to its own run (`LocalRunRegistry`);
- **live events**: an event's timestamp in A → B reads it from the run's Redis Stream (blocking
  `XREAD`, after a first read that caught up with the stream, so no backlog is counted), beside
  the same for a reader inside A;
- **kill -9 → worker_lost**: A is killed mid-run (lease 2 s); → B's sweep released its thread.
Storage is in memory on both sides so the figures are the coordination cost alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import machine, percentile, summary_ms, write_section

from tether import Agent, InMemoryCheckpointer
from tether.coordination import LocalRunRegistry
from tether.coordination.redis import RedisRunRegistry
from tether.events import MessageDeltaEvent
from tether.messages import Message
from tether.models import Finish, Model, ModelDelta, ModelSettings, TextDelta, ToolSpec
from tether.stop import StopRequest

SESSION = secrets.token_hex(4)  # every key this run of the bench makes starts with bench-SESSION-
TICK = float(os.environ.get("BENCH_TICK", "0.002"))  # seconds between tokens


class Ticking(Model):
    """Streams "tok " every `TICK` seconds until cancelled."""

    name = "ticking"

    @asynccontextmanager
    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[AsyncIterator[ModelDelta]]:
        yield self._tokens()

    async def _tokens(self) -> AsyncIterator[ModelDelta]:
        while True:
            yield TextDelta("tok ")
            await anyio.sleep(TICK)
        yield Finish("stop")  # unreachable; keeps the generator's type honest


def agent(registry: Any) -> Agent:
    return Agent(Ticking(), checkpointer=InMemoryCheckpointer(), registry=registry)


class ProfiledRegistry(RedisRunRegistry):
    """A's registry, recording when each published stop reached its listener (the profile)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: dict[str, float] = {}  # run id -> time.time() the stop arrived

    def _on_message(self, data: str) -> None:
        if data.startswith("stop "):
            self.received.setdefault(data.split(" ", 2)[1], time.time())
        super()._on_message(data)


# ---------------------------------------------------------------- process A


async def child(url: str, prefix: str, lease: float, runs: int) -> None:
    """Start `runs` runs one after another; print each run id once it streams, then its end."""
    registry = ProfiledRegistry(url, prefix=prefix, lease=lease)
    app = agent(registry)
    local_latency: list[float] = []
    for i in range(runs):
        handle = await app.astart("go", thread_id=f"bench-{i}")
        seen = 0
        printed = False
        while not handle.done:
            await handle.wait_for_events(seen)
            now = time.time()
            for event in handle.events[seen:]:
                if isinstance(event, MessageDeltaEvent):
                    local_latency.append(now - event.ts)
                    if not printed:
                        print(f"run {handle.run_id} bench-{i}", flush=True)
                        printed = True
            seen = len(handle.events)
        received = registry.received.pop(handle.run_id, float("nan"))
        print(f"end {handle.run_id} {handle.events[-1].ts!r} {received!r}", flush=True)
    print("local " + json.dumps(local_latency[-2000:]), flush=True)
    await app.registry.aclose()


async def child_listener(url: str, channel: str) -> None:
    """Print the age of every message published on `channel` (the raw pub/sub hop)."""
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(url, decode_responses=True)
    ages = []
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(channel)
        async for message in pubsub.listen():
            if message["type"] == "subscribe":
                print("ready", flush=True)
            elif message["type"] == "message":
                if message["data"] == "end":
                    break
                ages.append(time.time() - float(message["data"]))
    print(json.dumps(ages), flush=True)
    await client.aclose()


# ---------------------------------------------------------------- process B


async def raw_pubsub(url: str, n: int) -> list[float]:
    """The floor: one redis-py pub/sub message from this process to another, n times."""
    import redis.asyncio as aredis

    channel = f"bench-{SESSION}-raw"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--listen", url, channel], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    await anyio.to_thread.run_sync(proc.stdout.readline)  # subscribed
    client = aredis.Redis.from_url(url)
    for _ in range(n):
        await client.publish(channel, repr(time.time()))
        await anyio.sleep(TICK)
    await client.publish(channel, "end")
    line = await anyio.to_thread.run_sync(proc.stdout.readline)
    proc.wait()
    await client.aclose()
    ages: list[float] = json.loads(line)
    return ages


async def in_process_stops(n: int) -> list[float]:
    app = agent(LocalRunRegistry())
    out = []
    for i in range(n):
        handle = await app.astart("go", thread_id=f"local-{i}")
        await handle.wait_for_events(2)
        t0 = time.time()
        await app.astop(run_id=handle.run_id)
        out.append(handle.events[-1].ts - t0)
    return out


async def stream_one_process(url: str, runs: int) -> list[float]:
    """Live event age through the Redis Stream with both registries in this process: the pump
    and the stream read without the hop between processes (the profile of the remote figure)."""
    prefix = f"bench-{SESSION}-{secrets.token_hex(4)}"
    app = agent(RedisRunRegistry(url, prefix=prefix))
    reader = RedisRunRegistry(url, prefix=prefix)
    ages: list[float] = []
    for i in range(runs):
        handle = await app.astart("go", thread_id=f"one-{i}")
        events: list[Any] = []
        while not events:  # catch up first, as in cross_process
            events = await reader.read_stream(handle.run_id, -1, 1.0) or []
        top = events[-1].seq
        for _ in range(5):
            events = await reader.read_stream(handle.run_id, top, 1.0) or []
            received = time.time()
            ages += [received - e.ts for e in events if isinstance(e, MessageDeltaEvent)]
            top = events[-1].seq if events else top
        await app.astop(run_id=handle.run_id)
    await app.registry.aclose()
    await reader.aclose()
    return ages


async def cross_process(url: str, stops: int) -> dict[str, Any]:
    prefix = f"bench-{SESSION}-{secrets.token_hex(4)}"
    registry = RedisRunRegistry(url, prefix=prefix)
    proc = await anyio.open_process(
        [sys.executable, __file__, "--child", url, prefix, "10", str(stops)],
        stderr=None,
    )
    assert proc.stdout is not None
    one_way, round_trip, remote_events = [], [], []
    script, hop, unwind = [], [], []  # the profile of one_way
    buffer = b""
    local: list[float] = []

    async def lines() -> AsyncIterator[str]:
        nonlocal buffer
        assert proc.stdout is not None
        while True:
            while b"\n" not in buffer:
                chunk = await proc.stdout.receive()
                buffer += chunk
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()

    stream = lines()
    for _ in range(stops):
        kind, run_id, _thread = (await anext(stream)).split(" ")
        assert kind == "run"
        # live events through Redis: catch up with the stream first (not counted: a backlog is
        # not live), then time the next few as they arrive
        events: list[Any] = []
        while not events:
            events = await registry.read_stream(run_id, -1, 1.0) or []
        top = events[-1].seq
        for _ in range(5):
            events = await registry.read_stream(run_id, top, 1.0) or []
            received = time.time()
            remote_events += [received - e.ts for e in events if isinstance(e, MessageDeltaEvent)]
            top = events[-1].seq if events else top
        t0 = time.time()
        result = await registry.request_stop(StopRequest(), run_id=run_id)
        script.append(time.time() - t0)
        assert result.accepted
        assert result.handle is None
        await registry.wait_released(run_id)
        round_trip.append(time.time() - t0)
        kind, _run, ts, got = (await anext(stream)).split(" ")
        assert kind == "end"
        one_way.append(float(ts) - t0)
        if got != "nan":  # A applied it from the published message (not a re-read)
            hop.append(float(got) - t0)
            unwind.append(float(ts) - float(got))
    line = await anext(stream)
    local = json.loads(line.removeprefix("local "))
    await proc.wait()
    await registry.aclose()
    return {
        "one_way": one_way,
        "round_trip": round_trip,
        "remote": remote_events,
        "local": local,
        "script": script,
        "hop": hop,
        "unwind": unwind,
    }


async def kill_trials(url: str, trials: int, lease: float) -> list[float]:
    out = []
    for _ in range(trials):
        prefix = f"bench-{SESSION}-kill-{secrets.token_hex(4)}"
        registry = RedisRunRegistry(url, prefix=prefix, lease=lease)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", url, prefix, str(lease), "1"],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        run_id = line.decode().split(" ")[1]
        await registry._client()
        t0 = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with anyio.fail_after(lease * 5):
            await registry.wait_released(run_id)
        out.append(time.time() - t0)
        await registry.aclose()
    return out


async def forget(url: str, pattern: str) -> None:
    """Delete the bench's keys from the shared Redis (never FLUSHDB)."""
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(url)
    keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def ms(values: Sequence[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1e3:.2f} ms, p99 {percentile(values, 99) * 1e3:.2f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    raw = await raw_pubsub(args.redis, args.stops)
    print("raw redis-py pub/sub hop, B → A:         ", summary_ms(raw))
    local_stops = await in_process_stops(args.stops)
    print("stop, in-process (request → run_finished):", summary_ms(local_stops))
    cross = await cross_process(args.redis, args.stops)
    print("stop, B → run_finished in A:            ", summary_ms(cross["one_way"]))
    print("  profile: B's stop script returns:      ", summary_ms(cross["script"]))
    print("  profile: B → stop received by A:       ", summary_ms(cross["hop"]))
    print("  profile: A received → run_finished:    ", summary_ms(cross["unwind"]))
    print("stop, B → thread released seen by B:    ", summary_ms(cross["round_trip"]))
    print("live event age, reader in A:            ", summary_ms(cross["local"]))
    print("live event age, reader in B (Redis):    ", summary_ms(cross["remote"]))
    one = await stream_one_process(args.redis, max(1, args.stops // 5))
    print("  profile: same, both in one process:    ", summary_ms(one))
    kills = await kill_trials(args.redis, args.kills, 2.0)
    print("kill -9 → released by a sweep (lease 2s):", summary_ms(kills))
    await forget(args.redis, f"bench-{SESSION}-*")
    if args.write:
        date = time.strftime("%Y-%m-%d")
        stop_p99 = percentile(cross["one_way"], 99) * 1e3
        over = (percentile(cross["remote"], 99) - percentile(cross["local"], 99)) * 1e3
        stop_verdict = "met" if stop_p99 <= 10 else f"missed by {stop_p99 - 10:.1f} ms"
        live_verdict = "met" if over <= 5 else f"missed by {over - 5:.1f} ms"
        text = f"""<!-- cross-worker-stop -->
## Stops and live events across processes (Redis)

`python bench/cross_worker_stop.py --stops {args.stops} --write` on {date}; {machine()}; Redis
and both processes on loopback. **The machine was shared with other engineers' jobs while this
ran, so absolute figures are noisy.** Load average at the start: {os.getloadavg()[0]:.1f}.

| what | figure |
|---|---|
| floor: one raw redis-py pub/sub message between two processes | {ms(raw)} |
| stop in one process (request → `run_finished`), baseline | {ms(local_stops)} |
| stop from process B → `run_finished` in process A | {ms(cross["one_way"])} |
| … profile: B's stop script returns | {ms(cross["script"])} |
| … profile: B → A's listener receives the stop | {ms(cross["hop"])} |
| … profile: A received it → `run_finished` | {ms(cross["unwind"])} |
| stop from B → B sees the thread released (full round trip) | {ms(cross["round_trip"])} |
| live event age, reader in the same process | {ms(cross["local"])} |
| live event age, reader in another process (Redis Stream) | {ms(cross["remote"])} |
| … profile: the same through Redis, both registries in one process | {ms(one)} |
| kill -9 → thread released by another process's sweep, lease 2 s ({args.kills} trials) | {ms(kills)} (target ≤ lease + 1 s = 3 s) |

Targets from the issue: cross-process stop p99 ≤ 10 ms ({stop_verdict}); live events p99 ≤ 5 ms
over in-process ({live_verdict}).
<!-- /cross-worker-stop -->
"""
        write_section("cross-worker-stop", text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--listen":
        asyncio.run(child_listener(sys.argv[2], sys.argv[3]))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        url, prefix, lease, runs = sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
        asyncio.run(child(url, prefix, lease, runs))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", type=int, default=500)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--write", action="store_true", help="record the figures in BENCHMARKS.md")
    asyncio.run(main(parser.parse_args()))
