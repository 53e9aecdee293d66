"""The app the in-process server tests serve: a `tether.Agent` on a scripted model, in memory.

The server treats every `App` alike; an agent is the common case (and the one that resumes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether import Agent, App, InMemoryCheckpointer
from tether.models import Model


def chat_app(
    model: Model,
    *,
    name: str = "chat",
    tools: Sequence[Any] = (),
    checkpointer: Any = None,
) -> App:
    """An agent on `model` with `tools`, storing threads in memory."""
    return Agent(model, tools=tools, name=name, checkpointer=checkpointer or InMemoryCheckpointer())
