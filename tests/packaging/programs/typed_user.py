"""A user's program, type-checked with `mypy --strict` against the installed wheel."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tether import END, START, Event, Message, RunFinished, StateGraph


async def talk(state: dict[str, list[Message]]) -> AsyncIterator[str]:
    for word in ("Hello", " world"):
        yield word


def build() -> StateGraph:
    graph = StateGraph()
    graph.add_node("talk", talk)
    graph.add_edge(START, "talk")
    graph.add_edge("talk", END)
    return graph


def last_status(thread_id: str) -> str | None:
    app = build().compile()
    final: Event | None = None
    for event in app.stream("Hi", thread_id=thread_id):
        final = event
    stopped: bool = app.stop(thread_id=thread_id)
    messages: list[Message] = app.get_state(thread_id).values["messages"]
    print(stopped, len(messages))
    return final.status if isinstance(final, RunFinished) else None
