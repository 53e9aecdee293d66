#!/usr/bin/env bash
# Set up everything the tests need, then run them: the README's test command and CI's.
# - Debian's chromium for the browser tests (Playwright drives /usr/bin/chromium);
# - PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379, started if they are down
#   (the tests themselves skip with a reason when they are missing, or fail when CI=true);
# - .venv with every extra.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing Debian chromium for the browser tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi

bash scripts/setup.sh
.venv/bin/python -m ruff check src tests bench examples
.venv/bin/python -m ruff format --check src tests bench examples
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
