"""Run in a fresh venv: a graph streams one chunk, is stopped, and keeps the chunk (S1, S4, S5)."""

from __future__ import annotations

import anyio

import tether
from tether import END, START, StateGraph


async def talk(state: tether.MessagesState):  # type: ignore[no-untyped-def]
    yield "first chunk"
    await anyio.sleep_forever()  # only a stop ends this node


graph = StateGraph()
graph.add_node("talk", talk)
graph.add_edge(START, "talk")
graph.add_edge("talk", END)
app = graph.compile()  # the embedded default: SQLite in ./.tether/

events = []
for event in app.stream("Go", thread_id="smoke"):
    events.append(event)
    if event.type == "message_delta":
        assert app.stop(thread_id="smoke", reason="smoke test") is True

last = events[-1]
assert isinstance(last, tether.RunFinished), events
assert last.status == "cancelled", last
answer = app.get_state("smoke").values["messages"][-1]
assert (answer.role, answer.content, answer.status) == ("assistant", "first chunk", "stopped")
record = app.get_run(last.run_id)
assert record is not None and record.status == "cancelled", record
print("stopped:", answer.status, repr(answer.content))
