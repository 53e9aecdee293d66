"""The README's headline agent, as written: `Agent("local", tools=[search])` calls its tool.

Run it:  python examples/local_tools.py

SmolLM2-135M runs in-process. Its answer is constrained by a llama.cpp grammar built from the
tool's JSON schema, so when it calls `search`, the call is well-formed and its arguments fit the
schema. (A 135M model's query and final answer can be naive; the mechanics are real.)
"""

from __future__ import annotations

import argparse

from tether import Agent, InMemoryCheckpointer, tool
from tether.models import Model, ModelSettings

DOCS = {
    "stop": "agent.stop(thread_id=...) stops a run; the partial answer is kept as stopped.",
    "resume": "agent.resume(thread_id) continues a stopped answer in the same message.",
}


@tool
def search(query: str) -> str:
    """Search the docs.

    Args:
        query: What to look for.
    """
    hits = [text for word, text in DOCS.items() if word in query.lower()]
    return "\n".join(hits) or "No page matches; the docs cover stop and resume."


def main(
    model: Model | str = "local", question: str = "Search the docs: how do I stop a run?"
) -> Agent:
    agent = Agent(
        model,
        tools=[search],
        instructions="Be helpful.",
        checkpointer=InMemoryCheckpointer(),
        settings=ModelSettings(temperature=0, max_tokens=80),
    )
    for event in agent.run(question, stream=True, thread_id="t1"):
        if event.type == "message_delta":
            print(event.content, end="", flush=True)
        elif event.type == "tool_call_started":
            print(f"\n[tool call] {event.name}({event.arguments})")
        elif event.type == "tool_call_finished":
            print(f"[tool result, {event.status}] {event.content}")
    print()
    return agent


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local", help="local (default) or openai:gpt-4o-mini")
    parser.add_argument("question", nargs="?", default="Search the docs: how do I stop a run?")
    args = parser.parse_args()
    main(args.model, args.question)
