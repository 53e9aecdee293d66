#!/usr/bin/env bash
# Create .venv and install tether with the given extras (default: everything a developer needs).
# llama-cpp-python is built from source the first time (several minutes on 2 cores); pip caches it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-server,postgres,redis,mcp,local,dev}"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
