"""Find (or start) the PostgreSQL and Redis servers that some tests need.

`require_postgres()` and `require_redis()` return a URL for a server that answers. When the server
is down they try to start it once, with the Debian commands this repository's CI uses. When it
still does not answer, the calling test is skipped with the reason, or fails when `CI=true`, so a
CI run can never pass by silently skipping its database tests.

Waiting for a freshly started server is a bounded readiness poll, not a test sync point.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

__all__ = ["require_postgres", "require_redis"]

POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB = "127.0.0.1", 5432, "test"
REDIS_URL = "redis://127.0.0.1:6379/0"
_READY_TIMEOUT = 15.0  # seconds a started server gets to answer


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def _start(command: list[str] | str) -> str:
    """Run a start command; returns what went wrong, or "" if it exited 0."""
    try:
        done = subprocess.run(
            command,
            shell=isinstance(command, str),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{command!r} could not run: {exc}"
    if done.returncode != 0:
        return f"{command!r} exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
    return ""


def _poll(probe: Callable[[], str | None]) -> str | None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        found = probe()
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _postgres_dsn() -> str | None:
    """A DSN that connects, trying the roles that trust auth has on the test machines."""
    import psycopg

    for user in ("postgres", "root"):
        dsn = f"postgresql://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{POSTGRES_DB}"
        try:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            continue
        return dsn
    return None


@functools.cache
def _find_postgres() -> tuple[str | None, str]:
    try:
        import psycopg  # noqa: F401  # only to tell a missing extra from a down server
    except ImportError:
        return None, "psycopg is not installed (pip install 'tether[postgres]')"
    dsn = _postgres_dsn()
    if dsn is not None:
        return dsn, ""
    try:
        versions = sorted(os.listdir("/etc/postgresql"))
    except OSError:
        versions = []
    if not versions:
        return None, (
            f"PostgreSQL is not reachable at {POSTGRES_HOST}:{POSTGRES_PORT} and no cluster is "
            "installed under /etc/postgresql to start"
        )
    problem = _start(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"])
    dsn = _poll(_postgres_dsn)
    if dsn is not None:
        return dsn, ""
    return None, (
        f"PostgreSQL is not reachable at {POSTGRES_HOST}:{POSTGRES_PORT} (database "
        f"{POSTGRES_DB!r}, users 'postgres' and 'root') even after starting it"
        + (f": {problem}" if problem else "")
    )


def require_postgres() -> str:
    """The DSN of the test PostgreSQL server, e.g. `postgresql://postgres@127.0.0.1:5432/test`.

    Skips the calling test (fails it when `CI=true`) if the server cannot be reached or started.
    """
    dsn, reason = _find_postgres()
    if dsn is None:
        _unavailable(reason)
    assert dsn is not None
    return dsn


def _redis_answers() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return None
    return REDIS_URL if reply.startswith(b"+PONG") else None


@functools.cache
def _find_redis() -> tuple[str | None, str]:
    if _redis_answers() is not None:
        return REDIS_URL, ""
    problem = _start(
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
        "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
    )
    if _poll(_redis_answers) is not None:
        return REDIS_URL, ""
    return None, "Redis is not reachable at 127.0.0.1:6379 even after starting it" + (
        f": {problem}" if problem else ""
    )


def require_redis() -> str:
    """The URL of the test Redis server, `redis://127.0.0.1:6379/0`.

    Skips the calling test (fails it when `CI=true`) if the server cannot be reached or started.
    """
    url, reason = _find_redis()
    if url is None:
        _unavailable(reason)
    assert url is not None
    return url
