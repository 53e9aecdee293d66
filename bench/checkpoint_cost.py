"""Checkpoint cost: how long one step's commit takes on each storage backend.

A step commit is what the engine writes after every step: a checkpoint whose `messages` channel
grew by one assistant message (about 100 tokens of text), five events and the run record, in one
`commit()`. It is measured on threads of about 20 and about 200 messages: each timed thread is
first filled (untimed) and then takes `--steps` timed steps, so the "20-message" rows cover 20-29
messages. A flat p50 between the two sizes shows that the commit does not rewrite the history.

The share of a streamed answer puts that number in context. A 100-token answer is 100
`message_delta` events; streaming it takes 100 / `--tokens-per-second` seconds (2 s at the default
50 tokens/s, a typical hosted model), and one commit follows it. The last column compares the
commit with the CPU time tether spends emitting those 100 events (building each one and encoding
it to JSON for the wire), measured here.

Usage:
    python bench/checkpoint_cost.py                 # memory, sqlite, postgres if reachable
    python bench/checkpoint_cost.py --n 2000 --write   # also updates BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from _common import command_line, scratch_schema, write_section

from tether.events import (
    CheckpointSaved,
    CustomEvent,
    Event,
    MessageDeltaEvent,
    MessageEvent,
    NodeFinished,
    NodeStarted,
    event_to_json,
)
from tether.ids import new_id
from tether.messages import Message
from tether.run import RunRecord
from tether.storage import Checkpoint, Checkpointer, InMemoryCheckpointer

SECTION = "bench/checkpoint_cost.py"
ANSWER = " ".join(f"word{i}" for i in range(100))  # about 100 tokens of text
SIZES = (20, 200)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc), {cpu}, Python {platform.python_version()}"


def step_events(run: RunRecord, seq: int, step: int, message: Message, cp_id: str) -> list[Event]:
    base: dict[str, Any] = {"run_id": run.run_id, "thread_id": run.thread_id, "ts": time.time()}
    return [
        NodeStarted(**base, seq=seq, node="agent", step=step),
        MessageEvent(**base, seq=seq + 1, node="agent", message=message),
        CustomEvent(**base, seq=seq + 2, node="agent", data={"usage": {"tokens": 100}}),
        NodeFinished(**base, seq=seq + 3, node="agent", step=step),
        CheckpointSaved(**base, seq=seq + 4, checkpoint_id=cp_id, step=step),
    ]


async def measure(store: Checkpointer, size: int, n: int, steps: int) -> list[float]:
    """Seconds per step commit, `n` of them, on threads of `size`..`size + steps - 1` messages."""
    timings: list[float] = []
    while len(timings) < n:
        thread_id = new_id()
        messages = [
            Message.user(f"question {i}") if i % 2 else Message.assistant(ANSWER)
            for i in range(size)
        ]
        head = Checkpoint(
            checkpoint_id=new_id(),
            thread_id=thread_id,
            parent_id=None,
            run_id=None,
            step=0,
            values={"messages": messages, "turns": 0},
        )
        await store.commit(checkpoint=head)  # the history: untimed
        run = RunRecord(run_id=new_id(), thread_id=thread_id, status="running")
        for step in range(1, steps + 1):
            answer = Message.assistant(ANSWER)
            messages = [*messages, answer]
            cp = Checkpoint(
                checkpoint_id=new_id(),
                thread_id=thread_id,
                parent_id=head.checkpoint_id,
                run_id=run.run_id,
                step=step,
                values={"messages": messages, "turns": step},
                next=("agent",),
            )
            run.heartbeat_at = time.time()
            events = step_events(run, step * 5, step, answer, cp.checkpoint_id)
            start = time.perf_counter()
            await store.commit(checkpoint=cp, events=events, run=run)
            timings.append(time.perf_counter() - start)
            head = cp
    return timings[:n]


def delta_events_cost(rounds: int = 200) -> float:
    """Median seconds to build and JSON-encode 100 `message_delta` events."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for seq in range(100):
            event = MessageDeltaEvent(
                run_id="r",
                thread_id="t",
                seq=seq,
                ts=0.0,
                node="agent",
                message_id="m",
                content=" word",
            )
            event_to_json(event)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@asynccontextmanager
async def postgres_stores(dsn: str) -> AsyncIterator[dict[str, Checkpointer]]:
    """Postgres checkpointers, each on a scratch schema (dropped afterwards); none if unreachable.

    `postgres` runs with the server's settings; `postgres, synchronous_commit=off` skips the WAL
    fsync at each commit, which is SQLite's `synchronous=NORMAL` trade-off.
    """
    try:
        from tether.storage.postgres import PostgresCheckpointer
    except ImportError:
        yield {}
        return
    with scratch_schema(dsn) as plain, scratch_schema(dsn, "-csynchronous_commit=off") as unsafe:
        if plain is None or unsafe is None:
            yield {}
            return
        stores: dict[str, Checkpointer] = {
            "postgres": PostgresCheckpointer(plain),
            "postgres, synchronous_commit=off": PostgresCheckpointer(unsafe),
        }
        try:
            yield stores
        finally:
            for store in stores.values():
                await store.aclose()


def fsync_floor(dsn: str, rounds: int = 300) -> float | None:
    """Median seconds of the cheapest durable commit: one one-row INSERT, autocommitted."""
    try:
        import psycopg
    except ImportError:
        return None
    table = f"tether_bench_probe_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE TABLE {table} (a int)")
            try:
                samples = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    conn.execute(f"INSERT INTO {table} VALUES (1)")
                    samples.append(time.perf_counter() - start)
            finally:
                conn.execute(f"DROP TABLE {table}")
    except psycopg.Error:
        return None
    return statistics.median(samples)


async def run(n: int, steps: int, dsn: str) -> dict[tuple[str, int], list[float]]:
    results: dict[tuple[str, int], list[float]] = {}

    async def bench(name: str, store: Checkpointer) -> None:
        await store.setup()
        await measure(store, SIZES[0], min(n, 50), steps)  # warm up: pools, prepared statements
        for size in SIZES:
            results[(name, size)] = await measure(store, size, n, steps)
            p50 = statistics.median(results[(name, size)]) * 1e3
            print(f"{name:34} {size:4} messages: p50 {p50:.3f} ms", file=sys.stderr)

    await bench("memory", InMemoryCheckpointer())
    with tempfile.TemporaryDirectory() as tmp:
        from tether.storage.sqlite import SqliteCheckpointer

        sqlite = SqliteCheckpointer(Path(tmp) / "bench.db")
        try:
            await bench("sqlite", sqlite)
        finally:
            await sqlite.aclose()
    if dsn:
        async with postgres_stores(dsn) as stores:
            for name, store in stores.items():
                await bench(name, store)
    return results


def report(
    results: dict[tuple[str, int], list[float]],
    deltas: float,
    floor: float | None,
    tps: float,
    steps: int,
    command: str,
) -> str:
    answer_s = 100 / tps
    rows = []
    for (name, size), values in results.items():
        p50 = statistics.median(values)
        rows.append(
            f"| {name} | {size}-{size + steps - 1} | {p50 * 1e3:.3f} | {percentile(values, 99) * 1e3:.3f} "
            f"| {p50 / answer_s * 100:.3f}% | {p50 / deltas:.1f}x |"
        )
    table = "\n".join(rows)
    n = len(next(iter(results.values())))
    floor_note = ""
    if floor is not None:
        floor_note = (
            f"\n- Postgres floor: the cheapest durable commit on this server (a one-row INSERT,\n"
            f"  autocommitted) takes {floor * 1e3:.3f} ms (p50), almost all of it the WAL fsync.\n"
            f"  The `synchronous_commit=off` rows skip that fsync, like SQLite's `NORMAL`."
        )
    return f"""<!-- {SECTION} -->
## Checkpoint cost: one step's commit per storage backend (`{SECTION}`)

- Machine: {machine()}
- Load: 1-minute load average {os.getloadavg()[0]:.1f} at the end of the run (a shared machine); the
  p99 column also holds SQLite's automatic WAL checkpoints
- Date: {datetime.date.today().isoformat()}
- Command: `{command}`
- Step commit: checkpoint (the `messages` channel grows by one ~100-token assistant message) +
  5 events + the run record, in one `commit()`; {n} commits per row, {steps} steps per thread after an
  untimed fill. SQLite: a temp file, WAL, `synchronous=NORMAL`. Postgres: local server over TCP
  (127.0.0.1), a scratch schema.
- Share of answer: p50 / the {answer_s:g} s it takes to stream a 100-token answer at {tps:g} tokens/s.
- vs 100 deltas: p50 / the CPU time to build and JSON-encode the answer's 100 `message_delta`
  events ({deltas * 1e3:.3f} ms, measured).{floor_note}

| Backend | Messages in thread | p50 ms | p99 ms | Share of answer | vs 100 deltas |
|---|---|---:|---:|---:|---:|
{table}

Targets: p50 <= 1 ms on SQLite and <= 3 ms on Postgres for a 20-message thread, and no growth with
the thread's length (the 200-message rows). A durable Postgres commit cannot beat the server's
fsync floor; the `synchronous_commit=off` rows show what tether and psycopg add on top of it.
<!-- /{SECTION} -->
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1000, help="timed commits per backend and size")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per thread")
    parser.add_argument("--tokens-per-second", type=float, default=50.0)
    parser.add_argument(
        "--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/test", help="'' to skip"
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args(argv)
    results = anyio.run(run, args.n, args.steps, args.postgres_dsn)
    command = command_line()
    floor = fsync_floor(args.postgres_dsn) if args.postgres_dsn else None
    text = report(results, delta_events_cost(), floor, args.tokens_per_second, args.steps, command)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
