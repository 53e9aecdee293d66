"""The embedded default: a SQLite file under `./.tether/` (override with `TETHER_DB`)."""

from __future__ import annotations

import os

from .base import Checkpointer

__all__ = ["DEFAULT_DB_PATH", "default_checkpointer"]

DEFAULT_DB_PATH = os.path.join(".tether", "tether.db")


def default_checkpointer() -> Checkpointer:
    """A `SqliteCheckpointer` on `$TETHER_DB`, or `./.tether/tether.db`."""
    from .sqlite import SqliteCheckpointer

    return SqliteCheckpointer(os.environ.get("TETHER_DB") or DEFAULT_DB_PATH)
