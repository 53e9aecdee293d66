"""Shared fixtures: the anyio backend, and fresh apps on the in-memory backend."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """tether runs on asyncio (anyio over asyncio)."""
    return "asyncio"
