"""Server load: N concurrent SSE streams on one uvicorn worker; events/s and cancel latency.

    python bench/server_load.py [--streams 100,1000,1000@2] [--rate 10] [--samples 200] [--write]
        [--http auto|h11|httptools] [--loop auto|asyncio|uvloop] [--flush-interval SECONDS]

For each N (or `N@rate`, to override `--rate` for that N) it starts one uvicorn worker (a
subprocess, loopback, in-memory storage) serving a `tether.Agent` whose model streams `--rate`
tokens per second, forever, on a fixed schedule (the k-th token is due k/rate seconds after the
start: a server that falls behind does not slow the tokens down). One client process (asyncio +
httpx) then:

1. opens N streams (`POST /threads/{id}/runs/stream`) and waits until each has sent a token;
2. counts the run events it receives during `--window` seconds (events/s, all streams; counted by
   SSE id, as one frame may carry several text deltas of one message), the server process's CPU
   use over the same window, and the *delivery lag*: at each read, how long ago the server made
   the newest event read (its `ts`), which shows whether streams fall behind;
3. cancels `--samples` streams one at a time (`POST .../runs/{run_id}/cancel`) while the others
   keep streaming, and opens a replacement after each, so N streams stay open. The latency is from
   just before the cancel request is sent to the moment the client has read that stream's
   `run_finished` (the end of the stream), so it includes the cancel request's round trip (on a
   connection opened before, as a client that keeps one does).

`--http` and `--loop` choose uvicorn's HTTP parser and event loop (`auto`: what uvicorn picks,
httptools and uvloop when installed), to compare them; `--flush-interval` sets the server's
`create_app(sse_flush_interval=...)`. The server prints how many young and how many older (generation
1 or 2) collections it ran, and the longest of each, when it stops.

Bounded: at most `--max-seconds` per N, and every number above is a count given on the command
line. `--write` replaces this script's section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import command_line, machine, percentile, write_section

from tether.server.sse import FLUSH_INTERVAL

ROOT = Path(__file__).resolve().parents[1]
SECTION = "bench/server_load.py"
BODY = {"input": {"messages": [{"role": "user", "content": "go"}]}, "on_disconnect": "cancel"}


# ---------------------------------------------------------------- server (child process)


def serve(fd: int, rate: float, tune: bool, http: str, loop: str, flush_interval: float) -> None:
    """Run one uvicorn worker on the inherited socket `fd` (`http`, `loop`: uvicorn's options;
    `flush_interval`: `create_app(sse_flush_interval=...)`)."""
    import anyio
    import uvicorn

    from tether import Agent, InMemoryCheckpointer
    from tether.models import Finish, Model, ModelDelta, TextDelta

    class PacedModel(Model):
        """Streams "tok " at `rate` per second until the stream is closed.

        The k-th token is due k/rate seconds after the start, whenever the previous one went
        out, so a server that cannot keep up shows as a growing delivery lag, not as fewer
        tokens offered.
        """

        name = "paced"

        @asynccontextmanager
        async def stream(self, messages: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async def deltas() -> AsyncIterator[ModelDelta]:
                due = time.monotonic()
                for _ in range(1_000_000):
                    due += 1 / rate
                    await anyio.sleep(max(0.0, due - time.monotonic()))
                    yield TextDelta("tok ")
                yield Finish("length")

            yield deltas()

    from tether.server import create_app, tune_gc

    agent = Agent(PacedModel(), checkpointer=InMemoryCheckpointer(), name="bench")
    api = create_app(agent, ui=False, sse_flush_interval=flush_interval)
    config = uvicorn.Config(
        api,
        http=http,
        loop=loop,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    # `socket.socket(fileno=...)` detects the family (AF_INET). uvicorn's own `fd=` treats every
    # inherited fd as AF_UNIX, so asyncio would not set TCP_NODELAY on accepted connections and
    # Nagle + delayed ACK would add ~40 ms to every small response.
    if tune:
        tune_gc()  # as `tether serve` does
    pauses = gc_pauses()

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # Here, not after `run()`: uvicorn re-raises the SIGTERM once it has shut down.
            young, older = pauses[0], pauses[1] + pauses[2]
            print(
                f"  server GC: {len(young)} young collections, longest "
                f"{max(young, default=0.0) * 1e3:.1f} ms; {len(older)} of generation 1 or 2, "
                f"longest {max(older, default=0.0) * 1e3:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
            await super().shutdown(sockets)

    Server(config).run(sockets=[socket.socket(fileno=fd)])


def gc_pauses() -> tuple[list[float], list[float], list[float]]:
    """The durations of the process's collections of generation 0, 1 and 2, as they happen."""
    import gc

    pauses: tuple[list[float], list[float], list[float]] = ([], [], [])
    started = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started)

    gc.callbacks.append(callback)
    return pauses


# ---------------------------------------------------------------- client


@dataclass
class Stream:
    thread_id: str
    run_id: str = ""
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    finished_at: float = 0.0
    last_id: int = -1  # the highest SSE `id` (event seq) read so far


@dataclass
class Counters:
    events: int = 0
    errors: int = 0
    # During the window: for each read, how long ago the server made the newest event in it.
    lags: list[float] | None = None


async def follow(host: str, port: int, s: Stream, counters: Counters) -> None:
    """Read one stream to its end over a raw connection, counting SSE messages.

    A raw asyncio connection instead of httpx keeps the client's cost per event small, so on a
    shared machine the client steals less CPU from the server it measures. Each SSE message ends
    with a blank line; uvicorn sends each `send()` of the server as one chunk, so a blank line is
    never split by the chunked-encoding framing.
    """
    body = json.dumps(BODY).encode()
    request = (
        f"POST /threads/{s.thread_id}/runs/stream HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "x-tether-run-id":
                s.run_id = value.strip()
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        while data := await reader.read(65536):
            # Count run events by their ids, not frames: a frame may cover several text deltas
            # of one message (the server coalesces a backlog), and its id is the last one's seq.
            at = data.rfind(b"\nid: ")
            end = data.find(b"\n", at + 5) if at >= 0 else -1
            if end >= 0:
                last = int(data[at + 5 : end])
                counters.events += last - s.last_id
                s.last_id = last
            if counters.lags is not None and (ts := data.rfind(b'"ts":')) >= 0:
                made = float(data[ts + 5 : data.find(b",", ts)])
                counters.lags.append(time.time() - made)
            if not s.started.is_set() and b"event: message_delta" in data:
                s.started.set()
            if b"event: run_finished" in data:
                s.finished_at = time.perf_counter()
                break
    except (OSError, ConnectionError, asyncio.IncompleteReadError):
        counters.errors += 1
    finally:
        if writer is not None:
            writer.close()
        s.started.set()
        s.ended.set()


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    streams: int
    rate: float  # tokens per second per stream
    open_seconds: float
    events_per_s: float
    server_cpu: float  # fraction of one core during the window
    client_cpu: float  # the same for this (client) process
    lags: list[float]  # the delivery lags during the window (see `Counters.lags`)
    latencies: list[float]
    cancel_rtts: list[float]
    errors: int
    load: float = 0.0  # the 1-minute load average just before this run (the machine is shared)
    gc: str = "tuned"  # "tuned": `tune_gc()` as `tether serve` does; "default": CPython's defaults


async def load(url: str, pid: int, n: int, window: float, samples: int, deadline: float) -> Result:
    host, port = url.removeprefix("http://").split(":")
    counters = Counters()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        # Open the cancels' connection now: its set-up (~40 ms here) is not a cancel's cost.
        (await client.get("/healthz")).raise_for_status()
        tasks: set[asyncio.Task[None]] = set()
        streams: list[Stream] = []
        serial = 0

        def open_one() -> Stream:
            nonlocal serial
            serial += 1
            s = Stream(thread_id=f"bench-{n}-{serial}")
            streams.append(s)
            task = asyncio.get_running_loop().create_task(follow(host, int(port), s, counters))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return s

        t0 = time.perf_counter()
        first = [open_one() for _ in range(n)]
        await asyncio.gather(*(s.started.wait() for s in first))
        open_seconds = time.perf_counter() - t0
        log(f"{n} streams open after {open_seconds:.1f} s")

        e0, c0, w0 = counters.events, cpu_seconds(pid), time.perf_counter()
        m0 = cpu_seconds(os.getpid())
        counters.lags = lags = []
        await asyncio.sleep(window)
        e1, c1, w1 = counters.events, cpu_seconds(pid), time.perf_counter()
        m1 = cpu_seconds(os.getpid())
        counters.lags = None

        log(f"window done: {(e1 - e0) / (w1 - w0):,.0f} events/s")
        latencies: list[float] = []
        rtts: list[float] = []
        for i in range(samples):
            if time.perf_counter() > deadline:
                log(f"time limit: stopped after {i} cancels")
                break
            if i % 50 == 0:
                log(f"cancel {i}/{samples}")
            s = streams[i]
            sent = time.perf_counter()
            r = await client.post(f"/threads/{s.thread_id}/runs/{s.run_id}/cancel")
            rtts.append(time.perf_counter() - sent)
            r.raise_for_status()
            await s.ended.wait()
            latencies.append(s.finished_at - sent)
            await open_one().started.wait()  # keep N streams open

        for task in tasks:  # the server is killed next; its runs end with it
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Result(
        streams=n,
        rate=0.0,
        open_seconds=open_seconds,
        events_per_s=(e1 - e0) / (w1 - w0),
        server_cpu=(c1 - c0) / (w1 - w0),
        client_cpu=(m1 - m0) / (w1 - w0),
        lags=lags,
        latencies=latencies,
        cancel_rtts=rtts,
        errors=counters.errors,
    )


def run_one(n: int, rate: float, tune: bool, args: argparse.Namespace) -> Result:
    load_before = os.getloadavg()[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-fd", str(sock.fileno()), "--rate", str(rate)]
        + ["--http", args.http, "--loop", args.loop]
        + ["--flush-interval", str(args.flush_interval)]
        + ([] if tune else ["--default-gc"]),
        pass_fds=(sock.fileno(),),
        cwd=ROOT,
    )
    sock.close()
    url = f"http://127.0.0.1:{port}"
    try:
        httpx.get(f"{url}/healthz", timeout=60).raise_for_status()
        deadline = time.perf_counter() + args.max_seconds
        coro = load(url, child.pid, n, args.window, min(args.samples, n), deadline)
        result = asyncio.run(asyncio.wait_for(coro, args.max_seconds + 60))
        result.rate = rate
        result.load = load_before
        return result
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def report(results: Sequence[Result], args: argparse.Namespace) -> str:
    lines = [
        f"<!-- {SECTION} -->",
        "## Server load: concurrent SSE streams, cancel -> stream end (`bench/server_load.py`)",
        "",
        f"- Machine: {os.cpu_count()} CPUs (nproc), {machine().split(', ', 1)[1]}",
        f"- Server: one uvicorn worker ({impl(args)}), `tether.server.create_app` over an "
        "`Agent` whose model streams tokens at a fixed rate per stream, forever; in-memory "
        "storage; loopback. Client: one asyncio process (raw sockets for the streams, httpx for "
        "the cancels) on the same machine.",
        f"- Command: `{command_line()}`",
        f"- Date: {datetime.date.today().isoformat()}; the machine is shared with other work: "
        "each row gives the 1-minute load average just before it",
        "- Cancel latency: from sending `POST .../runs/{run_id}/cancel` to the client having read "
        "that stream's `run_finished`, one cancel at a time while the other streams keep running "
        "(a replacement stream is opened after each, so N stay open).",
        "",
        "| Streams | Tokens/s each | GC | Load | Open all (s) | Events/s received | Server CPU "
        "| Delivery lag p99 | Cancel -> end p50 | p99 | max | Cancel request RTT p50 | Errors |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lat = r.latencies
        lines.append(
            f"| {r.streams:,} | {r.rate:g} | {r.gc} | {r.load:.2f} | {r.open_seconds:.2f} | "
            f"{r.events_per_s:,.0f} | "
            f"{r.server_cpu * 100:.0f}% of a core | {percentile(r.lags, 99) * 1e3:.0f} ms | "
            f"{statistics.median(lat) * 1e3:.1f} ms | "
            f"{percentile(lat, 99) * 1e3:.1f} ms | {max(lat) * 1e3:.1f} ms | "
            f"{statistics.median(r.cancel_rtts) * 1e3:.1f} ms | {r.errors} |"
        )
    lines += [
        "",
        "Target: cancel -> stream end <= 20 ms p99 with 1,000 concurrent streams on one worker.",
        "Delivery lag: at each read, how long ago the server made the newest event read.",
        f"Python {platform.python_version()}.",
        f"<!-- /{SECTION} -->",
    ]
    return "\n".join(lines)


def impl(args: argparse.Namespace) -> str:
    """The HTTP parser and event loop the server uses (what uvicorn's `auto` picks here)."""
    import importlib.util

    http, loop = args.http, args.loop
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http}, {loop}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--streams",
        default="100,1000,1000!,1000@2",
        help="comma-separated N or N@tokens_per_second; a trailing ! keeps CPython's default GC "
        "settings instead of tune_gc()",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="tokens per second per stream")
    parser.add_argument("--window", type=float, default=5.0, help="seconds of counting events")
    parser.add_argument("--samples", type=int, default=200, help="cancels measured per N")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="time limit per N")
    parser.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="uvicorn's HTTP implementation (auto: httptools when installed)",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="uvicorn's event loop (auto: uvloop when installed)",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=FLUSH_INTERVAL,
        help="the server's create_app(sse_flush_interval=...) in seconds (default: %(default)s)",
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--default-gc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.serve_fd is not None:
        serve(
            args.serve_fd,
            args.rate,
            tune=not args.default_gc,
            http=args.http,
            loop=args.loop,
            flush_interval=args.flush_interval,
        )
        return
    # This process measures: its own collector's pauses (1,000 sockets and their buffers) would
    # count as the server's latency, so it tunes its GC as the server does.
    from tether.server import tune_gc

    tune_gc()
    results = []
    for spec in args.streams.split(","):
        tune = not spec.endswith("!")
        count, _, rate = spec.rstrip("!").partition("@")
        n = int(count)
        r = run_one(n, float(rate) if rate else args.rate, tune, args)
        r.gc = "tuned" if tune else "default"
        results.append(r)
        lat = r.latencies
        print(
            f"{n:>5} streams ({r.gc} GC, load {r.load:.2f}): opened in {r.open_seconds:.2f} s, {r.events_per_s:,.0f} events/s, "
            f"server CPU {r.server_cpu * 100:.0f}% "
            f"({r.server_cpu / r.events_per_s * 1e6:.1f} µs per event), "
            f"client CPU {r.client_cpu * 100:.0f}%, delivery lag p50 "
            f"{statistics.median(r.lags) * 1e3:.0f} ms p99 {percentile(r.lags, 99) * 1e3:.0f} ms "
            f"max {max(r.lags) * 1e3:.0f} ms, cancel->end p50 "
            f"{statistics.median(lat) * 1e3:.1f} ms p99 {percentile(lat, 99) * 1e3:.1f} ms "
            f"max {max(lat) * 1e3:.1f} ms (n={len(lat)}), cancel RTT p50 "
            f"{statistics.median(r.cancel_rtts) * 1e3:.1f} ms, errors {r.errors}",
            flush=True,
        )
    text = report(results, args)
    print()
    print(text)
    if args.write:
        write_section(SECTION, text + "\n")


if __name__ == "__main__":
    main()
