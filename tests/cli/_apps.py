"""Apps for the CLI tests, importable as `tests.cli._apps:<name>` by `tether serve|chat`."""

from __future__ import annotations

from tests.server._served import ControlledModel, chat_agent
from tether import App, InMemoryCheckpointer


def chat() -> App:
    """A factory: an agent whose first answer blocks after "Hello" until stopped; then it echoes."""
    model = ControlledModel()
    model.turns.append(["Hel", "lo", "@gate:never", " world"])
    return chat_agent(model, InMemoryCheckpointer())


def apps() -> dict[str, App]:
    """Two apps by name."""
    return {"first": chat(), "second": chat()}


not_an_app = 42
