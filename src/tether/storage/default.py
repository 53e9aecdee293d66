"""The embedded default: a SQLite file under `./.tether/` (override with `TETHER_DB`), or Postgres
when `TETHER_DATABASE_URL` is set (`tether serve --database-url`)."""

from __future__ import annotations

import os

from .base import Checkpointer

__all__ = ["DEFAULT_DB_PATH", "default_checkpointer"]

DEFAULT_DB_PATH = os.path.join(".tether", "tether.db")


def default_checkpointer() -> Checkpointer:
    """A `PostgresCheckpointer` on `$TETHER_DATABASE_URL` when it is set, else a
    `SqliteCheckpointer` on `$TETHER_DB`, or `./.tether/tether.db`."""
    url = os.environ.get("TETHER_DATABASE_URL")
    if url:
        from .postgres import PostgresCheckpointer

        return PostgresCheckpointer(url)
    from .sqlite import SqliteCheckpointer

    return SqliteCheckpointer(os.environ.get("TETHER_DB") or DEFAULT_DB_PATH)
