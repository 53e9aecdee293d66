"""Tracing: OpenTelemetry spans for every run of every app (graph, agent, flow).

Install the `otel` extra (`pip install 'tether[otel]'`) and configure a tracer provider as usual:
every app then traces its runs through the global provider (until one is set, runs are not
traced at all). `instrument(app, tracer_provider=...)`
(or `Agent(..., tracer_provider=...)`) gives one app its own provider; `instrument(app,
enabled=False)` turns its tracing off. Without OpenTelemetry installed, tracing is off and costs
nothing.

Spans, with the GenAI semantic conventions where they apply:

    invoke_agent <name>          an agent's run: gen_ai.operation.name, gen_ai.agent.name,
    │  (run <name>: a graph's    gen_ai.conversation.id (thread); every run: tether.app.kind
    │   or flow's run)           (agent, graph, flow), tether.run_id, tether.thread_id,
    │                            tether.status, and on a stop tether.stop.{mode, requested_by,
    │                            reason, requested_at, took_effect_at} (epoch seconds)
    └── step <n>                 one superstep of a graph (agent), one handler call of a flow:
        │                        tether.step
        ├── node model           one per node execution (a flow: per handler call): tether.node,
        │   └── chat <model>     tether.step; an agent's model call: gen_ai.request.model,
        │                        gen_ai.request.temperature, gen_ai.request.max_tokens,
        │                        gen_ai.usage.input_tokens, gen_ai.usage.output_tokens,
        │                        gen_ai.response.finish_reasons
        └── node tools
            └── execute_tool <name>  an agent's tool call: gen_ai.tool.name, gen_ai.tool.call.id

A child run (a subgraph node, an agent used as a tool) is a run span of its own, whose parent is
the parent's node span (an agent tool's: its `execute_tool` span), so one trace holds the tree.

Mechanism. The engine hands each run's program to the app's tracer (`Engine.trace`), which wraps
it in `TracedProgram`: the run's span lives exactly as long as the program executes. Step and
node spans follow the run's own events, seen as they are emitted (`RunHandle.observer`):
`node_started` opens a node span (and its step's span, the first time that step is seen);
`node_finished` ends it `completed`. A graph's step span ends when the step's checkpoint is
written (`checkpoint` with that step), a flow's when its one handler call ended. Model and tool
spans are opened by the agent around the call, under the node's span.

Spans are started with explicit parents (never the "current span" context variable, which an
agent's streaming node, an async generator, could not reset safely after a stop). Each run keeps
the set of its open spans. A span whose code is cancelled or stopped ends with
`tether.status="cancelled"`; when the run ends, every span still open (the nodes a stop cut
short, the generator of a stopped model stream not finalized yet) is ended with the run's status:
`cancelled` after a stop, `interrupted` after an `interrupt()`, `failed` after a failure. So a
stop ends every open span, each marked cancelled. A stop is not an error: the span status stays
unset.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from .engine import Execution, Outcome, Program, StoppedState
from .errors import UserError
from .events import CheckpointSaved, Event, NodeFinished, NodeStarted
from .interrupts import GraphInterrupt

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from .app import App
    from .context import RunContext
    from .handle import RunHandle
    from .run import RunRecord

__all__ = ["TracedProgram", "Tracing", "child_span", "instrument", "otel_available", "span"]


def otel_available() -> bool:
    """Whether the OpenTelemetry API is installed (the `otel` extra)."""
    return importlib.util.find_spec("opentelemetry") is not None


# The span a child run started from here hangs under (set by `child_span` around its start).
_CHILD_PARENT: ContextVar[Span | None] = ContextVar("tether_child_parent", default=None)


@dataclass
class _RunSpans:
    """The spans of one run."""

    tracer: Tracer  # the app's tracer: every span of the run is started with it
    run: Span  # the run's span, ended by `TracedProgram.execute`
    supersteps: bool  # a graph: a step span ends with the step's checkpoint (a flow: its call)
    # spans started and not yet ended, by id; every one is ended by the time the run's span is
    open: dict[int, Span] = field(default_factory=dict)
    # open step spans, by step number
    steps: dict[int, Span] = field(default_factory=dict)
    # open node spans, by (node, step); each also in `open`
    nodes: dict[tuple[str, int | None], Span] = field(default_factory=dict)
    # open spans that a child run may hang under, by key (an agent tool's: its tool call id)
    keyed: dict[str, Span] = field(default_factory=dict)


# Every traced run of this process, by run id: an entry lives exactly as long as the run's span.
# (Module-wide, so that a child run of another app finds its parent's spans.)
_RUNS: dict[str, _RunSpans] = {}


class Tracing:
    """Starts and ends the spans of one app's runs.

    Args:
        tracer_provider: An OpenTelemetry `TracerProvider`; `None` uses the global one.

    Raises:
        UserError: OpenTelemetry is not installed.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        if not otel_available():
            raise UserError(
                "tracing needs OpenTelemetry; install the otel extra: pip install 'tether[otel]'"
            )
        from opentelemetry import trace

        # Whether this app has a provider of its own (else: the global one, whatever it is then).
        self._own_provider = tracer_provider is not None
        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer: Tracer = provider.get_tracer("tether")

    @property
    def active(self) -> bool:
        """Whether spans would be recorded: the app has a provider of its own, or a global one
        was set. (Until then OpenTelemetry's global provider is a placeholder whose spans record
        nothing, so a run is not wrapped at all and costs nothing.)"""
        from opentelemetry import trace

        return self._own_provider or not isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider
        )

    # runs
    def start_run(
        self, ex: Execution, name: str, attributes: dict[str, Any], *, supersteps: bool
    ) -> None:
        """Open the run's span (under the span that started it, for a child run) and watch the
        run's events for its steps and nodes."""
        from opentelemetry import trace

        parent = _CHILD_PARENT.get()
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self._tracer.start_span(
            name,
            context=context,
            attributes={
                **attributes,
                "tether.run_id": ex.handle.run_id,
                "tether.thread_id": ex.handle.thread_id,
            },
        )
        spans = _RUNS[ex.handle.run_id] = _RunSpans(self._tracer, span, supersteps)
        ex.handle.observer = lambda event: self._observe(spans, event)

    def end_run(self, ex: Execution, status: str) -> None:
        """End every span of the run still open with the run's `status`, then the run's span,
        with the stop's record on it after a stop."""
        ex.handle.observer = None
        spans = _RUNS.pop(ex.handle.run_id, None)
        if spans is None:
            return
        took_effect_at = time.time()  # before the spans the stop cut short are ended
        token = ex.handle.token
        stopped = token.request is not None and status == "cancelled"
        leftover = "completed" if status == "completed" else status
        for span in list(spans.open.values()):
            # A span still open when a completed run ends was abandoned (a stream not closed).
            _end(span, "cancelled" if leftover == "completed" else leftover)
        for span in spans.steps.values():
            _end(span, "cancelled" if leftover == "completed" else leftover)
        spans.open.clear()
        spans.steps.clear()
        spans.nodes.clear()
        spans.keyed.clear()
        if stopped and token.request is not None:
            spans.run.set_attributes(
                {
                    "tether.stop.mode": token.mode or token.request.mode,
                    "tether.stop.requested_by": token.request.requested_by,
                    "tether.stop.reason": token.request.reason or "",
                    "tether.stop.requested_at": token.request.requested_at,
                    "tether.stop.took_effect_at": took_effect_at,
                }
            )
        _end(spans.run, status)

    # steps and nodes, from the run's events
    def _observe(self, spans: _RunSpans, event: Event) -> None:
        if event.path:  # a child's event: the child run has spans of its own
            return
        if isinstance(event, NodeStarted):
            self._node_started(spans, event.node or "", event.step)
        elif isinstance(event, NodeFinished):
            span = spans.nodes.pop((event.node or "", event.step), None)
            if span is not None and spans.open.pop(id(span), None) is not None:
                _end(span, "completed")
            if not spans.supersteps and event.step is not None:
                self._end_step(spans, event.step)
        elif isinstance(event, CheckpointSaved) and spans.supersteps:
            for step in [s for s in spans.steps if s <= event.step]:
                self._end_step(spans, step)

    def _node_started(self, spans: _RunSpans, node: str, step: int | None) -> None:
        from opentelemetry import trace

        parent = spans.run
        if step is not None:
            parent = spans.steps.get(step) or self._start_step(spans, step)
        attributes: dict[str, Any] = {"tether.node": node}
        if step is not None:
            attributes["tether.step"] = step
        span = self._tracer.start_span(
            f"node {node}", context=trace.set_span_in_context(parent), attributes=attributes
        )
        spans.open[id(span)] = span
        spans.nodes[(node, step)] = span

    def _start_step(self, spans: _RunSpans, step: int) -> Span:
        from opentelemetry import trace

        span = spans.steps[step] = self._tracer.start_span(
            f"step {step}",
            context=trace.set_span_in_context(spans.run),
            attributes={"tether.step": step},
        )
        return span

    def _end_step(self, spans: _RunSpans, step: int) -> None:
        if any(s == step for _, s in spans.nodes):
            return  # a node of the step still runs (a flow's: the step ends with it)
        span = spans.steps.pop(step, None)
        if span is not None:
            _end(span, "completed")


@contextmanager
def span(
    ctx: RunContext,
    name: str,
    attributes: dict[str, Any],
    *,
    key: str | None = None,
) -> Iterator[Span | None]:
    """A span under the span of `ctx`'s node (or its run), ended when the block exits:
    `cancelled` if it exits by cancellation, `interrupted` by `interrupt()`, `failed` if it
    raises anything else. A child run started inside the block with `key`
    (see `child_span`) hangs under it. Yields `None` when the run is not traced."""
    spans = _RUNS.get(ctx.run_id)
    if spans is None:
        yield None
        return
    from opentelemetry import trace

    parent = spans.nodes.get((ctx.node or "", ctx.step)) or spans.run
    if ctx.step is not None:
        attributes = {**attributes, "tether.step": ctx.step}
    opened = spans.tracer.start_span(
        name, context=trace.set_span_in_context(parent), attributes=attributes
    )
    ident = id(opened)
    spans.open[ident] = opened
    if key is not None:
        spans.keyed[key] = opened
    status = "completed"
    try:
        yield opened
    except anyio.get_cancelled_exc_class():
        status = "cancelled"
        raise
    except GeneratorExit:
        status = "cancelled"  # an abandoned stream (the run stopped while it was suspended)
        raise
    except GraphInterrupt:
        status = "interrupted"  # a deliberate pause (`interrupt()`), not a failure
        raise
    except BaseException as exc:
        status = "failed"
        opened.record_exception(exc)
        raise
    finally:
        if key is not None and spans.keyed.get(key) is opened:
            del spans.keyed[key]
        if spans.open.pop(ident, None) is not None:
            _end(opened, status)


@contextmanager
def child_span(ctx: RunContext, key: str | None = None) -> Iterator[None]:
    """Make a run started inside this block (a child run) hang under the span of `ctx`'s node,
    or under the span opened with `key` in it (an agent tool's call). Does nothing when the
    parent run is not traced."""
    spans = _RUNS.get(ctx.run_id)
    parent = None
    if spans is not None:
        parent = (spans.keyed.get(key) if key is not None else None) or spans.nodes.get(
            (ctx.node or "", ctx.step)
        )
    token = _CHILD_PARENT.set(parent)
    try:
        yield
    finally:
        _CHILD_PARENT.reset(token)


def _end(span: Span, status: str) -> None:
    span.set_attribute("tether.status", status)
    if status == "cancelled":
        span.add_event("cancelled")
    elif status == "failed":
        from opentelemetry.trace import StatusCode

        span.set_status(StatusCode.ERROR)
    span.end()


class TracedProgram(Program):
    """A run's program wrapped in the run's span."""

    def __init__(self, inner: Program, runs: _AppRuns) -> None:
        self.inner = inner
        self._runs = runs

    async def execute(self, ex: Execution) -> Outcome:
        """Run the wrapped program inside the run's span. Cancelled: the span (and every span
        still open in the run) ends marked cancelled, with the stop's record on the run span."""
        runs = self._runs
        attributes = dict(runs.attributes)
        if runs.agent:
            attributes["gen_ai.conversation.id"] = ex.handle.thread_id
        runs.tracing.start_run(ex, runs.span_name, attributes, supersteps=runs.agent or runs.graph)
        status = "failed"
        try:
            outcome = await self.inner.execute(ex)
            status = outcome.status
            return outcome
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        finally:
            runs.tracing.end_run(ex, status)

    def make_handle(self, record: RunRecord) -> RunHandle:
        return self.inner.make_handle(record)

    def stopped_state(self, ex: Execution) -> StoppedState | None:
        return self.inner.stopped_state(ex)


@dataclass(frozen=True, slots=True)
class _AppRuns:
    """How one app's runs are traced: its `Tracing`, and the run span's name and attributes."""

    tracing: Tracing
    span_name: str
    attributes: dict[str, Any]
    agent: bool  # an agent: its run span follows the GenAI conventions
    graph: bool  # a graph (or an agent): steps are supersteps, ended by their checkpoint

    def wrap(self, program: Program) -> Program:
        return TracedProgram(program, self) if self.tracing.active else program


def instrument(app: App, *, tracer_provider: Any = None, enabled: bool = True) -> None:
    """Trace `app`'s runs (see the module docstring) through `tracer_provider` (`None`: the
    global one), or, with `enabled=False`, stop tracing them. Applies to runs started after it.

    Every app calls `instrument(app)` when it is made, if OpenTelemetry is installed.

    Raises:
        UserError: OpenTelemetry is not installed (and `enabled` is True).
    """
    if not enabled:
        app.engine.trace = None
        return
    from .agent.agent import Agent
    from .graph.compiled import CompiledGraph

    label = app.name or type(app).__name__.lower()
    if isinstance(app, Agent):
        kind = "agent"
        span_name = f"invoke_agent {app.name or 'agent'}"
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": app.name or "agent",
        }
    else:
        kind = "graph" if isinstance(app, CompiledGraph) else "flow"
        span_name = f"run {label}"
        attributes = {}
    attributes["tether.app.kind"] = kind
    runs = _AppRuns(
        Tracing(tracer_provider), span_name, attributes, kind == "agent", kind == "graph"
    )
    app.engine.trace = runs.wrap
