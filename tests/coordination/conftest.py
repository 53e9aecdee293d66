"""Fixtures for the coordination tests: one `registry` per coordination backend.

A backend joins the conformance suite by adding a param here (issue-11 adds `redis`, marked
`pytest.mark.redis`, each test on its own key prefix).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tether.coordination import LocalRunRegistry, RunRegistry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["local"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[RunRegistry]:
    backend: RunRegistry = LocalRunRegistry()
    try:
        yield backend
    finally:
        await backend.aclose()
