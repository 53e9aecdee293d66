#!/usr/bin/env bash
# Create .venv and install tether (editable) with the given extras; default: everything a developer
# needs. Usage: bash scripts/setup.sh [EXTRAS]   e.g. server,local
#
# Quiet, one line per step, except the slow one: llama-cpp-python (extras `local` and `dev`) is
# built from source the first time, about 4 minutes on 2 cores, and that step shows the build's
# progress. pip caches the built wheel, so later set-ups take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-server,postgres,redis,mcp,local,dev}"
python=${PYTHON:-python3}
pip=(.venv/bin/python -m pip --disable-pip-version-check)
step() { printf '==> %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $("$python" --version)"
  "$python" -m venv .venv
  "${pip[@]}" install --quiet --upgrade pip
fi

has_llama() { .venv/bin/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("llama_cpp") is None)'; }

# Print pip's verbose build log as one line per percent of the llama.cpp build (make prints
# "[ 42%] Building ...", ninja "[42/120] Building ..."), plus pip's own summary lines.
build_progress() {
  awk '
    match($0, /\[ *[0-9]+%\]/) { p = substr($0, RSTART + 1, RLENGTH - 3) + 0 }
    match($0, /\[[0-9]+\/[0-9]+\]/) { split(substr($0, RSTART + 1, RLENGTH - 2), n, "/"); p = int(100 * n[1] / n[2]) }
    p != "" && p != last { printf "    building llama.cpp: %3d%%\n", p; last = p; fflush() }
    /^(Using cached|Successfully installed|ERROR)/ { print "    " $0; fflush() }
  '
}

if [[ ",$extras," =~ ,(local|dev), ]] && ! has_llama; then
  step "installing llama-cpp-python for the local model: the first time it builds llama.cpp" \
    "from source, about 4 minutes on 2 cores (pip caches it for later set-ups)"
  log=.venv/llama-cpp-build.log
  if ! CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "${pip[@]}" install --verbose -e ".[local]" 2>&1 | tee "$log" | build_progress; then
    tail -n 40 "$log" >&2
    echo "setup.sh: installing llama-cpp-python failed; the whole log is in $log" >&2
    exit 1
  fi
fi

step "installing tether[$extras] into .venv"
"${pip[@]}" install --quiet -e ".[${extras}]"

if [[ ",$extras," =~ ,local, ]] && [[ ",$extras," =~ ,server, ]]; then
  next=".venv/bin/tether demo      # the demo agent and its chat UI at http://127.0.0.1:8000"
elif [[ ",$extras," =~ ,dev, ]]; then
  next=".venv/bin/tether demo  or  bash scripts/test.sh"
elif [[ ",$extras," =~ ,server, ]]; then
  next=".venv/bin/tether serve module:app      # see docs/getting-started.md"
else
  next=".venv/bin/python      # import tether; see docs/getting-started.md"
fi
step "ready. Next: $next"
