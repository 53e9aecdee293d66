"""Fixtures for the storage tests: one `backend` per storage backend, and a `checkpointer` on it.

Every Postgres test gets a fresh schema (named `tether_test_<random>`), selected through the
DSN's `search_path` option and dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests._services import require_postgres
from tests.storage.conformance import Backend

from tether.storage import Checkpointer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    # A nested path: the backend must create the parent directories.
    return os.fspath(tmp_path / "nested" / "dir" / "tether.db")


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A DSN whose `search_path` is a fresh schema, dropped when the test ends."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    base = require_postgres()
    schema = f"tether_test_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_conninfo(base, options=f"-csearch_path={schema}")
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def backend(request: pytest.FixtureRequest) -> Backend:
    name: str = request.param
    if name == "memory":
        return Backend.memory()
    if name == "sqlite":
        return Backend.sqlite(request.getfixturevalue("sqlite_path"))
    return Backend.postgres(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
async def checkpointer(backend: Backend) -> AsyncIterator[Checkpointer]:
    store = backend.open()
    await store.setup()
    try:
        yield store
    finally:
        for opened in backend.opened:  # `store` and any other instance a test opened
            await opened.aclose()
