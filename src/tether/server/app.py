"""`create_app()`: tether's ASGI server — REST, SSE, WebSocket, OpenAI-compatible, and the web UI.

    from tether.server import create_app
    api = create_app({"assistant": agent, "research": flow}, api_keys="keys.txt")
    # uvicorn mymodule:api

Runs execute in tether's host task group on the server's event loop, never in a request's task: a
request can end, be cancelled or lose its client without killing a run mid-commit; it can only ask
the run to stop (`requested_by="disconnect"`), as the endpoint's `on_disconnect` says.

Shutdown: when the server stops, runs still active here are stopped with
`requested_by="shutdown"` (their partial answers saved), waiting at most `SHUTDOWN_GRACE` seconds.
Long-lived SSE connections hold uvicorn's graceful shutdown open; run uvicorn with
`--timeout-graceful-shutdown` (`tether serve` does) so they are closed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from ..app import App
from ..errors import UserError
from ..handle import RunHandle
from .auth import ApiKeysSource, load_api_keys
from .catalog import Catalog
from .context import ServerContext
from .errors import BodyLimitMiddleware, install_error_handlers
from .inputs import ThreadIdPath
from .openai_compat import router as openai_router
from .protocols import router as protocols_router
from .routes_runs import router as runs_router
from .routes_threads import router as threads_router
from .routes_ws import router as ws_router
from .sse import FLUSH_INTERVAL

__all__ = ["SHUTDOWN_GRACE", "WEB_DIR", "create_app"]

log = logging.getLogger("tether.server")

SHUTDOWN_GRACE = 5.0  # seconds the shutdown waits for stopped runs to save their partial output
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(
    apps: App | Mapping[str, App],
    *,
    api_keys: ApiKeysSource = None,
    max_body_bytes: int = 1_000_000,
    cors_origins: Sequence[str] = (),
    ui: bool = True,
    title: str = "tether",
    queue_background_runs: bool = False,
    sse_flush_interval: float = FLUSH_INTERVAL,
) -> FastAPI:
    """Build the FastAPI app that serves `apps` (graphs, agents, flows — any `App`).

    Args:
        apps: One app (served under its `name`, or `"default"`), or a mapping of names to apps.
            The first is the default for requests that name none.
        api_keys: `{key: name}`, a list of keys, or a key file's path; `None` reads
            `TETHER_API_KEYS` (comma-separated) and leaves the server open when that is unset.
            See `tether.server.auth`.
        max_body_bytes: The largest request body accepted; larger ones get 413.
        cors_origins: Origins allowed to call the API from a browser (the bundled UI needs none).
        ui: Serve the web chat UI at `/`.
        title: The OpenAPI title.
        queue_background_runs: Background runs (`POST /threads/{id}/runs`) go to the run queue
            of `tether worker` processes instead of executing here (`tether.worker`; every app
            needs a run queue).
        sse_flush_interval: The longest time a run's SSE stream holds text deltas to write them
            together (`0`: each as it comes). Below it, the time grows with the streams open in
            the process, 0.2 ms per stream (one stream: nothing to notice; 1,000: 0.2 s), so that
            a worker serving many streams makes one write per several tokens instead of one per
            token. The first token after a pause and every other kind of event go out at once,
            and a stop requested through this server is written at once. See `tether.server.sse`.

    Returns:
        The FastAPI app; its OpenAPI docs are at `/docs`.
    """
    if max_body_bytes < 1024:
        raise UserError(f"max_body_bytes must be at least 1024, not {max_body_bytes!r}")
    if not 0 <= sse_flush_interval <= 1:
        raise UserError(
            f"sse_flush_interval must be between 0 and 1 second, not {sse_flush_interval!r}"
        )
    catalog = Catalog(apps)
    if queue_background_runs:
        from ..worker import run_queue_of

        for app in catalog.apps.values():
            run_queue_of(app)  # UserError now, not at the first request
    ctx = ServerContext(
        catalog=catalog,
        keys=load_api_keys(api_keys),
        max_body_bytes=max_body_bytes,
        queue_background_runs=queue_background_runs,
        sse_flush_interval=sse_flush_interval,
    )

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        await catalog.ensure_ready()
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await _stop_local_runs(catalog)

    from .. import __version__

    api = FastAPI(
        title=title,
        version=__version__,
        description="Streaming AI agents you can stop at any moment, and continue.",
        lifespan=lifespan,
    )
    api.state.tether = ctx
    install_error_handlers(api)
    api.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    if cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Tether-Run-Id", "X-Tether-Thread-Id"],
        )
    api.include_router(threads_router)
    api.include_router(runs_router)
    api.include_router(ws_router)
    api.include_router(openai_router)
    api.include_router(protocols_router)

    @api.get("/info", tags=["server"], summary="What this server serves (no auth needed)")
    async def info() -> dict[str, Any]:
        return {
            "name": "tether",
            "version": __version__,
            "apps": catalog.names,
            "default_app": catalog.default_name,
            "auth": ctx.keys is not None,
        }

    @api.get("/healthz", tags=["server"], summary="Liveness probe")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if ui:
        _mount_ui(api)
    return api


def _mount_ui(api: FastAPI) -> None:
    if not (WEB_DIR / "index.html").is_file():
        log.warning("the web UI files are missing from %s; serving the API only", WEB_DIR)
        return
    api.mount("/ui", StaticFiles(directory=WEB_DIR), name="ui")
    no_cache = {"Cache-Control": "no-cache"}

    @api.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers=no_cache)

    @api.get("/threads/{thread_id}/view", include_in_schema=False)
    async def thread_page(thread_id: ThreadIdPath) -> RedirectResponse:
        return RedirectResponse(f"/#{quote(thread_id, safe='')}")


async def _stop_local_runs(catalog: Catalog) -> None:
    """Stop every run executing in this process, and wait (bounded) for their commits."""
    handles: dict[str, RunHandle] = {}
    for app in catalog.apps.values():
        for handle in app.registry.local_runs():
            handles[handle.run_id] = handle
    for handle in handles.values():
        handle.stop(requested_by="shutdown", reason="the server is shutting down")
    with anyio.move_on_after(SHUTDOWN_GRACE):
        for handle in handles.values():
            await handle.wait()
