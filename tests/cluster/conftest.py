"""Fixtures for the scale-out tests: a fresh Postgres schema and a fresh Redis key prefix per test.

The shared Redis is never flushed: a test deletes only the keys under its own prefix.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests._services import require_postgres, require_redis
from tests.storage.conftest import postgres_dsn

__all__ = ["fresh_schema", "postgres_dsn", "redis_prefix", "redis_url"]


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


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A Postgres conninfo whose `search_path` is a new schema, dropped on exit."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    base = require_postgres()
    schema = f"tether_cluster_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_conninfo(base, options=f"-csearch_path={schema}")
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
