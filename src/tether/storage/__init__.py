"""Storage backends behind one `Checkpointer` contract.

`PostgresCheckpointer` lives in `tether.storage.postgres` (the `postgres` extra).
"""

from __future__ import annotations

from .base import Checkpoint, Checkpointer, EventBatch, ThreadInfo
from .memory import InMemoryCheckpointer
from .sqlite import SqliteCheckpointer

__all__ = [
    "Checkpoint",
    "Checkpointer",
    "EventBatch",
    "InMemoryCheckpointer",
    "SqliteCheckpointer",
    "ThreadInfo",
]
