"""The graph engine: `StateGraph` compiled to a runnable app."""

from __future__ import annotations

from .compiled import CompiledGraph
from .state_graph import END, START, StateGraph

__all__ = ["END", "START", "CompiledGraph", "StateGraph"]
