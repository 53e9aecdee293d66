"""Tracing: OpenTelemetry spans for an agent's runs, nodes, model calls and tool calls.

Install the `otel` extra (`pip install 'tether[otel]'`) and configure a tracer provider as usual;
an `Agent` then traces through the global provider, or through `Agent(tracer_provider=...)`.
Without OpenTelemetry installed, tracing is off and costs nothing.

Spans, with the GenAI semantic conventions where they apply:

    invoke_agent <name>          the run: gen_ai.operation.name, gen_ai.agent.name,
    │                            gen_ai.conversation.id (thread), tether.run_id, tether.status,
    │                            and on a stop tether.stop.{mode, requested_by, reason,
    │                            requested_at, took_effect_at} (epoch seconds)
    ├── node model               one per node execution: tether.node
    │   └── chat <model>         the model call: gen_ai.request.model, gen_ai.request.temperature,
    │                            gen_ai.request.max_tokens, gen_ai.usage.input_tokens,
    │                            gen_ai.usage.output_tokens, gen_ai.response.finish_reasons
    └── node tools
        └── execute_tool <name>  gen_ai.tool.name, gen_ai.tool.call.id, tether.status

Mechanism. Spans are started with explicit parents (never the "current span" context variable,
which an agent's streaming node, an async generator, could not reset safely after a stop). Each
run keeps the set of its open spans. A span whose code is cancelled or stopped ends with
`tether.status="cancelled"`; when the run itself ends, every span still open (say, the generator
of a stopped model stream that was not finalized yet) is ended the same way, so a stop ends every
open span, each marked cancelled. A stop is not an error: the span status stays unset.

Not traced: the graph's supersteps (they belong to the graph engine; a node span carries
`tether.step`).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from .engine import Execution, Outcome, Program, StoppedState
from .errors import UserError

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["AgentTracing", "TracedProgram", "otel_available"]


def otel_available() -> bool:
    """Whether the OpenTelemetry API is installed (the `otel` extra)."""
    return importlib.util.find_spec("opentelemetry") is not None


@dataclass
class _RunSpans:
    """The spans of one run."""

    run: Span  # the run's span, ended by `TracedProgram.execute`
    # spans started and not yet ended, by id; every one is ended by the time the run's span is
    open: dict[int, Span] = field(default_factory=dict)


class AgentTracing:
    """Starts and ends an agent's spans; one per agent, shared by its runs.

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

        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer: Tracer = provider.get_tracer("tether")
        # the runs being traced, by run id; an entry lives exactly as long as the run's span
        self._runs: dict[str, _RunSpans] = {}

    def start_run(self, ex: Execution, agent_name: str) -> _RunSpans:
        run_id = ex.handle.run_id
        span = self._tracer.start_span(
            f"invoke_agent {agent_name}",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent_name,
                "gen_ai.conversation.id": ex.handle.thread_id,
                "tether.run_id": run_id,
                "tether.thread_id": ex.handle.thread_id,
            },
        )
        spans = self._runs[run_id] = _RunSpans(span)
        return spans

    def end_run(self, ex: Execution, status: str) -> None:
        spans = self._runs.pop(ex.handle.run_id, None)
        if spans is None:
            return
        token = ex.handle.token
        stopped = token.request is not None and status == "cancelled"
        for span in list(spans.open.values()):
            _end(span, "cancelled" if stopped or status != "completed" else status)
        spans.open.clear()
        span = spans.run
        if stopped and token.request is not None:
            span.set_attributes(
                {
                    "tether.stop.mode": token.mode or token.request.mode,
                    "tether.stop.requested_by": token.request.requested_by,
                    "tether.stop.reason": token.request.reason or "",
                    "tether.stop.requested_at": token.request.requested_at,
                    "tether.stop.took_effect_at": time.time(),
                }
            )
        _end(span, status)

    @contextmanager
    def span(
        self,
        run_id: str,
        name: str,
        attributes: dict[str, Any],
        *,
        parent: Span | None = None,
        stop_requested: Any = None,
    ) -> Iterator[Span | None]:
        """A child span of the run (or of `parent`), ended when the block exits: `cancelled` if
        it exits by cancellation (or `stop_requested()` says a stop is under way), `failed` if it
        raises anything else. Yields `None` when the run is not traced."""
        spans = self._runs.get(run_id)
        if spans is None:
            yield None
            return
        from opentelemetry import trace

        context = trace.set_span_in_context(parent or spans.run)
        span = self._tracer.start_span(name, context=context, attributes=attributes)
        key = id(span)
        spans.open[key] = span
        status = "completed"
        try:
            yield span
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        except GeneratorExit:
            status = "cancelled"  # an abandoned stream (the run stopped while it was suspended)
            raise
        except BaseException as exc:
            status = "failed"
            span.record_exception(exc)
            raise
        finally:
            if stop_requested is not None and stop_requested():
                status = "cancelled"
            if spans.open.pop(key, None) is not None:
                _end(span, status)


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

    def __init__(self, inner: Program, tracing: AgentTracing, agent_name: str) -> None:
        self.inner = inner
        self._tracing = tracing
        self._agent_name = agent_name

    async def execute(self, ex: Execution) -> Outcome:
        """Run the wrapped program inside the run's span. Cancelled: the span (and every span
        still open in the run) ends marked cancelled, with the stop's record on the run span."""
        self._tracing.start_run(ex, self._agent_name)
        status = "failed"
        try:
            outcome = await self.inner.execute(ex)
            status = outcome.status
            return outcome
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        finally:
            self._tracing.end_run(ex, status)

    def stopped_state(self, ex: Execution) -> StoppedState | None:
        return self.inner.stopped_state(ex)
