#!/usr/bin/env bash
# kill -9 the process running a run, N trials (default 20), on real uvicorn processes sharing one
# Postgres schema and one Redis prefix (tests/cluster/test_processes.py). Each trial checks: the run
# is failed/worker_lost within the lease (2 s) + one sweep, its streamed output is kept as a stopped
# message, a join from any event id ends with the terminal event, and the thread accepts a new run.
# CI runs 2 trials; record this script's count in RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
TETHER_KILL_TRIALS="${1:-20}" exec .venv/bin/python -m pytest tests/cluster/test_processes.py \
  -q -p no:cacheprovider -k kill_9
