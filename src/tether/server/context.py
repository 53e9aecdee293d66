"""What every route needs: the catalog of apps, the API keys, the limits; and the caller.

One `ServerContext` lives on `app.state.tether`; routes get it, and the authenticated `Principal`,
through FastAPI dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from ..handle import RunHandle
from ..run import RunRecord
from .auth import ApiKeys, Principal, principal_of
from .catalog import Catalog, ThreadRef
from .inputs import header_value

__all__ = ["Caller", "Ctx", "ServerContext", "clean_config", "run_headers"]


@dataclass(frozen=True, slots=True)
class ServerContext:
    """The server's shared, read-only configuration."""

    catalog: Catalog
    keys: ApiKeys | None  # None: auth is off
    max_body_bytes: int
    queue_background_runs: bool = False  # POST .../runs queues runs for `tether worker`
    sse_flush_interval: float = 0.0  # the longest a run's SSE stream holds text deltas (seconds)


def server_context(conn: HTTPConnection) -> ServerContext:
    """The context of the app that received `conn`."""
    ctx = conn.app.state.tether
    assert isinstance(ctx, ServerContext)
    return ctx


# Async on purpose: FastAPI runs plain `def` dependencies in a worker thread, which costs a
# thread hop (and an event-loop round trip) per request.
async def _ctx(request: Request) -> ServerContext:
    return server_context(request)


async def _caller(request: Request) -> Principal:
    return principal_of(request, server_context(request).keys)


Ctx = Annotated[ServerContext, Depends(_ctx)]
Caller = Annotated[Principal, Depends(_caller)]

_RESERVED_CONFIG = frozenset({"thread_id", "run_id", "configurable", "checkpoint_id"})


def clean_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """A client's run config without the keys the server decides (thread and run ids)."""
    cleaned = {k: v for k, v in config.items() if k not in _RESERVED_CONFIG}
    return cleaned or None


def run_headers(ref: ThreadRef, handle: RunHandle | RunRecord) -> dict[str, str]:
    """Headers that tell a client which run a response is about before any event arrives."""
    return {
        "X-Tether-Run-Id": header_value(handle.run_id),
        "X-Tether-Thread-Id": header_value(ref.public_id),
        "Content-Location": header_value(f"/threads/{ref.public_id}/runs/{handle.run_id}"),
    }
