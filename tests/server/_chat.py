"""A chat app for server tests: a one-node graph that streams a model's text.

Until `tether.Agent` lands this stands in for it; the server treats every `App` alike.
"""

from __future__ import annotations

from typing import Any

from tether import END, START, App, InMemoryCheckpointer, StateGraph
from tether.models import Model, TextDelta


def chat_app(model: Model, *, name: str = "chat", checkpointer: Any = None) -> App:
    """A graph app whose single node streams `model`'s answer to the conversation."""

    async def answer(state: dict[str, Any]) -> Any:
        async with model.stream(state["messages"]) as deltas:
            async for delta in deltas:
                if isinstance(delta, TextDelta):
                    yield delta.text

    graph = StateGraph()
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer or InMemoryCheckpointer(), name=name)
