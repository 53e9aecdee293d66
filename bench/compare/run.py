"""Side by side: tether, LangGraph and Agno on the same stop and streaming scenarios.

    python bench/compare/run.py [--write] [--only tether,langgraph,agno]

One command: it creates one venv per framework under `bench/compare/.venvs/` (`python -m venv`,
then `pip install` of the framework: tether from this checkout, `langgraph`, `agno`), runs
`fw_<name>.py` in each (every script implements the same scenarios, `_scenarios.py`, with its
framework's own API) and prints one Markdown table. `--write` also puts it into BENCHMARKS.md.
Pass `--upgrade` to reinstall the newest releases into existing venvs.

Scenarios (all in one process per framework, no network, scripted models):
- a node that streams a token every 20 ms, stopped after 5 tokens; and a node blocked in a
  1.5 s await, stopped once it is inside it: the time from the stop call until the consumer's
  stream ends, and how much user code still ran after the stop;
- what the thread keeps after that stop (the partial answer? marked as stopped?) and whether
  the next run on the same thread works;
- stream throughput: a node whose async generator yields 20,000 tiny tokens, read by the
  consumer, against a bare async generator in the same process (medians of 5 alternating rounds);
- a stop while the model's three tool calls run (one quick, two sleeping 1 s): do the other
  tools still run, is every call answered in the saved transcript, does the next turn work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import venv
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from _common import machine, write_section  # noqa: E402

FRAMEWORKS = {  # name: (pip requirements, script)
    "tether": (["-e", f"{ROOT}"], "fw_tether.py"),  # editable: always this checkout
    "langgraph": (["langgraph"], "fw_langgraph.py"),
    "agno": (["agno"], "fw_agno.py"),
}


def python_of(name: str, upgrade: bool) -> Path:
    """The venv interpreter for `name`, creating and installing the venv on first use."""
    home = HERE / ".venvs" / name
    python = home / "bin" / "python"
    fresh = not python.exists()
    if fresh:
        print(f"creating {home} ...", file=sys.stderr)
        venv.create(home, with_pip=True)
    if fresh or upgrade:
        requirements, _ = FRAMEWORKS[name]
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--upgrade", *requirements], check=True
        )
    return python


def run(name: str, upgrade: bool) -> dict[str, Any]:
    python = python_of(name, upgrade)
    _, script = FRAMEWORKS[name]
    print(f"running {name} ...", file=sys.stderr)
    out = subprocess.run(
        [python, script], cwd=HERE, check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _yes(value: Any) -> str:
    return "yes" if value is True else "no" if value is False else str(value)


def table(reports: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Any) -> None:
        rows.append((label, [cell(r["results"]) for r in reports]))

    row("stop API used", lambda r: "")
    rows[-1] = ("stop API used", [r["stop_api"] for r in reports])
    for shape, title in (
        ("stop_ticking", "node streaming every 20 ms"),
        ("stop_blocked", "node blocked in a 1.5 s await"),
    ):
        row(
            f"{title}: stop -> stream end, p50 / max",
            lambda r, s=shape: f"{_ms(r[s]['p50_ms'])} / {_ms(r[s]['max_ms'])}",
        )
        row(
            f"{title}: user code run after the stop (sum over {{n}} stops)",
            lambda r, s=shape: str(r[s]["work_after_stop"]),
        )
        row(
            f"{title}: partial answer kept / marked",
            lambda r, s=shape: f"{_yes(r[s]['partial_saved'])} / {r[s]['marked'] or 'not marked'}",
        )
        row(f"{title}: next run on the thread works", lambda r, s=shape: _yes(r[s]["next_run_ok"]))
    row(
        "stream throughput, in-memory store: tokens/s",
        lambda r: f"{r['throughput']['items_per_s']:,.0f}",
    )
    row(
        "stream throughput: slower than a bare async generator by",
        lambda r: f"{r['throughput']['ratio']:.1f}x",
    )
    row(
        "stream throughput, durable default store (tether: SQLite)",
        lambda r: (
            f"{r['throughput_durable']['ratio']:.1f}x" if "throughput_durable" in r else "n/a"
        ),
    )
    row("3 tool calls: stop -> stream end", lambda r: _ms(r["tools"]["stop_ms"]))
    row(
        "3 tool calls: tools that finished after the stop",
        lambda r: str(r["tools"]["tools_finished_after_stop"]),
    )
    row(
        "3 tool calls: every call answered in the saved transcript",
        lambda r: _yes(r["tools"]["every_call_answered"]),
    )
    row("3 tool calls: next turn works", lambda r: _yes(r["tools"]["next_turn_ok"]))

    n = reports[0]["results"]["stop_ticking"]["n"], reports[0]["results"]["stop_blocked"]["n"]
    head = "| | " + " | ".join(f"{r['framework']} {r['version']}" for r in reports) + " |"
    lines = [head, "|---|" + "---|" * len(reports)]
    for label, cells in rows:
        label = label.replace("{n}", str(n[0] if "20 ms" in label else n[1]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="also update BENCHMARKS.md")
    parser.add_argument("--upgrade", action="store_true", help="reinstall into existing venvs")
    parser.add_argument("--only", default=",".join(FRAMEWORKS))
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    reports = [run(name, args.upgrade) for name in args.only.split(",")]
    load_after = os.getloadavg()[0]
    text = table(reports)
    print(text)
    if args.write:
        write_section(
            "bench/compare",
            "<!-- bench/compare -->\n"
            "## Side by side: tether, LangGraph and Agno (`bench/compare/run.py`)\n\n"
            f"- Date: {date.today()}. Command: `python bench/compare/run.py --write`\n"
            f"- Machine: {machine()}; 1-minute load average {load_before:.1f} before and "
            f"{load_after:.1f} after the run (shared with other work)\n"
            "- Each framework in its own venv, one process each, scripted models, no network; "
            "the scenarios are described in `bench/compare/run.py`.\n\n"
            f"{text}\n<!-- /bench/compare -->\n",
        )


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
