"""Stop-fuzz: random stops across graph, agent and flow runs, each checked against S1–S8.

    python reliability/stop_fuzz.py --count 10000 [--seed 1]

Each case picks an engine and a random stop: its point (before the run starts, in a token stream,
in parallel nodes, between steps, after completion; after any event of an agent run; at any tick of
a flow loop), its mode (`now`, `after_step`, `rollback`), and whether it goes by run id or thread
id; some cases run user code that raises during the stop (a reducer, a flow handler's `finally`).
It then runs the invariant checks of the test suite for that engine:
`tests/graph/test_stop_invariants.py` (`scenario`, `faulty_scenario`),
`tests/agent/test_agent_invariants.py` and `tests/flow/test_flow_invariants.py`. A case whose
checks fail (or that raises anything else) is a violation; the script prints each one with the
arguments that reproduce it and exits 1 if there was any.

CI runs a few hundred cases (`tests/core/test_stop_fuzz.py`); RELIABILITY.md records the 10,000.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the invariant checks live in the test suite

from tests.agent import test_agent_invariants as agent_checks  # noqa: E402
from tests.flow import test_flow_invariants as flow_checks  # noqa: E402
from tests.graph import test_stop_invariants as graph_checks  # noqa: E402
from tests.graph._scenario import TOKENS  # noqa: E402

MODES = ["now", "after_step", "rollback"]
KINDS = ["graph", "graph_raising", "agent", "flow"]


@dataclass(frozen=True)
class Case:
    """One random stop: the engine's check and its arguments."""

    kind: str
    check: Callable[..., Awaitable[None]]
    args: tuple[Any, ...]

    def __str__(self) -> str:
        return f"{self.kind}{self.args!r}"


@dataclass
class Report:
    """What a fuzz run found."""

    cases: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


def random_case(rng: random.Random) -> Case:
    """A random case; every kind, mode, stop point and target has the same chance."""
    kind = rng.choice(KINDS)
    mode = rng.choice(MODES)
    by_thread = rng.random() < 0.5
    if kind == "graph":
        point = rng.choice(graph_checks.POINTS)
        return Case(kind, graph_checks.scenario, (point, mode, rng.randint(1, TOKENS), by_thread))
    if kind == "graph_raising":
        point = rng.choice(["before_start", "mid"])
        return Case(kind, graph_checks.faulty_scenario, (point, mode, by_thread))
    if kind == "agent":
        return Case(kind, agent_checks.scenario, (rng.randint(1, 45), mode))
    stop_at = rng.randint(0, flow_checks.TICKS)
    return Case(kind, flow_checks.scenario, (stop_at, mode, by_thread, rng.random() < 0.5))


def fuzz(count: int, *, seed: int = 1, progress: Callable[[int], None] | None = None) -> Report:
    """Run `count` random cases (reproducible from `seed`) and return the report."""
    rng = random.Random(seed)
    report = Report()
    started = time.perf_counter()
    for i in range(count):
        case = random_case(rng)
        try:
            anyio.run(case.check, *case.args)
        except Exception:
            report.violations.append(f"case {i} {case}:\n{traceback.format_exc()}")
        report.cases += 1
        report.by_kind[case.kind] += 1
        if progress is not None:
            progress(i + 1)
    report.seconds = time.perf_counter() - started
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    def progress(done: int) -> None:
        if done % 500 == 0:
            print(f"  {done} cases", flush=True)

    report = fuzz(args.count, seed=args.seed, progress=progress)
    for violation in report.violations:
        print(violation)
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(report.by_kind.items()))
    print(
        f"{report.cases} cases ({kinds}) in {report.seconds:.0f} s: "
        f"{len(report.violations)} violations"
    )
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
