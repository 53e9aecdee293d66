"""Long threads: a step's commit and `get_state` on threads of 20, 200 and 10,000 messages.

    python bench/long_thread.py [--steps 30] [--reads 30] [--postgres-dsn DSN]
                                [--baseline-src PATH] [--write]

Backends: memory, SQLite (a temp file) and Postgres (a scratch schema on `--postgres-dsn`,
dropped afterwards; skipped if the server is unreachable or the DSN is '').

Each size gets a fresh thread, filled with one untimed checkpoint of `size` messages (user
questions and ~100-token answers, alternating). Then:
- step commit: `--steps` commits, each one checkpoint whose `messages` channel grew by one answer
  with 3 events, timed. The channel is what the engine passes: the `add_messages` result of the
  previous channel and the answer (that merge is timed apart, as `add_messages`);
- `get_state` (warm): `app.aget_state(thread)` on the checkpointer that wrote the thread;
- `get_state` (cold): the same on a new checkpointer over the same database, as another process
  or a restarted server would read it (its first read fills its cache; the median is over
  `--reads`).
The target is a cost independent of the thread's length; the ratio column divides by the
20-message row of the same backend, measured in the same run.

`--baseline-src PATH` measures another copy of tether's `src/` too (e.g. the baseline commit's,
from `git archive`), in a subprocess right before this checkout's, and puts its step commit and
warm `get_state` beside this checkout's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import anyio
from _common import machine, scratch_schema, write_section

from tether import InMemoryCheckpointer, StateGraph
from tether.events import Event, MessageEvent, NodeFinished, NodeStarted
from tether.ids import new_id
from tether.messages import Message, add_messages
from tether.storage import Checkpoint, Checkpointer
from tether.storage.sqlite import SqliteCheckpointer

SIZES = (20, 200, 10_000)
ANSWER = " ".join(f"word{i}" for i in range(100))


def _app(store: Checkpointer) -> Any:
    g = StateGraph()
    g.add_node("node", lambda state: {})
    g.set_entry_point("node")
    return g.compile(store)


def _events(run_id: str, thread_id: str, seq: int, message: Message) -> list[Event]:
    base: dict[str, Any] = {"run_id": run_id, "thread_id": thread_id, "ts": time.time()}
    return [
        NodeStarted(**base, seq=seq, node="agent", step=1),
        MessageEvent(**base, seq=seq + 1, node="agent", message=message),
        NodeFinished(**base, seq=seq + 2, node="agent", step=1),
    ]


async def measure(
    store: Checkpointer,
    reopen: Callable[[], Checkpointer] | None,
    size: int,
    steps: int,
    reads: int,
) -> dict[str, float]:
    thread = new_id()
    messages = add_messages(
        None,
        [
            Message.user(f"question {i}") if i % 2 == 0 else Message.assistant(ANSWER)
            for i in range(size)
        ],
    )
    head = Checkpoint(
        checkpoint_id=new_id(),
        thread_id=thread,
        parent_id=None,
        run_id=None,
        step=0,
        values={"messages": messages},
    )
    await store.commit(checkpoint=head)
    run_id = new_id()
    commits, merges = [], []
    for step in range(1, steps + 1):
        answer = Message.assistant(ANSWER)
        start = time.perf_counter()
        messages = add_messages(messages, answer)
        merges.append(time.perf_counter() - start)
        cp = Checkpoint(
            checkpoint_id=new_id(),
            thread_id=thread,
            parent_id=head.checkpoint_id,
            run_id=run_id,
            step=step,
            values={"messages": messages},
            next=("agent",),
        )
        events = _events(run_id, thread, step * 3, answer)
        start = time.perf_counter()
        await store.commit(checkpoint=cp, events=events)
        commits.append(time.perf_counter() - start)
        head = cp
    app = _app(store)
    warm = []
    for _ in range(reads):
        start = time.perf_counter()
        state = await app.aget_state(thread)
        warm.append(time.perf_counter() - start)
    assert len(state.values["messages"]) == size + steps
    out = {
        "merge": statistics.median(merges),
        "commit": statistics.median(commits),
        "warm": statistics.median(warm),
    }
    if reopen is not None:
        other = reopen()
        cold_app = _app(other)
        cold = []
        for _ in range(reads):
            start = time.perf_counter()
            await cold_app.aget_state(thread)
            cold.append(time.perf_counter() - start)
        await other.aclose()
        out["cold_first"] = cold[0]
        out["cold"] = statistics.median(cold)
    return out


async def measure_all(steps: int, reads: int, dsn: str) -> dict[tuple[str, int], dict[str, float]]:
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, scratch_schema(dsn) as pg:
        path = os.path.join(tmp, "long.db")
        backends: list[tuple[str, Checkpointer, Callable[[], Checkpointer] | None]] = [
            ("memory", InMemoryCheckpointer(), None),
            ("sqlite", SqliteCheckpointer(path), lambda: SqliteCheckpointer(path)),
        ]
        if pg is not None:
            from tether.storage.postgres import PostgresCheckpointer

            backends.append(
                ("postgres", PostgresCheckpointer(pg), lambda: PostgresCheckpointer(pg))
            )
        for name, store, reopen in backends:
            await measure(store, reopen, 20, 5, 5)  # warm-up
            for size in SIZES:
                results[(name, size)] = r = await measure(store, reopen, size, steps, reads)
                print(name, size, {k: f"{v * 1e3:.3f} ms" for k, v in r.items()}, file=sys.stderr)
            await store.aclose()
    return results


def baseline(src: str, steps: int, reads: int, dsn: str) -> dict[tuple[str, int], dict[str, float]]:
    """`measure_all` run against the tether in `src`, in a subprocess."""
    args = [sys.executable, __file__, "--steps", str(steps), "--reads", str(reads)]
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
    out = subprocess.run(
        [*args, "--postgres-dsn", dsn, "--json"], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"the baseline run failed:\n{out.stderr}")
    return {(name, int(size)): r for name, size, r in json.loads(out.stdout)}


def ratio(r: dict[str, float], base: dict[str, float], key: str) -> str:
    return f"{r[key] * 1e3:.3f} ({r[key] / base[key]:.1f}x)"


async def main(
    steps: int, reads: int, dsn: str, write: bool, baseline_src: str | None, as_json: bool
) -> None:
    load = os.getloadavg()[0]
    before = None if baseline_src is None else baseline(baseline_src, steps, reads, dsn)
    results = await measure_all(steps, reads, dsn)
    if as_json:
        print(json.dumps([[name, size, r] for (name, size), r in results.items()]))
        return
    rows = []
    for (name, size), r in results.items():
        base = results[(name, SIZES[0])]
        cells = [ratio(r, base, "commit"), ratio(r, base, "warm")]
        if "cold" in r:
            cells += [ratio(r, base, "cold"), f"{r['cold_first'] * 1e3:.3f}"]
        else:
            cells += ["n/a", "n/a"]
        if before is not None:
            old = before[(name, size)]
            cells += [ratio(old, before[(name, SIZES[0])], k) for k in ("commit", "warm")]
        rows.append(f"| {name} | {size:,} | " + " | ".join(cells) + " |")
    merges = [
        f"| {size:,} | {ratio(results[('memory', size)], results[('memory', SIZES[0])], 'merge')}"
        + (
            ""
            if before is None
            else f" | {ratio(before[('memory', size)], before[('memory', SIZES[0])], 'merge')}"
        )
        + " |"
        for size in SIZES
    ]
    table, merge_table = "\n".join(rows), "\n".join(merges)
    print(table)
    print(merge_table)
    if write:
        then = "" if baseline_src is None else " --baseline-src <baseline src>"
        extra = "" if before is None else " step commit, baseline | `get_state` warm, baseline |"
        extra_rule = "" if before is None else "---:|---:|"
        merge_head = "| Messages | `add_messages` |" + ("" if before is None else " baseline |")
        merge_rule = "|---:|---:|" + ("" if before is None else "---:|")
        write_section(
            "bench/long_thread.py",
            f"""<!-- bench/long_thread.py -->
## Long threads: step commit and `get_state` at 20, 200 and 10,000 messages (`bench/long_thread.py`)

- Date: {date.today()}. Command: `python bench/long_thread.py --steps {steps} --reads {reads}{
                then
            } --write`
  (Postgres: {
                "local server over TCP, a scratch schema"
                if ("postgres", 20) in results
                else "skipped"
            })
- Machine: {machine()}; 1-minute load average {load:.1f} at the start (shared with other work)
- Medians in ms; in brackets the ratio to the 20-message row of the same backend, same run.
  Step commit: one checkpoint that adds a ~100-token answer, plus 3 events; its messages channel
  is the `add_messages` result the engine would pass. `get_state` warm: the checkpointer that
  wrote the thread; cold: a new checkpointer on the same database (median of {reads} reads;
  "first" is its very first read, which decodes every message once).{
                ""
                if before is None
                else " Baseline: the same"
                " script on the baseline's `src/`, in a subprocess just before."
            }

| Backend | Messages | step commit | `get_state` warm | `get_state` cold | cold, first read |{extra}
|---|---:|---:|---:|---:|---:|{extra_rule}
{table}

The merge itself, `add_messages(messages, answer)` (the engine's reducer, the same for every
backend; measured on the memory rows):

{merge_head}
{merge_rule}
{merge_table}
<!-- /bench/long_thread.py -->
""",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument(
        "--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/test", help="'' to skip"
    )
    parser.add_argument("--baseline-src", help="another tether src/ dir to measure first")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    anyio.run(
        main, args.steps, args.reads, args.postgres_dsn, args.write, args.baseline_src, args.json
    )
