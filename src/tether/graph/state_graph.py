"""`StateGraph`: declare nodes and edges, then `compile()` into a runnable app."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UserError
from ..state import StateSchema
from .compiled import CompiledGraph
from .nodes import Node
from .subgraph import subgraph_node
from .topology import END, START, Router, Topology

if TYPE_CHECKING:
    from ..coordination.base import RunRegistry
    from ..storage.base import Checkpointer

__all__ = ["END", "START", "Router", "StateGraph"]


class StateGraph:
    """A graph of nodes over a typed state.

    Example:
        graph = StateGraph()              # MessagesState by default
        graph.add_node("MAIN", main_agent)
        graph.add_edge(START, "MAIN")     # or graph.set_entry_point("MAIN")
        graph.add_edge("MAIN", END)
        app = graph.compile()
    """

    def __init__(self, schema: type[Any] | None = None) -> None:
        self.schema = StateSchema(schema)
        self.nodes: dict[str, Node] = {}
        self.edges: dict[str, list[str]] = {}
        self.routers: dict[str, list[Router]] = {}

    def add_node(
        self, name: str | Callable[..., Any], fn: Callable[..., Any] | None = None
    ) -> StateGraph:
        """Add a node; `add_node(fn)` names it after the function.

        `fn` may be a compiled graph or an agent (a subgraph): it then runs as a child run on its
        own thread, with its events streamed under the node's name (see `tether.graph.subgraph`);
        `add_node(app)` names it after `app.name`.
        """
        if fn is None:
            if isinstance(name, CompiledGraph):
                if not name.name:
                    raise UserError(
                        "add_node(app) needs a name: give the app one, or add_node('name', app)"
                    )
                fn, name = name, name.name
            elif not callable(name):
                raise UserError(f"add_node({name!r}) needs a function as well")
            else:
                fn, name = name, getattr(name, "__name__", repr(name))
        assert isinstance(name, str)
        if name in (START, END) or not name:
            raise UserError(f"{name!r} is reserved and cannot name a node")
        if name in self.nodes:
            raise UserError(f"a node named {name!r} already exists")
        if isinstance(fn, CompiledGraph):
            fn = subgraph_node(name, fn, self.schema)
        self.nodes[name] = Node.of(name, fn)
        return self

    def add_edge(self, source: str, target: str) -> StateGraph:
        """Run `target` after `source`. Several edges out of one node fan out in parallel."""
        for name in (source, target):
            if not isinstance(name, str):
                raise UserError(f"an edge joins node names (str), not {name!r}")
        self.edges.setdefault(source, []).append(target)
        return self

    def add_conditional_edges(
        self,
        source: str,
        router: Callable[..., Any],
        mapping: Mapping[Hashable, str] | Sequence[str] | None = None,
    ) -> StateGraph:
        """After `source`, call `router(state)`; its result (a key of `mapping`, a node name, END, or
        a list of them for a fan-out) picks the next node(s)."""
        if mapping is not None and not isinstance(mapping, Mapping):
            mapping = {name: name for name in mapping}
        self.routers.setdefault(source, []).append(Router(source, router, mapping))
        return self

    def set_entry_point(self, name: str) -> StateGraph:
        """Start runs at `name` (the same as `add_edge(START, name)`)."""
        return self.add_edge(START, name)

    def set_finish_point(self, name: str) -> StateGraph:
        """End runs after `name` (the same as `add_edge(name, END)`)."""
        return self.add_edge(name, END)

    def _validate(self) -> None:
        if not self.edges.get(START) and not self.routers.get(START):
            raise UserError(
                "the graph has no entry point; call set_entry_point(name) or add_edge(START, name)"
            )
        known = {*self.nodes, END}
        for source, targets in self.edges.items():
            if source != START and source not in self.nodes:
                raise UserError(
                    f"an edge starts at {source!r}, which is not a node; add_node it first"
                )
            for target in targets:
                if target not in known:
                    raise UserError(
                        f"an edge from {source!r} goes to {target!r}, which is not a node"
                    )
        for source in self.routers:
            if source != START and source not in self.nodes:
                raise UserError(f"a conditional edge starts at {source!r}, which is not a node")
            for router in self.routers[source]:
                for target in (router.mapping or {}).values():
                    if target not in known:
                        raise UserError(
                            f"the mapping of {source!r} names {target!r}, which is not a node"
                        )

    def topology(self) -> Topology:
        """Check the graph and return a snapshot of its nodes and edges (what an app runs).

        Raises:
            UserError: the graph has no entry point, or an edge names an unknown node.
        """
        self._validate()
        return Topology(
            schema=self.schema,
            nodes=dict(self.nodes),
            edges={source: tuple(targets) for source, targets in self.edges.items()},
            routers={source: tuple(routers) for source, routers in self.routers.items()},
        )

    def compile(
        self,
        checkpointer: Checkpointer | None = None,
        *,
        registry: RunRegistry | None = None,
        interrupt_before: Iterable[str] | Literal["*"] = (),
        interrupt_after: Iterable[str] | Literal["*"] = (),
        recursion_limit: int = 25,
        name: str | None = None,
    ) -> CompiledGraph:
        """Check the graph and return a runnable app.

        Args:
            checkpointer: Where state, runs and events are stored. Default: a SQLite file under
                `./.tether/` (see `tether.storage.default`).
            registry: Run coordination. Default: in-process.
            interrupt_before: Pause (status `interrupted`) before these nodes; `"*"` for all.
            interrupt_after: Pause after these nodes; `"*"` for all.
            recursion_limit: The most supersteps one run may take.
            name: The app's name (the server serves apps by name).
        """
        topology = self.topology()
        if recursion_limit < 1:
            raise UserError(f"recursion_limit must be >= 1, not {recursion_limit!r}")
        return CompiledGraph(
            topology,
            checkpointer=checkpointer,
            registry=registry,
            interrupt_before=_names(interrupt_before, self.nodes),
            interrupt_after=_names(interrupt_after, self.nodes),
            recursion_limit=recursion_limit,
            name=name,
        )


def _names(value: Iterable[str] | Literal["*"], nodes: Mapping[str, Node]) -> frozenset[str]:
    if value == "*":
        return frozenset(nodes)
    names = frozenset(value)
    unknown = names - set(nodes)
    if unknown:
        raise UserError(f"cannot interrupt at {sorted(unknown)!r}: no such node")
    return names
