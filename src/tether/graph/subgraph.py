"""A compiled graph (or an agent) as a node of another graph: `StateGraph.add_node(name, app)`.

The node runs the app as a child run (see `tether.children`): its input is the parent's state,
restricted to the keys the child's schema has; when the child completes, its final values,
restricted to the keys the parent's schema has, are the node's update (messages merge by id, so the
parent gains the child's new messages). A `now` stop of the parent stops the child; the child's
partial output is stored `stopped` on its own thread and merged into the parent's stopped state
the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..children import run_child
from ..context import RunContext

if TYPE_CHECKING:
    from ..state import StateSchema
    from .compiled import CompiledGraph

__all__ = ["subgraph_node"]


def subgraph_node(
    name: str, child: CompiledGraph, parent: StateSchema
) -> Callable[[dict[str, Any], RunContext], Any]:
    """The node function that runs `child` for the node `name` of a graph over `parent`."""

    def update(values: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in values.items() if key in parent.channels}

    async def run_subgraph(state: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        """Run the child graph. Cancelled: the child is stopped; its partial state is kept."""
        input = {key: value for key, value in state.items() if key in child.schema.channels}
        values = await run_child(
            child,
            input,
            ctx,
            segment=f"{name}.{ctx.step}",
            path=name,
            on_stopped=lambda stopped, _completed: ctx._keep(update(stopped)),
        )
        return update(values)

    run_subgraph.__name__ = name
    return run_subgraph
