"""A sub-agent as a tool, and an agent as a subgraph node; stop the parent mid-way through the child.

Run it:  python examples/subagents.py

1. A lead agent delegates to a `researcher` agent through `researcher.as_tool()`. The researcher's
   tokens reach the lead's stream with `path=("researcher:<call id>",)`. We stop the lead while the
   researcher is writing: the researcher stops at once and keeps its partial answer `stopped` on
   its own thread, and the lead's tool call is answered `cancelled` with that partial answer, so
   a follow-up message just works.
2. The same researcher runs as the node `research` of a graph; its events carry
   `path=("research",)` and its answer becomes the graph's state.
3. A researcher that must ask a person (its tool calls `interrupt()`) pauses the lead too: the
   lead's run ends `interrupted` with the researcher's question and `path`. The answer, sent to
   the lead with `Command(resume=...)`, reaches the researcher on its own thread.

The models here are scripted, so the stop lands at the same place every time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tether import END, Agent, Command, InMemoryCheckpointer, Message, StateGraph, interrupt, tool
from tether.children import child_thread_id
from tether.testing import Gate, ScriptedModel, ToolCallStep


def make_researcher() -> Agent:
    return Agent(
        ScriptedModel(
            ["Dragons ", "hoard ", "gold ", Gate("still thinking"), "and gems."],
            ["Dragons hoard gold."],
        ),
        name="researcher",
        description="Researches a topic and reports the facts.",
        checkpointer=InMemoryCheckpointer(),
    )


async def delegate_and_stop() -> dict[str, Any]:
    researcher = make_researcher()
    lead = Agent(
        ScriptedModel(
            [ToolCallStep("researcher", {"input": "What do dragons hoard?"}, id="call_1")],
            "The research was cut short, but: dragons hoard gold.",
        ),
        tools=[researcher.as_tool()],
        checkpointer=InMemoryCheckpointer(),
    )
    tokens = 0
    run_id = ""
    async for event in lead.arun("Ask the researcher about dragons.", thread_id="lead"):
        run_id = event.run_id
        if event.type == "message_delta" and event.path:
            print(f"{'/'.join(event.path)}: {event.content!r}")
            tokens += 1
            if tokens == 3:  # the researcher now waits at its gate: stop the lead
                await lead.astop(thread_id="lead", reason="user pressed Stop", wait=False)
        elif event.type == "tool_call_finished" and not event.path:
            print(f"tool {event.name} {event.status}: {event.content}")
        elif event.type == "run_finished":
            print(f"lead run {event.status}")
    child_thread = child_thread_id("lead", run_id, "researcher.call_1")
    partial = (await researcher.aget_messages(child_thread))[-1]
    print(f"researcher's answer on {child_thread!r}: {partial.status} {partial.content!r}")
    after = await lead.ainvoke("What did you find?", thread_id="lead")
    print("lead:", after["messages"][-1].content)
    return {"partial": partial, "messages": await lead.aget_messages("lead")}


async def as_subgraph() -> list[Message]:
    researcher = Agent(
        ScriptedModel(["Dragons ", "hoard ", "gold."]),
        name="researcher",
        checkpointer=InMemoryCheckpointer(),
    )

    async def summarize(state: dict[str, Any]) -> Message:
        return Message.assistant(f"Summary: {state['messages'][-1].content}")

    graph = StateGraph()
    graph.add_node("research", researcher)  # a compiled graph (here an agent) as a node
    graph.add_node("summarize", summarize)
    graph.set_entry_point("research")
    graph.add_edge("research", "summarize")
    graph.add_edge("summarize", END)
    app = graph.compile(InMemoryCheckpointer())
    async for event in app.astream("What do dragons hoard?", thread_id="graph"):
        if event.type == "message" and event.path:
            print(f"{'/'.join(event.path)} ({event.node}): {event.content!r}")
    messages: list[Message] = (await app.aget_state("graph")).values["messages"]
    print("graph:", messages[-1].content)
    return messages


async def asks_a_person() -> dict[str, Any]:
    @tool
    def check_source(url: str) -> str:
        """Ask a person whether a source can be trusted."""
        return f"{url}: {interrupt({'trust': url})}"

    researcher = Agent(
        ScriptedModel(
            [ToolCallStep("check_source", {"url": "dragons.example"}, id="k1")],
            "Dragons hoard gold (source checked).",
        ),
        tools=[check_source],
        name="researcher",
        description="Researches a topic and reports the facts.",
        checkpointer=InMemoryCheckpointer(),
    )
    lead = Agent(
        ScriptedModel(
            [ToolCallStep("researcher", {"input": "What do dragons hoard?"}, id="call_1")],
            "The researcher says: dragons hoard gold.",
        ),
        tools=[researcher.as_tool()],
        checkpointer=InMemoryCheckpointer(),
    )
    await lead.ainvoke("Ask the researcher about dragons.", thread_id="asks")
    question = (await lead.aget_state("asks")).metadata["interrupt"]
    print(f"the lead waits: {question['value']} asked by {question['path']}")
    answered = await lead.ainvoke(Command(resume="trusted"), thread_id="asks")
    print("lead:", answered["messages"][-1].content)
    return {"question": question, "messages": answered["messages"]}


async def main() -> tuple[dict[str, Any], list[Message], dict[str, Any]]:
    return await delegate_and_stop(), await as_subgraph(), await asks_a_person()


if __name__ == "__main__":
    asyncio.run(main())
