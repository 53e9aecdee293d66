#!/usr/bin/env bash
# Set up everything the tests need, then run them: the README's test command and CI's.
# On a fresh Debian machine (as root) it installs what is missing:
# - Debian's chromium for the browser tests (Playwright drives /usr/bin/chromium);
# - PostgreSQL (trust auth on 127.0.0.1, database `test`) and Redis, started if they are down
#   (the tests themselves skip with a reason when they are missing, or fail when CI=true);
# - the Node packages of every test folder with a package-lock.json (`npm ci`);
# - .venv with every extra (scripts/setup.sh).
# Then ruff, mypy --strict, and pytest (arguments pass through: bash scripts/test.sh -m "not llm").
# tests/packaging builds the wheel and installs it into fresh venvs: that needs PyPI (or pip's
# cache); `-m "not packaging"` leaves it out.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '==> %s\n' "$*"; }
root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ] && root; then
  step "installing ${missing[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    # A fresh cluster for the tests only: trust connections from this machine.
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | tail -n1)
    printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' >"$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | tail -n1)" main reload 2>/dev/null || true
  fi
fi

if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | tail -n1)" main start || true
fi
if command -v psql >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 \
  && ! psql -h 127.0.0.1 -U postgres -d test -c 'SELECT 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null 2>&1 || true
fi
if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi

while IFS= read -r lock; do
  dir=$(dirname "$lock")
  if [ ! -d "$dir/node_modules" ]; then
    step "npm ci in $dir"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done < <(find tests -name package-lock.json -not -path '*/node_modules/*' 2>/dev/null)

bash scripts/setup.sh
step "ruff, mypy --strict, pytest"
.venv/bin/python -m ruff check src tests bench examples
.venv/bin/python -m ruff format --check src tests bench examples
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
