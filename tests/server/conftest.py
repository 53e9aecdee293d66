"""Fixtures for the server tests: in-process apps over ASGI, and a real uvicorn process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tether import App
from tether.server import create_app
from tether.testing import ScriptedModel, Step

from ._chat import chat_app
from ._client import Server, serve


@dataclass
class Served:
    """An in-process server: the FastAPI app, the tether app behind it, and its model."""

    api: Any
    app: App
    model: ScriptedModel
    client: httpx.AsyncClient


@pytest.fixture
async def make_served() -> AsyncIterator[Any]:
    """`await make_served(*turns, **create_app_kwargs)` → a `Served` over httpx's ASGI transport."""
    clients: list[httpx.AsyncClient] = []

    async def make(
        *turns: list[Step] | str, default_reply: str | None = "ok", **kwargs: Any
    ) -> Served:
        model = ScriptedModel(*turns, default_reply=default_reply)
        app = chat_app(model)
        api = create_app(app, **kwargs)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://tether")
        clients.append(client)
        return Served(api, app, model, client)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One real uvicorn process serving `_served:api` for the module's tests."""
    with serve() as srv:
        yield srv


from tests.storage.conftest import postgres_dsn  # noqa: E402, F401  # one fresh schema per test
