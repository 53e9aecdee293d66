"""A flow's wiring: `Handler`s in `Chain`s, keyed by the event that starts them (`Wiring`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from .data import FlowData

__all__ = ["Chain", "Handler", "HandlerFn", "Wiring"]

HandlerFn = Callable[["FlowData"], Any]
"""A flow handler: `async def handler(data)` or `def handler(data)`."""


@dataclass(frozen=True, slots=True)
class Handler:
    """One handler of a chain: its name, its function, and whether it is async."""

    name: str
    fn: HandlerFn
    is_async: bool

    @classmethod
    def of(cls, fn: HandlerFn, name: str | None) -> Handler:
        """Check `fn` and wrap it; raises `UserError` for what cannot be a handler."""
        if not callable(fn):
            raise UserError(f"a flow handler must be a function taking `data`, not {fn!r}")
        target = fn if inspect.isroutine(fn) else getattr(fn, "__call__", fn)  # noqa: B004
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise UserError(
                f"flow handler {fn!r} is a generator; push items with "
                "`data.put_into_stream(item)` and return the handler's result instead"
            )
        label = name if name is not None else getattr(fn, "__name__", None) or type(fn).__name__
        if not isinstance(label, str) or not label:
            raise UserError(f"a handler name must be a non-empty string, not {label!r}")
        return cls(label, fn, inspect.iscoroutinefunction(target))


class Chain:
    """Handlers that run one after another when an event arrives.

    Made by `flow.to(handler)` (started by the run's initial value) or `flow.when(event)`. Each
    handler gets the previous one's return value as `data.value`; `.end()` stores the last one as
    the run's result.
    """

    def __init__(self, event: str) -> None:
        self.event = event
        self.handlers: list[Handler] = []
        self.ends = False  # whether the last handler's return value is the run's result

    def to(self, handler: HandlerFn, *, name: str | None = None) -> Chain:
        """Append `handler`; returns this chain, for `.to(...)` / `.end()`.

        Raises:
            UserError: `handler` is not a function of `data`, or the chain already `.end()`ed.
        """
        if self.ends:
            raise UserError(
                f"the chain on {self.event!r} already ended; start another with flow.when(...)"
            )
        self.handlers.append(Handler.of(handler, name))
        return self

    def end(self) -> Chain:
        """Make the value returned by the chain's last handler the run's `result`.

        The run still completes only when no handler runs or is pending; if several chains end,
        the last value to arrive wins.
        """
        if not self.handlers:
            raise UserError(f"the chain on {self.event!r} has no handler; add one with .to(...)")
        self.ends = True
        return self

    def __repr__(self) -> str:
        names = " -> ".join(h.name for h in self.handlers)
        return f"<Chain on {self.event!r}: {names}{' -> end' if self.ends else ''}>"


class Wiring:
    """The chains of one flow, by the event that starts them."""

    def __init__(self) -> None:
        self._chains: dict[str, list[Chain]] = {}  # event -> chains, in the order made

    def chain(self, event: str) -> Chain:
        """A new, empty chain on `event`."""
        made = Chain(event)
        self._chains.setdefault(event, []).append(made)
        return made

    def chains_for(self, event: str) -> list[Chain]:
        """The chains on `event` that have handlers, in the order they were made."""
        return [c for c in self._chains.get(event, ()) if c.handlers]
