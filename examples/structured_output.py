"""Structured output: the agent's answer is a validated pydantic object; a stop gives `None`.

Run it:  python examples/structured_output.py            (scripted model, instant)
         python examples/structured_output.py --model local   (SmolLM2, grammar-constrained)

The first question streams its JSON answer; each new partial object is printed as it arrives, and
the result is a `City`. The second question is stopped mid-answer: the partial JSON is kept as a
`stopped` message, and the result is `None`, never a half-validated object.
"""

from __future__ import annotations

import argparse
import asyncio

from pydantic import BaseModel

from tether import Agent, InMemoryCheckpointer
from tether.models import Model, ModelSettings
from tether.testing import ScriptedModel


class City(BaseModel):
    name: str
    country: str
    population: int


def scripted() -> ScriptedModel:
    return ScriptedModel(
        ['{"name": "Oslo", ', '"country": "Norway", ', '"population": 709000}'],
        ['{"name": "Tron', 'dheim", ', '"country": "Norway", ', '"population": 212000}'],
    )


async def main(model: Model | str | None = None) -> tuple[BaseModel | None, BaseModel | None]:
    agent = Agent(
        model or scripted(),
        output_type=City,
        checkpointer=InMemoryCheckpointer(),
        settings=ModelSettings(temperature=0, max_tokens=80),
    )
    async for event in agent.arun("What is the biggest city in Norway?", thread_id="cities"):
        if event.type == "custom":
            print("partial:", event.data["partial_output"])
    first = await agent.aget_output("cities")
    print("result:", repr(first))

    async for event in agent.arun("And the third biggest?", thread_id="cities"):
        if event.type == "custom" and "name" in event.data["partial_output"]:
            print("partial:", event.data["partial_output"], "-> stop")
            await agent.astop(thread_id="cities", reason="user pressed Stop")
    stopped = (await agent.aget_messages("cities"))[-1]
    second = await agent.aget_output("cities")
    print(f"stopped answer kept: {stopped.content!r} ({stopped.status}); result: {second!r}")
    return first, second


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="e.g. local or openai:gpt-4o-mini")
    asyncio.run(main(parser.parse_args().model))
