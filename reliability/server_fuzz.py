"""The long schemathesis run against a real uvicorn: count the cases, require 0 server errors.

    .venv/bin/python reliability/server_fuzz.py --examples 300

Starts the test server (`tests/server/_served.py`: an agent on an echo model, with one API key)
in a uvicorn process, then runs `tests/server/test_schemathesis.py` against it over the network
with `--examples` examples per operation (plus schemathesis's coverage phase). Prints the cases
per operation and status, the total, and the server errors (5xx); exits 1 if there was any 5xx or
any failed check. Figures go to RELIABILITY.md ("Server").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server._client import serve  # noqa: E402

KEY = "sk-reliability-fuzz-1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="examples per operation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "statuses.json"
        env = {"TETHER_TEST_API_KEYS": KEY, "TETHER_TEST_DB": str(Path(tmp) / "fuzz.db")}
        started = time.monotonic()
        with serve(env=env) as server:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--timeout",
                    "3600",
                    "tests/server/test_schemathesis.py",
                ],
                cwd=ROOT,
                env={
                    **os.environ,
                    "TETHER_SCHEMATHESIS_URL": server.url,
                    "TETHER_SCHEMATHESIS_KEY": KEY,
                    "TETHER_SCHEMATHESIS_EXAMPLES": str(args.examples),
                    "TETHER_SCHEMATHESIS_REPORT": str(report),
                },
                check=False,
            )
        elapsed = time.monotonic() - started
        statuses: Counter[str] = Counter(json.loads(report.read_text()) if report.exists() else {})
    by_status: Counter[int] = Counter()
    for label, count in statuses.items():
        by_status[int(label.rsplit(" ", 1)[1])] += count
    total = sum(statuses.values())
    errors = sum(n for status, n in by_status.items() if status >= 500)
    print(f"cases: {total} in {elapsed:.0f} s ({args.examples} examples per operation)")
    print("by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())))
    print(
        f"server errors (5xx): {errors}; checks: {'passed' if done.returncode == 0 else 'FAILED'}"
    )
    return 0 if errors == 0 and done.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
