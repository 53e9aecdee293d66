"""Tracing of every app, not only agents: graphs and flows, their steps and nodes, child runs.

Contracts (OpenTelemetry SDK, in-memory exporter; deterministic sync points, no sleeps):
- a graph run is `run <name>` > `step <n>` (one per superstep) > `node <name>` (parallel nodes of
  a step share its span); a flow run is `run <name>` > `step <n>` > `node <handler>` per handler
  call;
- a child run (subgraph node, agent tool) is a run span under the parent's node (or tool) span,
  in the same trace;
- a stop ends every open span marked cancelled, the stop is recorded on the run span; at random
  stop points (hypothesis) in a graph with parallel nodes, no span is left open, the run span's
  status is the run's, and every span ended by the stop is cancelled; in a flow, each handler's
  span is `completed` if the handler finished, else it carries the run's status;
- `instrument(app, enabled=False)` turns an app's tracing off.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tether import Agent, App, InMemoryCheckpointer, RunFinished, StateGraph, tracing
from tether.flow import Flow, FlowData
from tether.testing import Gate, ScriptedModel, ToolCallStep
from tether.tracing import instrument

WATCHDOG = 10.0


def exporting(*apps: App) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for app in apps:
        instrument(app, tracer_provider=provider)
    return exporter


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes[key]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def sid(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


class Fan(TypedDict):
    log: Annotated[list[str], operator.add]


def fan_graph(gate: Gate | None = None) -> Any:
    """start -> (left, right in parallel) -> join."""

    async def start(state: dict[str, Any]) -> dict[str, Any]:
        return {"log": ["start"]}

    async def left(state: dict[str, Any]) -> dict[str, Any]:
        if gate is not None:
            await gate.wait()
        return {"log": ["left"]}

    async def right(state: dict[str, Any]) -> dict[str, Any]:
        return {"log": ["right"]}  # no await: done before `left` reaches its gate is seen

    async def join(state: dict[str, Any]) -> dict[str, Any]:
        return {"log": ["join"]}

    graph = StateGraph(Fan)
    graph.add_node("start", start)
    graph.add_node("left", left)
    graph.add_node("right", right)
    graph.add_node("join", join)
    graph.set_entry_point("start")
    graph.add_edge("start", "left")
    graph.add_edge("start", "right")
    graph.add_edge("left", "join")
    graph.add_edge("right", "join")
    graph.set_finish_point("join")
    return graph.compile(name="fan", checkpointer=InMemoryCheckpointer())


@pytest.mark.anyio
async def test_a_graph_run_is_run_then_step_then_node_spans() -> None:
    app = fan_graph()
    exporter = exporting(app)
    with anyio.fail_after(WATCHDOG):
        values = await app.ainvoke({"log": []}, thread_id="t")
    assert sorted(values["log"]) == ["join", "left", "right", "start"]
    spans = exporter.get_finished_spans()
    [run] = named(spans, "run fan")
    assert attr(run, "tether.app.kind") == "graph"
    assert attr(run, "tether.status") == "completed"
    assert attr(run, "tether.thread_id") == "t"
    steps = sorted(
        (s for s in spans if s.name.startswith("step ")), key=lambda s: s.start_time or 0
    )
    assert [s.name for s in steps] == ["step 1", "step 2", "step 3"]
    assert all(parent_of(s) == sid(run) for s in steps)
    [start], [join] = named(spans, "node start"), named(spans, "node join")
    [left], [right] = named(spans, "node left"), named(spans, "node right")
    assert parent_of(start) == sid(steps[0]) and parent_of(join) == sid(steps[2])
    assert parent_of(left) == parent_of(right) == sid(steps[1])  # one superstep, two nodes
    assert attr(left, "tether.node") == "left" and attr(left, "tether.step") == 2
    for span in spans:
        assert attr(span, "tether.status") == "completed", span.name
        assert span.context is not None and span.context.trace_id == sid_trace(run)
    # a step's span ends once its nodes did (with its checkpoint)
    assert steps[1].end_time is not None and left.end_time is not None
    assert steps[1].end_time >= max(left.end_time, right.end_time or 0)


def sid_trace(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


@pytest.mark.anyio
async def test_a_stopped_graph_ends_every_open_span_cancelled_with_the_stop_on_the_run() -> None:
    gate = Gate("left")
    app = fan_graph(gate)
    exporter = exporting(app)
    with anyio.fail_after(WATCHDOG):
        handle = await app.astart({"log": []}, thread_id="t")
        await gate.reached()
        assert await app.astop(thread_id="t", reason="enough")
    assert handle.status == "cancelled"
    spans = exporter.get_finished_spans()
    [run] = named(spans, "run fan")
    assert attr(run, "tether.status") == "cancelled"
    assert attr(run, "tether.stop.reason") == "enough"
    assert attr(run, "tether.stop.requested_by") == "user"
    assert attr(run, "tether.stop.mode") == "now"
    [left], [right] = named(spans, "node left"), named(spans, "node right")
    [step] = named(spans, "step 2")
    for span in (left, step):
        assert attr(span, "tether.status") == "cancelled"
        assert [e.name for e in span.events] == ["cancelled"]
    assert attr(right, "tether.status") == "completed"  # it had finished before the stop
    assert named(spans, "node join") == []


@pytest.mark.anyio
async def test_a_flow_run_has_a_step_and_node_span_per_handler_call() -> None:
    flow = Flow(checkpointer=InMemoryCheckpointer(), name="pipe")

    async def double(data: FlowData) -> int:
        return int(data.value) * 2

    def add_one(data: FlowData) -> int:
        return int(data.value) + 1

    flow.to(double).to(add_one).end()
    exporter = exporting(flow)
    with anyio.fail_after(WATCHDOG):
        run = await flow.astart(20, thread_id="f")
        assert (await run.result())["result"] == 41
    spans = exporter.get_finished_spans()
    [root] = named(spans, "run pipe")
    assert attr(root, "tether.app.kind") == "flow" and attr(root, "tether.status") == "completed"
    [s1], [s2] = named(spans, "step 1"), named(spans, "step 2")
    [d], [a] = named(spans, "node double"), named(spans, "node add_one")
    assert parent_of(s1) == parent_of(s2) == sid(root)
    assert (parent_of(d), parent_of(a)) == (sid(s1), sid(s2))
    assert s1.end_time is not None and d.end_time is not None and s1.end_time >= d.end_time
    assert all(attr(s, "tether.status") == "completed" for s in spans)


@pytest.mark.anyio
async def test_a_stopped_flow_ends_its_handler_spans_cancelled() -> None:
    flow = Flow(checkpointer=InMemoryCheckpointer(), name="pipe")
    entered = anyio.Event()

    async def wait(data: FlowData) -> None:
        entered.set()
        await anyio.sleep_forever()

    flow.to(wait).end()
    exporter = exporting(flow)
    with anyio.fail_after(WATCHDOG):
        await flow.astart(1, thread_id="f")
        await entered.wait()
        assert await flow.astop(thread_id="f", mode="rollback", reason="undo")
    spans = exporter.get_finished_spans()
    [root] = named(spans, "run pipe")
    assert attr(root, "tether.status") == "cancelled"
    assert attr(root, "tether.stop.mode") == "rollback"
    for name in ("step 1", "node wait"):
        [span] = named(spans, name)
        assert attr(span, "tether.status") == "cancelled"


@pytest.mark.anyio
async def test_child_runs_hang_under_the_parent_node_and_tool_spans_in_one_trace() -> None:
    researcher = Agent(
        ScriptedModel("Tides are high."),
        name="researcher",
        description="Researches.",
        checkpointer=InMemoryCheckpointer(),
    )
    lead = Agent(
        ScriptedModel([ToolCallStep("researcher", {"input": "tides?"}, id="c1")], "Done."),
        tools=[researcher.as_tool()],
        name="lead",
        checkpointer=InMemoryCheckpointer(),
    )
    outer = StateGraph()
    outer.add_node("team", lead)
    outer.set_entry_point("team")
    outer.set_finish_point("team")
    app = outer.compile(name="outer", checkpointer=InMemoryCheckpointer())
    exporter = exporting(app, lead, researcher)
    with anyio.fail_after(WATCHDOG):
        await app.ainvoke({"messages": [{"role": "user", "content": "go"}]}, thread_id="t")
    spans = exporter.get_finished_spans()
    [outer_run] = named(spans, "run outer")
    [team] = named(spans, "node team")
    [lead_run] = named(spans, "invoke_agent lead")
    [call] = named(spans, "execute_tool researcher")
    [child_run] = named(spans, "invoke_agent researcher")
    assert parent_of(lead_run) == sid(team)
    assert parent_of(child_run) == sid(call)
    assert {sid_trace(s) for s in spans} == {sid_trace(outer_run)}
    assert (
        attr(child_run, "gen_ai.conversation.id")
        == "t/"
        + attr(outer_run, "tether.run_id")
        + "/team.1/"
        + attr(lead_run, "tether.run_id")
        + "/researcher.c1"
    )


@pytest.mark.anyio
async def test_instrument_off_stops_tracing_an_app() -> None:
    app = fan_graph()
    exporter = exporting(app)
    instrument(app, enabled=False)
    with anyio.fail_after(WATCHDOG):
        await app.ainvoke({"log": []}, thread_id="t")
    assert exporter.get_finished_spans() == ()


async def graph_stop_scenario(stop_after: int, mode: str) -> None:
    gate = Gate("left")
    app = fan_graph(gate)
    exporter = exporting(app)
    stopped = False
    events: list[Any] = []
    with anyio.fail_after(WATCHDOG):
        async for event in app.astream({"log": []}, thread_id="t"):
            events.append(event)
            if len(events) == stop_after and not isinstance(event, RunFinished):
                stopped = await app.astop(thread_id="t", mode=mode, wait=False)
                gate.release()
            if event.type == "node_started" and event.node == "left" and stop_after > len(events):
                gate.release()
    final = events[-1]
    assert tracing._RUNS == {}  # no run's spans are left behind (S6)
    spans = exporter.get_finished_spans()
    [run] = named(spans, "run fan")
    assert attr(run, "tether.status") == final.status
    ended = {sid(s) for s in spans}
    # every span ended: each parent was exported (only ended spans are)
    assert all(parent_of(s) is None or parent_of(s) in ended for s in spans)
    # one node span per node_started event, one step span per step that started a node
    started = [e for e in events if e.type == "node_started"]
    assert sorted(s.name for s in spans if s.name.startswith("node ")) == sorted(
        f"node {e.node}" for e in started
    )
    assert {s.name for s in spans if s.name.startswith("step ")} == {
        f"step {e.step}" for e in started
    }
    if final.status == "cancelled":
        assert stopped and attr(run, "tether.stop.mode") in (mode, "now")
        took = attr(run, "tether.stop.took_effect_at")
        for span in spans:
            if span is not run and span.end_time is not None and span.end_time / 1e9 > took:
                assert attr(span, "tether.status") == "cancelled", span.name
    else:
        assert all(attr(s, "tether.status") == "completed" for s in spans)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_after=st.integers(1, 24), mode=st.sampled_from(["now", "after_step", "rollback"]))
def test_a_graph_stopped_anywhere_leaves_no_span_open_and_late_spans_cancelled(
    stop_after: int, mode: str
) -> None:
    anyio.run(graph_stop_scenario, stop_after, mode)


async def flow_stop_scenario(stop_after: int, mode: str) -> None:
    gate = Gate("second")
    flow = Flow(checkpointer=InMemoryCheckpointer(), name="pipe")

    async def first(data: FlowData) -> int:
        data.put_into_stream("first")
        return int(data.value) + 1

    async def second(data: FlowData) -> int:
        data.put_into_stream("second")
        await gate.wait()
        return int(data.value) * 2

    def third(data: FlowData) -> int:  # sync: a worker thread
        return int(data.value) - 1

    flow.to(first).to(second).to(third).end()
    exporter = exporting(flow)
    stopped = False
    events: list[Any] = []
    with anyio.fail_after(WATCHDOG):
        async for event in flow.astream(1, thread_id="f"):
            events.append(event)
            if len(events) == stop_after and not isinstance(event, RunFinished):
                stopped = await flow.astop(thread_id="f", mode=mode, wait=False)
                gate.release()
            if event.type == "node_started" and event.node == "second" and stop_after > len(events):
                gate.release()
    final = events[-1]
    assert tracing._RUNS == {}
    spans = exporter.get_finished_spans()
    [run] = named(spans, "run pipe")
    assert attr(run, "tether.status") == final.status
    ended = {sid(s) for s in spans}
    assert all(parent_of(s) is None or parent_of(s) in ended for s in spans)
    started = [e for e in events if e.type == "node_started"]
    assert sorted(s.name for s in spans if s.name.startswith("node ")) == sorted(
        f"node {e.node}" for e in started
    )
    finished = {(e.node, e.step) for e in events if e.type == "node_finished"}
    for span in spans:
        if span.name.startswith("node "):
            done = (attr(span, "tether.node"), attr(span, "tether.step")) in finished
            assert attr(span, "tether.status") == ("completed" if done else final.status)
    if final.status == "cancelled":
        assert stopped and attr(run, "tether.stop.mode") in (mode, "now")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_after=st.integers(1, 16), mode=st.sampled_from(["now", "after_step", "rollback"]))
def test_a_flow_stopped_anywhere_ends_each_handler_span_with_what_happened_to_it(
    stop_after: int, mode: str
) -> None:
    anyio.run(flow_stop_scenario, stop_after, mode)
