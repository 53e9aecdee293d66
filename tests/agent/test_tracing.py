"""Tracing with OpenTelemetry's SDK and its in-memory exporter (scripted model, deterministic).

Contracts: a run, its nodes, model calls and tool calls are spans with the GenAI attributes; the
stop is recorded on the run span; a stop ends every open span, each marked cancelled; at random
stop points (hypothesis) no span is left open and every span ended after the stop is cancelled.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from tether import Agent, InMemoryCheckpointer, RunFinished, tool
from tether.models import Usage
from tether.testing import Gate, ScriptedModel, ToolCallStep

WATCHDOG = 10.0


def traced(model: ScriptedModel, tools: list[Any]) -> tuple[Agent, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agent = Agent(
        model,
        tools=tools,
        name="helper",
        checkpointer=InMemoryCheckpointer(),
        tracer_provider=provider,
    )
    return agent, exporter


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


@tool
def lookup(city: str) -> str:
    """Look up a city."""
    return f"{city}: sunny"


@pytest.mark.anyio
async def test_a_run_is_a_tree_of_spans_with_genai_attributes() -> None:
    model = ScriptedModel(
        ["Checking. ", ToolCallStep("lookup", {"city": "Oslo"}), Usage(12, 5)], "Sunny."
    )
    agent, exporter = traced(model, [lookup])
    with anyio.fail_after(WATCHDOG):
        await agent.ainvoke("Weather in Oslo?", thread_id="t")
    spans = exporter.get_finished_spans()
    [run] = by_name(spans, "invoke_agent helper")
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.conversation.id"] == "t"
    assert run.attributes["tether.status"] == "completed"
    chats = by_name(spans, "chat scripted")
    assert len(chats) == 2
    first = chats[0].attributes
    assert first is not None
    assert first["gen_ai.request.model"] == "scripted"
    assert (first["gen_ai.usage.input_tokens"], first["gen_ai.usage.output_tokens"]) == (12, 5)
    assert first["gen_ai.response.finish_reasons"] == ("tool_calls",)
    [tool_span] = by_name(spans, "execute_tool lookup")
    assert tool_span.attributes is not None
    assert tool_span.attributes["gen_ai.tool.name"] == "lookup"
    assert tool_span.attributes["tether.tool.status"] == "complete"
    nodes = sorted(by_name(spans, "node "), key=lambda s: s.start_time or 0)
    assert [n.name for n in nodes] == ["node model", "node tools", "node model"]
    steps = sorted(by_name(spans, "step "), key=lambda s: s.start_time or 0)
    assert [s.name for s in steps] == ["step 1", "step 2", "step 3"]
    # parentage: run > step > node > chat / tool
    ids = {s.name: s.context.span_id for s in steps if s.context is not None}
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in steps)  # type: ignore[union-attr]
    assert [n.parent.span_id for n in nodes if n.parent] == list(ids.values())
    assert [n.attributes["tether.step"] for n in nodes if n.attributes] == [1, 2, 3]
    node_ids = {n.context.span_id for n in nodes if n.context is not None}
    assert all(c.parent is not None and c.parent.span_id in node_ids for c in chats)
    assert tool_span.parent is not None and tool_span.parent.span_id == nodes[1].context.span_id  # type: ignore[union-attr]
    assert all(s.attributes and s.attributes["tether.status"] == "completed" for s in spans)
    assert {s.context.trace_id for s in spans if s.context} == {run.context.trace_id}  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_stop_ends_every_open_span_cancelled_and_is_recorded_on_the_run() -> None:
    entered = anyio.Event()

    @tool
    async def slow(q: str) -> str:
        """Never returns by itself."""
        entered.set()
        await anyio.sleep_forever()
        return q

    model = ScriptedModel([ToolCallStep("slow", {"q": "a"}), ToolCallStep("slow", {"q": "b"})])
    agent, exporter = traced(model, [slow])
    with anyio.fail_after(WATCHDOG):
        async for event in agent.arun("go", thread_id="t"):
            if event.type == "tool_call_started" and event.arguments == '{"q": "b"}':
                await entered.wait()
                assert await agent.astop(thread_id="t", reason="user pressed Stop")
    spans = exporter.get_finished_spans()
    [run] = by_name(spans, "invoke_agent")
    attrs = run.attributes
    assert attrs is not None
    assert attrs["tether.status"] == "cancelled"
    assert attrs["tether.stop.mode"] == "now"
    assert attrs["tether.stop.requested_by"] == "user"
    assert attrs["tether.stop.reason"] == "user pressed Stop"
    assert attrs["tether.stop.requested_at"] <= attrs["tether.stop.took_effect_at"]  # type: ignore[operator]
    tools = by_name(spans, "execute_tool slow")
    assert len(tools) == 2
    for span in [*tools, *by_name(spans, "node tools"), *by_name(spans, "step ")[-1:]]:
        assert span.attributes is not None and span.attributes["tether.status"] == "cancelled"
        assert [e.name for e in span.events] == ["cancelled"]
    record = await agent.aget_run(event.run_id)
    assert record is not None and record.stop_requested_at == attrs["tether.stop.requested_at"]


async def stop_scenario(stop_after: int, mode: str) -> None:
    gate = Gate("tool")

    @tool
    async def wait(q: str) -> str:
        """Waits for the gate."""
        await gate.wait()
        return q

    model = ScriptedModel(
        ["a ", "b ", ToolCallStep("wait", {"q": "x"}), ToolCallStep("lookup", {"city": "c"})],
        ["d ", "e ", "f"],
    )
    agent, exporter = traced(model, [wait, lookup])
    events: list[Any] = []
    stopped = False
    with anyio.fail_after(WATCHDOG):
        async for event in agent.arun("go", thread_id="t"):
            events.append(event)
            if len(events) == stop_after and not isinstance(event, RunFinished):
                stopped = await agent.astop(thread_id="t", mode=mode, wait=False)
                gate.release()
            if event.type == "tool_call_started" and stop_after > len(events):
                gate.release()
    final = events[-1]
    spans = exporter.get_finished_spans()
    [run] = by_name(spans, "invoke_agent")
    assert run.attributes is not None
    assert run.attributes["tether.status"] == final.status
    # every span ended (the provider only exports ended spans; none is left behind)
    ended = {s.context.span_id for s in spans if s.context is not None}
    assert all(s.parent is None or s.parent.span_id in ended for s in spans)
    if final.status == "cancelled":
        assert stopped and run.attributes["tether.stop.mode"] in (mode, "now")
        if mode != "after_step":
            # a span still open when the stop took effect ends cancelled; none ends "completed"
            # after the stop took effect
            took = run.attributes["tether.stop.took_effect_at"]
            for span in spans:
                assert span.attributes is not None
                if span.end_time is not None and span.end_time / 1e9 > took:  # type: ignore[operator]
                    assert span.attributes["tether.status"] == "cancelled", span.name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_after=st.integers(1, 30), mode=st.sampled_from(["now", "after_step", "rollback"]))
def test_stopped_anywhere_no_span_is_left_open_and_late_spans_are_cancelled(
    stop_after: int, mode: str
) -> None:
    anyio.run(stop_scenario, stop_after, mode)
