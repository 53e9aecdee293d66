"""Tracing: runs, steps, nodes, model calls and tool calls as OpenTelemetry spans.

Run it:  pip install 'tether[otel]' && python examples/tracing.py

The agent (scripted, so it is instant) calls a tool, and the second run is stopped while the tool
runs. The spans print to the console; the stopped run's span carries the stop (mode, who asked,
when it was asked for and when it took effect), and every span the stop cut short is marked
`tether.status=cancelled`. Then a plain graph (no model) is traced the same way, run > step >
node, through `tether.tracing.instrument`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tether import Agent, InMemoryCheckpointer, StateGraph, tool
from tether.testing import ScriptedModel, ToolCallStep
from tether.tracing import instrument

tool_entered = asyncio.Event()


@tool
async def forecast(city: str) -> str:
    """The weather forecast; slow for Bergen."""
    if city == "Bergen":
        tool_entered.set()
        await asyncio.sleep(3600)
    return f"{city}: sunny"


async def main() -> list[dict[str, Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    model = ScriptedModel(
        [ToolCallStep("forecast", {"city": "Oslo"})],
        "Sunny in Oslo.",
        [ToolCallStep("forecast", {"city": "Bergen"})],
    )
    agent = Agent(
        model,
        tools=[forecast],
        name="weather",
        checkpointer=InMemoryCheckpointer(),
        tracer_provider=provider,
    )
    await agent.ainvoke("Weather in Oslo?", thread_id="t")

    graph = StateGraph()
    graph.add_node("draft", lambda state: {"messages": [{"role": "assistant", "content": "A."}]})
    graph.set_entry_point("draft")
    graph.set_finish_point("draft")
    pipeline = graph.compile(name="pipeline", checkpointer=InMemoryCheckpointer())
    instrument(pipeline, tracer_provider=provider)  # any app: a graph, a flow, an agent
    await pipeline.ainvoke({"messages": [{"role": "user", "content": "go"}]}, thread_id="g")
    async for event in agent.arun("And in Bergen?", thread_id="t"):
        if event.type == "tool_call_started":
            await tool_entered.wait()
            await agent.astop(thread_id="t", reason="user pressed Stop")
    spans = [
        {
            "name": s.name,
            **{k: v for k, v in (s.attributes or {}).items() if k.startswith("tether.")},
        }
        for s in exporter.get_finished_spans()
    ]
    for span in spans:
        print(span)
    return spans


if __name__ == "__main__":
    asyncio.run(main())
