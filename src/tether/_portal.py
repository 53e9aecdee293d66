"""The background event loop behind tether's sync API.

`stream`, `invoke`, `stop` and the other sync methods are thin wrappers: they run their async twin
on one process-wide event loop in a daemon thread (an anyio blocking portal), started on first use
and stopped at interpreter exit. The async code is written once.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .errors import UserError

__all__ = ["call", "portal"]

T = TypeVar("T")

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_cm: AbstractContextManager[BlockingPortal] | None = None
_thread: int | None = None


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


def _shutdown() -> None:
    global _portal, _cm
    with _lock:
        cm, _cm, _portal = _cm, None, None
    if cm is not None:
        cm.__exit__(None, None, None)
