"""Fixtures for the coordination tests: one `registry` per coordination backend.

A backend joins the conformance suite by adding a param here (issue-11 adds `redis`, marked
`pytest.mark.redis`, each test on its own key prefix).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from tests._services import require_redis
from tether.coordination import LocalRunRegistry, RunRegistry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[RunRegistry]:
    backend: RunRegistry
    if request.param == "redis":
        from tether.coordination.redis import RedisRunRegistry

        url, prefix = require_redis(), f"tether-test-{secrets.token_hex(6)}"
        backend = RedisRunRegistry(url, prefix=prefix)
    else:
        backend = LocalRunRegistry()
    try:
        yield backend
    finally:
        await backend.aclose()
        if request.param == "redis":
            await _delete_prefix(url, prefix)


async def _delete_prefix(url: str, prefix: str) -> None:
    """Delete the test's keys (never FLUSHDB: the Redis server is shared)."""
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
