"""tether's ASGI server: REST + SSE + WebSocket + OpenAI-compatible API + web UI.

Needs the `server` extra (`pip install 'tether[server]'`). See `create_app` and docs/server.md.
"""

from __future__ import annotations

from .._extras import require

try:
    import fastapi  # noqa: F401
except ImportError:  # pragma: no cover - exercised in a venv without the extra (tests/packaging)
    require("tether.server", "server")
    raise  # the extra is installed but broken: the original error says how

from .app import create_app
from .auth import hash_key
from .tuning import tune_gc

__all__ = ["create_app", "hash_key", "tune_gc"]
