"""Instructions per event on the token path, counted by valgrind (repeatable on a noisy machine).

    python bench/event_instructions.py [--items 20000] [--src PATH ...] [--cases graph,agent]

Wall-clock figures on a shared 2-core machine move by 2x between runs; instruction counts do not.
Each case runs in its own `valgrind --tool=callgrind` process, once with `--items` events and once
with none; the difference divided by `--items` is the cost of one event, start-up excluded. The
garbage collector is off in every case (it is measured by the wall-clock benches), so the figures
are the code's own work:

- `bare`: a bare async generator yielding a string, iterated with `async for`;
- `emit`: `RunHandle.emit_text` (the run side: one `message_delta` event built and logged);
- `read`: `async for` over a `RunStream` of already logged events (the reader side);
- `graph`: the whole path, a one-node graph whose async-generator node yields strings, read with
  `async for event in app.astream(...)` (in-memory storage);
- `agent`: the same for an `Agent` whose model streams `TextDelta`s.

`--src` runs the cases against other copies of tether's `src/` (e.g. a checkout of the baseline),
through `PYTHONPATH`, and prints one column each.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

CASES = ("bare", "emit", "read", "graph", "agent")

CHILD = r"""
import gc, inspect, sys
gc.disable()
import anyio
from tether import Agent, InMemoryCheckpointer, StateGraph
from tether.events import RunFinished
from tether.handle import RunHandle, RunStream
from tether.models.base import Model, TextDelta
from tether.run import RunRecord
from contextlib import asynccontextmanager

case, n = sys.argv[1], int(sys.argv[2])


class FastModel(Model):
    name = "fast"

    @asynccontextmanager
    async def stream(self, messages, *, tools=(), settings=None):
        async def deltas():
            for _ in range(n):
                yield TextDelta("tok ")
        yield deltas()


async def main():
    if case == "bare":
        async def tokens():
            for _ in range(n):
                yield "tok "
        async for _ in tokens():
            pass
    elif case in ("emit", "read"):
        handle = RunHandle(RunRecord(run_id="r", thread_id="t"))
        args = (("node", "m"), "tok ")
        if len(inspect.signature(RunHandle.emit_text).parameters) == 4:  # before (node, id, text)
            args = ("node", "m", "tok ")
        for _ in range(n):
            handle.emit_text(*args)
        handle.events.append(RunFinished(run_id="r", thread_id="t", seq=n, ts=0.0, status="completed"))
        if case == "read":
            async for _ in RunStream(handle=handle):
                pass
    elif case == "graph":
        async def node(state):
            for _ in range(n):
                yield "tok "
        g = StateGraph()
        g.add_node("node", node)
        g.set_entry_point("node")
        async for _ in g.compile(InMemoryCheckpointer()).astream("go"):
            pass
    else:
        async for _ in Agent(FastModel(), checkpointer=InMemoryCheckpointer()).astream("go"):
            pass


anyio.run(main)
"""


def instructions(src: str | None, case: str, items: int) -> int:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            case,
            str(items),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    match = re.search(r"Collected : (\d+)", out)
    assert match is not None, out
    return int(match.group(1))


def per_event(src: str | None, case: str, items: int) -> float:
    # `read` is measured against `emit` (the same logging, without the reader).
    base_case = "emit" if case == "read" else case
    with ThreadPoolExecutor(2) as pool:
        full = pool.submit(instructions, src, case, items)
        base = pool.submit(instructions, src, base_case, items if case == "read" else 0)
        return (full.result() - base.result()) / items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--src", action="append", default=[], help="another tether src/ dir")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of cases")
    args = parser.parse_args()
    cases = args.cases.split(",")
    sources: list[str | None] = [None, *args.src]
    names = ["this checkout", *args.src]
    rows = {case: [per_event(src, case, args.items) for src in sources] for case in cases}
    print(f"instructions per event ({args.items:,} events, GC off):")
    print(f"{'case':8}" + "".join(f"{name:>22}" for name in names))
    for case, values in rows.items():
        print(f"{case:8}" + "".join(f"{v:22,.0f}" for v in values))
    for i, name in enumerate(names):
        if {"graph", "bare"} <= rows.keys():
            print(f"{name}: graph / bare {rows['graph'][i] / rows['bare'][i]:.1f}x")
        if {"graph", "agent"} <= rows.keys():
            print(f"{name}: agent / graph {rows['agent'][i] / rows['graph'][i]:.2f}x")


if __name__ == "__main__":
    main()
