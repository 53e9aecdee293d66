"""Continue a stopped answer where it ended: the same message grows, with no restart.

Run it:  python examples/continue_answer.py

SmolLM2 starts a story; we stop it after a few words. `resume` then continues that very message:
`LocalModel` renders the chat template up to and including the partial text (the prompt ends
mid-answer, with no added "please continue" message) and the new tokens are appended to it.
"""

from __future__ import annotations

import argparse
import asyncio

from tether import Agent, InMemoryCheckpointer
from tether.models import LocalModel, ModelSettings


async def main(words: int = 6, model: LocalModel | None = None) -> tuple[str, str, str]:
    """Returns the stopped text, the prompt the continuation sent, and the final text."""
    if model is None:
        model = LocalModel()
        try:
            return await main(words, model)
        finally:
            await model.aclose()
    agent = Agent(
        model,
        checkpointer=InMemoryCheckpointer(),
        settings=ModelSettings(temperature=0, max_tokens=60),
    )
    text = ""
    async for event in agent.arun("Write a short story about a dragon.", thread_id="t"):
        if event.type == "message_delta":
            text += event.content
            if len(text.split()) >= words:
                await agent.astop(thread_id="t", reason="user pressed Stop")
    stopped = (await agent.aget_messages("t"))[-1]
    print(f"stopped ({stopped.status}): {stopped.content!r}")

    prompt = await model.render_prompt(await agent.aget_messages("t"), continue_final=True)
    print(f"the continuation's prompt ends with: {prompt[-80:]!r}")

    async for event in agent.aresume("t"):
        if event.type == "message_delta":
            print(event.content, end="", flush=True)
    print()
    final = (await agent.aget_messages("t"))[-1]
    assert final.id == stopped.id  # the same message, grown
    print(f"final ({final.status}): {final.content!r}")
    return stopped.content, prompt, final.content


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=6, help="stop after this many words")
    asyncio.run(main(parser.parse_args().words))
