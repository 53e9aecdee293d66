"""Identifiers for threads, runs, messages and checkpoints."""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]


def new_id() -> str:
    """Return a new 32-hex-digit id that sorts by creation time (a UUIDv7 layout, without dashes)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | (0x7 << 76) | (rand & ((1 << 76) - 1))
    return f"{value:032x}"
