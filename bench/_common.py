"""Shared helpers for the benchmark scripts: percentiles and the machine description."""

from __future__ import annotations

import os
import platform
import secrets
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(section: str, text: str) -> None:
    """Put `text` into BENCHMARKS.md between `<!-- section -->` and `<!-- /section -->`,
    replacing what was there, or append it."""
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    start, end = f"<!-- {section} -->", f"<!-- /{section} -->\n"
    if start in current and end in current:
        before, rest = current.split(start, 1)
        _, after = rest.split(end, 1)
        current = before + text + after
    else:
        current = current.rstrip("\n") + "\n\n" + text
    BENCHMARKS.write_text(current)


def command_line() -> str:
    """How this script was run, as a command to paste into a shell: `python` and its arguments."""
    return "python " + " ".join(sys.argv)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`, by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def summary_ms(values: Sequence[float]) -> str:
    """`p50 / p99 / max` of seconds, in milliseconds."""
    return (
        f"p50 {statistics.median(values) * 1e3:7.3f} ms   p99 {percentile(values, 99) * 1e3:7.3f} ms"
        f"   max {max(values) * 1e3:7.3f} ms   (n={len(values)})"
    )


def machine() -> str:
    """`N cores, CPU model, Python version`."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


@contextmanager
def scratch_schema(dsn: str, options: str = "") -> Iterator[str | None]:
    """A DSN whose `search_path` is a new Postgres schema, dropped afterwards (plus `options`,
    e.g. `-csynchronous_commit=off`); None without a DSN, psycopg or a reachable server."""
    if not dsn:
        yield None
        return
    try:
        import psycopg
        from psycopg.conninfo import make_conninfo
    except ImportError:
        yield None
        return
    schema = f"tether_bench_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        print(f"postgres skipped: {exc}", file=sys.stderr)
        yield None
        return
    try:
        yield make_conninfo(dsn, options=f"-csearch_path={schema} {options}".strip())
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
