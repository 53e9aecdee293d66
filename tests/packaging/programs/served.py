"""The app `tether serve served:app` serves in the wheel's smoke test."""

from __future__ import annotations

from tether import END, START, StateGraph


async def echo(state):  # type: ignore[no-untyped-def]
    yield "You said: " + state["messages"][-1].content


graph = StateGraph()
graph.add_node("echo", echo)
graph.add_edge(START, "echo")
graph.add_edge("echo", END)
app = graph.compile()
