#!/usr/bin/env bash
# Start a local cluster of N `tether serve` processes on one Postgres database and one Redis:
#   scripts/cluster.sh TARGET [N=3] [BASE_PORT=8100] [WORKERS=0]
# e.g. scripts/cluster.sh examples/my_app.py:agent 3
# With WORKERS > 0 the servers queue background runs (--run-queue) and WORKERS `tether worker`
# processes execute them.
# Each process listens on BASE_PORT+i; all share TETHER_DATABASE_URL and TETHER_REDIS_URL
# (defaults: the local test servers) and TETHER_REDIS_PREFIX (default: tether-cluster).
# Ctrl+C stops them all. The tests start their own processes (tests/cluster/test_processes.py).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/cluster.sh TARGET [N] [BASE_PORT] [WORKERS]}"
count="${2:-3}"
base="${3:-8100}"
workers="${4:-0}"
queue=()
if ((workers > 0)); then queue=(--run-queue); fi
export TETHER_DATABASE_URL="${TETHER_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}"
export TETHER_REDIS_URL="${TETHER_REDIS_URL:-redis://127.0.0.1:6379/0}"
export TETHER_REDIS_PREFIX="${TETHER_REDIS_PREFIX:-tether-cluster}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for ((i = 0; i < count; i++)); do
  .venv/bin/tether serve "$target" --port $((base + i)) "${queue[@]}" &
  pids+=($!)
done
for ((i = 0; i < workers; i++)); do
  .venv/bin/tether worker "$target" &
  pids+=($!)
done
wait
