"""The agent-capability examples run as written (scripted by default; SmolLM2 where marked)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_structured_output_example_validates_then_gives_none_when_stopped() -> None:
    example = load("structured_output")
    first, second = asyncio.run(example.main())
    assert first == example.City(name="Oslo", country="Norway", population=709000)
    assert second is None


@pytest.mark.llm
def test_local_tools_example_calls_search_with_a_query(local_model_ready: None) -> None:
    example = load("local_tools")
    agent = example.main()
    assert agent.model.wait_idle(60)
    asyncio.run(agent.model.aclose())  # the example's `Agent("local")` made its own LocalModel
    messages = agent.get_messages("t1")
    calls = [c for m in messages for c in m.tool_calls]
    assert [c.name for c in calls] == ["search"]
    results = [m for m in messages if m.role == "tool"]
    assert len(results) == 1 and results[0].status == "complete"
    assert not results[0].metadata.get("error")  # the arguments fit the schema
    assert messages[-1].role == "assistant" and messages[-1].status == "complete"


@pytest.mark.llm
def test_continue_answer_example_grows_the_stopped_message(local_model_ready: None) -> None:
    example = load("continue_answer")
    stopped, prompt, final = asyncio.run(example.main())
    assert prompt.endswith(stopped) and "<|im_end|>" not in prompt[-len(stopped) - 1 :]
    assert final.startswith(stopped) and len(final) > len(stopped)
    assert not final[len(stopped) :].lstrip().startswith(stopped.split()[0])  # no restart


def test_tracing_example_marks_the_stopped_spans_cancelled() -> None:
    pytest.importorskip("opentelemetry.sdk")
    spans = asyncio.run(load("tracing").main())
    runs = [s for s in spans if s["name"] == "invoke_agent weather"]
    assert [r["tether.status"] for r in runs] == ["completed", "cancelled"]
    assert runs[1]["tether.stop.requested_by"] == "user"
    stopped_tool = [s for s in spans if s["name"] == "execute_tool forecast"][-1]
    assert stopped_tool["tether.status"] == "cancelled"
    names = [s["name"] for s in spans]
    i = names.index("run pipeline")  # in the order they ended: node, step, run
    assert names[i - 2 : i + 1] == ["node draft", "step 1", "run pipeline"]
    assert spans[i]["tether.app.kind"] == "graph" and spans[i]["tether.thread_id"] == "g"


@pytest.mark.llm
def test_structured_output_example_with_smollm2_validates_through_the_grammar(
    local_model_ready: None,
) -> None:
    from tether.models import LocalModel

    example = load("structured_output")
    model = LocalModel()
    try:
        first, second = asyncio.run(example.main(model))
    finally:
        assert model.wait_idle(60)
        asyncio.run(model.aclose())
    assert isinstance(first, example.City)  # the values are SmolLM2's; the shape is the schema's
    assert second is None


def test_subagents_example_stops_the_researcher_and_keeps_its_partial_answer() -> None:
    example = load("subagents")
    stopped, graph_messages, asked = asyncio.run(example.main())
    partial = stopped["partial"]
    assert (partial.status, partial.content) == ("stopped", "Dragons hoard gold ")
    result = next(m for m in stopped["messages"] if m.role == "tool")
    assert result.status == "cancelled" and result.content.endswith(": Dragons hoard gold ")
    assert stopped["messages"][-1].content.startswith("The research was cut short")
    assert [m.content for m in graph_messages] == [
        "What do dragons hoard?",
        "Dragons hoard gold.",
        "Summary: Dragons hoard gold.",
    ]
    # the researcher's question paused the lead, and the answer reached the researcher's tool
    assert asked["question"]["value"] == {"trust": "dragons.example"}
    assert asked["question"]["path"] == ["researcher:call_1"]
    [result] = [m for m in asked["messages"] if m.role == "tool"]
    assert result.content == "Dragons hoard gold (source checked)."
    assert asked["messages"][-1].content == "The researcher says: dragons hoard gold."


def test_tool_approval_example_edits_then_a_stop_cancels_the_waiting_call() -> None:
    example = load("tool_approval")
    ledger, statuses = asyncio.run(example.main())
    assert ledger == [50]  # the edited amount, once; the second transfer never ran
    assert statuses == ["complete", "cancelled"]
