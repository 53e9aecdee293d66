"""A user's program, type-checked with `mypy --strict` against the installed wheel."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tether import (
    END,
    START,
    CompiledGraph,
    Event,
    Message,
    MessageDeltaEvent,
    RunFinished,
    RunHandle,
    RunRecord,
    StateGraph,
)


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


async def stop_when_it_speaks(app: CompiledGraph, thread_id: str) -> RunRecord | None:
    stream = app.astream({"messages": [Message.user("Hi")]}, thread_id=thread_id)
    handle: RunHandle = await stream.start()
    async with stream:
        async for event in stream:
            if isinstance(event, MessageDeltaEvent):
                await app.astop(run_id=handle.run_id, reason="typed")
    return await app.aget_run(handle.run_id)
