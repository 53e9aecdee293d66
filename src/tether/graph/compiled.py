"""`CompiledGraph`: a `StateGraph` as an app, and `GraphProgram`, its superstep loop.

Each superstep runs the frontier's nodes concurrently, applies their updates in node order, commits a
checkpoint, and routes to the next frontier. Between steps, an `after_step` stop ends the run at the
clean boundary. A `now` stop cancels the step: `stopped_state()` then returns the last values plus
what the step's nodes produced so far (whole updates of nodes that finished, partial messages of the
ones that did not, marked `stopped`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from ..app import App, RunOptions
from ..commands import Command
from ..engine import Execution, Outcome, Program, StoppedState
from ..errors import GraphRecursionError, UserError
from ..interrupts import GraphInterrupt, Interrupt
from ..state import coerce_input
from .nodes import NodeOutput, run_node
from .topology import START, Topology

if TYPE_CHECKING:
    from ..coordination.base import RunRegistry
    from ..storage.base import Checkpointer

__all__ = ["CompiledGraph", "GraphProgram"]


class CompiledGraph(App):
    """A runnable graph: `astream`/`stream`, `ainvoke`/`invoke`, `astop`/`stop`, state and runs."""

    def __init__(
        self,
        topology: Topology,
        *,
        checkpointer: Checkpointer | None,
        registry: RunRegistry | None,
        interrupt_before: frozenset[str],
        interrupt_after: frozenset[str],
        recursion_limit: int,
        name: str | None,
    ) -> None:
        super().__init__(checkpointer=checkpointer, registry=registry, name=name)
        self.topology = topology
        self.schema = topology.schema
        self.interrupt_before = interrupt_before
        self.interrupt_after = interrupt_after
        self.recursion_limit = recursion_limit

    def _program(self, input: Any, options: RunOptions) -> Program:
        limit = options.config.get("recursion_limit", self.recursion_limit)
        if not isinstance(limit, int) or limit < 1:
            raise UserError(f"recursion_limit must be an int >= 1, not {limit!r}")
        if isinstance(input, Command):
            return GraphProgram(self, None, limit, command=input)
        return GraphProgram(self, input, limit)

    def _empty_values(self) -> dict[str, Any]:
        return self.schema.initial()

    def _apply_update(self, values: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
        return self.schema.apply(values, [("update_state", update)])


class GraphProgram(Program):
    """One run of a compiled graph."""

    def __init__(
        self,
        app: CompiledGraph,
        input: Any,
        limit: int,
        *,
        resume: bool = False,
        command: Command | None = None,
    ) -> None:
        self.app = app
        self.input = input
        self.limit = limit
        self.command = command  # `Command(resume=...)`: answers the thread's pending interrupt
        # The answers the interrupted node replays in the first step: {node: answers}.
        self.resumes: dict[str | None, tuple[Any, ...]] = {}
        self.resume = (
            resume  # the run continues a stopped answer (`Resume()`); nodes see ctx.resume
        )
        self.values: dict[str, Any] = {}  # the state after the last finished step
        self.outputs: dict[str, NodeOutput] | None = None  # the running step's outputs, else None

    async def execute(self, ex: Execution) -> Outcome:
        app, schema = self.app, self.app.schema
        base = ex.base
        values = {**schema.initial(), **(base.values if base else {})}
        step = base.step + 1 if base else 0
        resuming = self.input is None
        if resuming:
            frontier = list(base.next) if base else []
            if self.command is not None:
                pending = _pending_interrupt(base, ex.handle.thread_id)
                self.resumes = {pending.node: (*pending.resumes, self.command.resume)}
        else:
            values = schema.apply(values, [("input", coerce_input(schema, self.input))])
            frontier = await app.topology.next_nodes([START], values)
            await self._commit(
                ex,
                values,
                step,
                frontier,
                "input" if base is None or ex.head_id == base.checkpoint_id else "fork",
            )
            step += 1
        self.values = values
        taken = 0
        while frontier:
            if ex.stop_after_step:
                return Outcome("cancelled", values)
            if not (resuming and taken == 0) and app.interrupt_before.intersection(frontier):
                return Outcome("interrupted", values)
            if taken >= self.limit:
                raise GraphRecursionError(
                    f"the run took {taken} steps without reaching END (recursion_limit={self.limit}); "
                    "raise the limit with config={'recursion_limit': N} or fix the loop",
                    run_id=ex.handle.run_id,
                )
            self.outputs = {name: NodeOutput(name) for name in frontier}
            try:
                if len(frontier) == 1:  # awaited here: one coroutine frame less per idle run
                    await self._node_call(ex, frontier[0], values, step)
                else:
                    await self._run_parallel(ex, frontier, values, step)
            except Exception as exc:
                paused = _interrupt_in(exc)
                if paused is None:
                    raise
                # The step is not applied: its nodes run again, from their start, on resume.
                self.outputs = None
                paused = dataclasses.replace(paused, run_id=ex.handle.run_id)
                await self._commit(
                    ex, values, step, frontier, "interrupt", {"interrupt": paused.to_json()}
                )
                return Outcome("interrupted", values, interrupt=paused.to_json())
            self.resumes = {}
            updates = [
                (name, out.update(schema, stopped=False)[0]) for name, out in self.outputs.items()
            ]
            values = schema.apply(values, updates)
            ran, frontier = frontier, await app.topology.next_nodes(frontier, values)
            self.values, self.outputs = values, None
            await self._commit(ex, values, step, frontier, "step")
            step += 1
            taken += 1
            if frontier and app.interrupt_after.intersection(ran):
                return Outcome("interrupted", values)
        return Outcome("completed", values)

    async def _commit(
        self,
        ex: Execution,
        values: dict[str, Any],
        step: int,
        frontier: list[str],
        source: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        # Shielded: a stop during the (sub-millisecond) write must not leave it half-known.
        with anyio.CancelScope(shield=True):
            await ex.commit(values, step=step, next=frontier, source=source, metadata=metadata)

    async def _run_parallel(
        self, ex: Execution, frontier: list[str], values: dict[str, Any], step: int
    ) -> None:
        """Run a step of several nodes, each in a task of its own; raises the first error."""
        try:
            async with anyio.create_task_group() as tg:
                for name in frontier:
                    tg.start_soon(self._node_call, ex, name, values, step)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    def _node_call(
        self, ex: Execution, name: str, values: dict[str, Any], step: int
    ) -> Coroutine[Any, Any, None]:
        """Node `name`'s call in this step, on a copy of `values` (awaiting it runs the node)."""
        assert self.outputs is not None
        return run_node(
            self.app.topology.nodes[name],
            dict(values),
            ex.context(name, step, resume=self.resume),
            ex.handle,
            self.outputs[name],
            self.app.schema,
            self.resumes.get(name, ()),
        )

    def stopped_state(self, ex: Execution) -> StoppedState | None:
        if self.outputs is None:
            return None  # stopped between steps: the last checkpoint already holds everything
        schema = self.app.schema
        updates, closed = [], []
        for name, out in self.outputs.items():
            update, stopped = out.update(schema, stopped=not out.finished)
            updates.append((name, update))
            closed.extend(stopped)
        values = schema.apply(self.values, updates)
        return StoppedState(values, closed)


def _pending_interrupt(base: Any, thread_id: str) -> Interrupt:
    """The interrupt a `Command(resume=...)` answers: the one the thread's head is paused at."""
    data = base.metadata.get("interrupt") if base is not None else None
    if not isinstance(data, dict):
        raise UserError(
            f"thread {thread_id!r} is not paused by interrupt(), so Command(resume=...) has "
            "nothing to answer; send a new input instead"
        )
    return Interrupt.from_json(data)


def _interrupt_in(exc: BaseException) -> Interrupt | None:
    """The `interrupt()` that `exc` carries, looking into exception groups (parallel nodes)."""
    if isinstance(exc, GraphInterrupt):
        return exc.interrupt
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _interrupt_in(inner)
            if found is not None:
                return found
    return None


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return group.exceptions[0]
