"""A graph's shape: `START`, `END`, conditional edges (`Router`), and the frozen `Topology` that a
`StateGraph` compiles into (what `CompiledGraph` runs)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..state import StateSchema
from .nodes import Node

__all__ = ["END", "START", "Router", "Topology"]

START = "__start__"
END = "__end__"


@dataclass(frozen=True, slots=True)
class Router:
    """A conditional edge: `fn(state)` names the next node(s), translated through `mapping`."""

    source: str
    fn: Callable[..., Any]
    mapping: Mapping[Hashable, str] | None

    async def targets(self, state: dict[str, Any]) -> list[str]:
        result = self.fn(state)
        if inspect.isawaitable(result):
            result = await result
        keys = result if isinstance(result, list | tuple) else [result]
        out = []
        for key in keys:
            if self.mapping is not None:
                if key not in self.mapping:
                    raise UserError(
                        f"router of {self.source!r} returned {key!r}, which is not in its mapping "
                        f"{sorted(map(str, self.mapping))!r}"
                    )
                out.append(self.mapping[key])
            elif isinstance(key, str):
                out.append(key)
            else:
                raise UserError(f"router of {self.source!r} returned {key!r}; return a node name")
        return out


@dataclass(frozen=True, slots=True)
class Topology:
    """The checked nodes and edges of a compiled graph; a snapshot, so later edits to the
    `StateGraph` do not change an app that is running."""

    schema: StateSchema
    nodes: Mapping[str, Node]
    edges: Mapping[str, tuple[str, ...]]  # source -> static targets, in the order added
    routers: Mapping[str, tuple[Router, ...]]  # source -> conditional edges, in the order added

    async def next_nodes(self, ran: list[str], values: dict[str, Any]) -> list[str]:
        """The frontier after `ran` wrote `values`: static edges and routers, in order, deduplicated."""
        out: list[str] = []
        for name in ran:
            targets = list(self.edges.get(name, ()))
            for router in self.routers.get(name, ()):
                targets.extend(await router.targets(values))
            for target in targets:
                if target != END and target not in out:
                    if target not in self.nodes:
                        raise UserError(f"{name!r} routed to {target!r}, which is not a node")
                    out.append(target)
        return out
