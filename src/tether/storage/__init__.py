"""Storage backends behind one `Checkpointer` contract."""

from __future__ import annotations

from .base import Checkpoint, Checkpointer, ThreadInfo
from .memory import InMemoryCheckpointer

__all__ = ["Checkpoint", "Checkpointer", "InMemoryCheckpointer", "ThreadInfo"]
