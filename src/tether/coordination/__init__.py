"""Run coordination behind one `RunRegistry` contract."""

from __future__ import annotations

from .base import RunRegistry, StopResult
from .local import LocalRunRegistry

__all__ = ["LocalRunRegistry", "RunRegistry", "StopResult"]
