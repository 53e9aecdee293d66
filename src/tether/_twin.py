"""Sync twins, generated from their async methods.

Each operation of tether's public API is written once, async (`astart`, `astream`, `astop`, …).
Its sync twin (`start`, `stream`, `stop`, …) is made from it here, never written by hand:

- it has the async method's parameters: the `ParamSpec` makes mypy check a call to the twin as it
  checks a call to the async method, and `functools.update_wrapper` makes `inspect.signature`
  (and so `help()` and the test of every pair, `tests/core/test_api_faces.py`) show the same
  parameters;
- its docstring is the async method's, under one line that says how the twin runs it;
- it looks the async method up by name on the instance when called, so a subclass that overrides
  `astart` gets a `start` that runs its override. A subclass that narrows the return type of its
  override makes its own twin (`start = SyncTwin(astart)`), typed with the narrower type.

So a parameter cannot be added to one face and forgotten on the other.

Two kinds of twin, written in the class body after the async method:

- `start = SyncTwin(astart)`, for a coroutine method: the twin runs `await self.astart(...)` on
  tether's background loop (`_portal`) and returns its result (or raises its error), from any
  thread but that loop's own (there it raises `UserError`: use the async method). A sync call
  cannot be cancelled: it returns when the coroutine does.
- `stream = SyncStreamTwin(astream, SyncRunStream)`, for a method that returns an async stream
  object at once: the twin calls it in the caller's thread and wraps the stream for sync iteration;
  each `next()` then runs on the background loop.

A twin is a descriptor rather than a function, so that mypy types it with the async method's
parameters (a `ParamSpec`) and a covariant result: a subclass's twin may return a narrower type.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from . import _portal
from ._loop import in_event_loop

__all__ = ["SyncOwner", "SyncStreamTwin", "SyncTwin"]

P = ParamSpec("P")
T_co = TypeVar("T_co", covariant=True)
S = TypeVar("S")


class SyncOwner(Protocol):
    """An object with sync twins: it knows what to close on the background loop at exit."""

    def _use_portal(self) -> None:
        """Called before a twin uses the background loop: registers the owner's cleanup there."""


class _Twin(Generic[P, T_co]):
    """A generated sync method: a descriptor, so that a subclass may generate its own twin of an
    override whose return type is narrower (`Flow.start` returns a `FlowRun`)."""

    def __init__(self, twin: Callable[..., T_co], amethod: Callable[..., Any], how: str) -> None:
        if not amethod.__name__.startswith("a"):
            raise ValueError(f"an async method's name starts with 'a', not {amethod.__name__!r}")
        functools.update_wrapper(twin, amethod)  # `inspect.signature` follows `__wrapped__`
        twin.__name__ = amethod.__name__[1:]
        prefix, _, _ = amethod.__qualname__.rpartition(".")
        twin.__qualname__ = f"{prefix}.{twin.__name__}" if prefix else twin.__name__
        doc = inspect.cleandoc(amethod.__doc__) if amethod.__doc__ else ""
        twin.__doc__ = f"{how}\n\n{doc}" if doc else how
        self._twin = twin

    @overload
    def __get__(self, owner: None, cls: type) -> Callable[Concatenate[Any, P], T_co]: ...
    @overload
    def __get__(self, owner: object, cls: type) -> Callable[P, T_co]: ...
    def __get__(self, owner: object, cls: type) -> Callable[..., T_co]:
        return self._twin if owner is None else types.MethodType(self._twin, owner)


class SyncTwin(_Twin[P, T_co]):
    """The sync twin of a coroutine method: it runs `await owner.amethod(...)` on tether's
    background loop and returns its result (or raises its error), from any thread but that loop's
    own. A sync call cannot be cancelled: it returns when the coroutine does.

    Args:
        amethod: The async method, as a plain function (`astart` in the class body).
        in_a_loop: Keyword values the twin passes instead of the caller's when it is called from
            a thread that runs an event loop, where blocking would freeze that loop (`stop` does
            not wait there: `{"wait": False}`).
    """

    def __init__(
        self,
        amethod: Callable[Concatenate[Any, P], Coroutine[Any, Any, T_co]],
        *,
        in_a_loop: Mapping[str, object] | None = None,
    ) -> None:
        name = amethod.__name__
        overrides = dict(in_a_loop or {})

        def twin(owner: SyncOwner, /, *args: Any, **kwargs: Any) -> T_co:
            method: Callable[..., Coroutine[Any, Any, T_co]] = getattr(owner, name)
            if overrides and in_event_loop():
                kwargs.update(overrides)

            async def call() -> T_co:
                return await method(*args, **kwargs)

            call.__name__ = name[1:]  # named in `_portal`'s error for a call from its own loop
            owner._use_portal()
            return _portal.call(call)

        how = f"Sync `{name}`: runs it on tether's background loop and returns its result."
        if overrides:
            passed = ", ".join(f"`{key}={value!r}`" for key, value in overrides.items())
            how += f" Called in a running event loop, it passes {passed}."
        super().__init__(twin, amethod, how)


class SyncStreamTwin(_Twin[P, T_co]):
    """The sync twin of a method that returns an async stream at once (`astream`): it calls the
    method in the caller's thread and returns the stream wrapped by `wrap` (`SyncRunStream`) for
    iteration from any thread; each `next()` runs on tether's background loop.

    Args:
        amethod: The async method, as a plain function (`astream` in the class body).
        wrap: Makes the sync stream of the async one.
    """

    def __init__(
        self,
        amethod: Callable[Concatenate[Any, P], S],
        wrap: Callable[[S], T_co],
    ) -> None:
        name = amethod.__name__

        def twin(owner: SyncOwner, /, *args: Any, **kwargs: Any) -> T_co:
            stream: S = getattr(owner, name)(*args, **kwargs)
            owner._use_portal()
            return wrap(stream)

        how = (
            f"Sync `{name}`: iterate it from any thread; the run lives on tether's background loop."
        )
        super().__init__(twin, amethod, how)
