"""Fixtures for the scale-out tests: a fresh Postgres schema and a fresh Redis key prefix per test.

The shared Redis is never flushed: a test deletes only the keys under its own prefix.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests._services import require_redis
from tests.storage.conftest import postgres_dsn

__all__ = ["postgres_dsn", "redis_prefix", "redis_url"]


@pytest.fixture
def redis_url() -> str:
    return require_redis()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    import redis

    prefix = f"tether-test-{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
