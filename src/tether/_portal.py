"""The background event loop behind tether's sync API.

`stream`, `invoke`, `stop` and the other sync methods are thin wrappers: they run their async twin
on one process-wide event loop in a daemon thread (an anyio blocking portal), started on first use
and stopped at interpreter exit. The async code is written once.

Resources that belong to that loop (a Postgres connection pool, say) must be closed on it before it
stops: apps register their checkpointer's `aclose` with `close_at_exit`, and the exit hook runs
those closers, within `CLOSE_DEADLINE`, before stopping the loop.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .errors import UserError

__all__ = ["call", "close_at_exit", "in_portal_thread", "portal"]

T = TypeVar("T")
log = logging.getLogger("tether")

CLOSE_DEADLINE = 5.0  # seconds all exit closers together may take

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_cm: AbstractContextManager[BlockingPortal] | None = None
_thread: int | None = None
_closers: dict[int, Callable[[], Awaitable[None]]] = {}  # id(owner) -> its async cleanup


def portal() -> BlockingPortal:
    """The shared portal, started on first use."""
    global _portal, _cm, _thread
    with _lock:
        if _portal is None:
            _cm = start_blocking_portal(name="tether-loop")
            _portal = _cm.__enter__()
            _thread = _portal.call(threading.get_ident)
            atexit.register(_shutdown)
        return _portal


def in_portal_thread() -> bool:
    """Whether the caller runs on the portal's own loop thread."""
    return _thread is not None and threading.get_ident() == _thread


def call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run `await fn(*args)` on the background loop and return its result (re-raising errors)."""
    if in_portal_thread():
        raise UserError(
            f"the sync API ({getattr(fn, '__name__', fn)!r}) was called from inside a run on "
            "tether's event loop; use its async twin (e.g. `await app.astop(...)`)"
        )
    return portal().call(fn, *args)


def close_at_exit(owner: object, closer: Callable[[], Awaitable[None]]) -> None:
    """Run `await closer()` on the background loop before it stops at exit (once per owner)."""
    with _lock:
        _closers.setdefault(id(owner), closer)


async def _run_closers() -> None:
    with anyio.move_on_after(CLOSE_DEADLINE):
        for closer in list(_closers.values()):
            try:
                await closer()
            except Exception:
                log.exception("closing %r at exit failed", closer)


def _shutdown() -> None:
    global _portal, _cm
    with _lock:
        running, cm, _cm, _portal = _portal, _cm, None, None
    if running is None or cm is None:
        return
    try:
        running.call(_run_closers)
    finally:
        cm.__exit__(None, None, None)
