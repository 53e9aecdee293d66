"""Seed 001's question: stop while tools run, then continue without running the remaining tools.

Run it:  python examples/stop_tools.py

The agent asks for three slow lookups, one after another. We stop it while the second runs: the
first result is kept, the second is cancelled mid-way, the third never starts, and both get a
synthetic "cancelled" result, so the transcript stays valid. A follow-up message then just works.

The model here is scripted, so the stop lands at the same place every time; pass
`--model openai:gpt-4o-mini` (with OPENAI_API_KEY set) to drive a real one.
"""

from __future__ import annotations

import argparse
import asyncio

from tether import Agent, InMemoryCheckpointer, tool
from tether.models import Model
from tether.testing import ScriptedModel, ToolCallStep

started: list[str] = []


@tool
async def lookup(topic: str) -> str:
    """Look a topic up in a slow knowledge base.

    Args:
        topic: What to look up.
    """
    started.append(topic)
    await asyncio.sleep(0.05 if topic == "dragons" else 30)
    return f"Notes about {topic}."


def scripted() -> ScriptedModel:
    return ScriptedModel(
        [
            ToolCallStep("lookup", {"topic": "dragons"}),
            ToolCallStep("lookup", {"topic": "compilers"}),
            ToolCallStep("lookup", {"topic": "castles"}),
        ],
        "Understood: I skipped the remaining lookups. Dragons hoard gold and notes.",
    )


async def main(model: Model | str | None = None) -> list[str]:
    agent = Agent(
        model or scripted(),
        tools=[lookup],
        parallel_tool_calls=False,
        checkpointer=InMemoryCheckpointer(),
    )
    async for event in agent.arun("Research dragons, compilers and castles.", thread_id="research"):
        if event.type == "tool_call_started":
            print(f"tool started: {event.name}{event.arguments}")
            if len(started) >= 1 and "compilers" in event.arguments:
                await asyncio.sleep(0.05)  # let it get going, as a user would
                print("stop:", await agent.astop(thread_id="research", reason="user pressed Stop"))
        elif event.type == "tool_call_finished":
            print(f"tool {event.status}: {event.name}")
        elif event.type == "run_finished":
            print(f"run {event.status}")

    result = await agent.ainvoke("Never mind the rest; what do you have?", thread_id="research")
    print("answer:", result["messages"][-1].content)
    print("tools that ever started:", started)
    return [f"{m.role}:{m.status}" for m in result["messages"]]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="e.g. openai:gpt-4o-mini (default: scripted)")
    asyncio.run(main(parser.parse_args().model))
