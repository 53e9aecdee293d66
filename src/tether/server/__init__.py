"""tether's ASGI server: REST + SSE + WebSocket + OpenAI-compatible API + web UI.

Needs the `server` extra (`pip install 'tether[server]'`). See `create_app` and docs/server.md.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tether.server needs FastAPI; install the server extra: pip install 'tether[server]'"
    ) from exc

from .app import create_app
from .auth import hash_key
from .tuning import tune_gc

__all__ = ["create_app", "hash_key", "tune_gc"]
