"""`RunLoop`: the event loop one run executes on, and the one way to reach it from elsewhere.

Design note. A run's code lives on one event loop, but a stop, a sent value or a stream item can
come from any thread: the sync API's caller, a sync node or handler in a worker thread, a server
thread. Every such hop goes through the run's `RunLoop`, never through a local copy of "am I on the
loop, else `call_soon_threadsafe`". The run binds it once, on its loop (`bind()`); from then on:
- `on_loop` says whether the caller runs on the loop's thread;
- `call_soon(fn)` runs `fn` on the loop: at once when the caller is on it, else scheduled
  thread-safely; it returns False when the loop is closed (the run cannot be running any more);
- `run_from_worker(fn)` runs `fn` on the loop from one of the run's worker threads and waits for it
  (anyio's `from_thread`); a hop that finds the loop stopped does nothing;
- `call_later(delay, fn)` arms a timer on the loop.

Before `bind()` there is no loop to hop to: `call_soon` returns None and the caller keeps the work
for later (a stop or a value that arrives before the run starts), and `run_from_worker` calls `fn`
directly. The binding is guarded by a `threading.Lock` and set once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import anyio.from_thread

__all__ = ["RunLoop", "in_event_loop"]


class RunLoop:
    """The loop of one run; thread-safe."""

    __slots__ = ("_lock", "_loop", "_thread")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The run's event loop and the ident of its thread; None until `bind()`, then fixed.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    def bind(self) -> None:
        """Attach the running loop; called on it, once the run starts executing. Idempotent."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
                self._thread = threading.get_ident()

    @property
    def bound(self) -> bool:
        """Whether the run's loop is known."""
        return self._loop is not None

    @property
    def on_loop(self) -> bool:
        """Whether the caller runs on the run's loop thread."""
        return self._thread is not None and threading.get_ident() == self._thread

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> bool | None:
        """Run `fn(*args)` on the loop: now when on it, else scheduled thread-safely.

        Returns True when it ran or was scheduled, False when the loop is closed, and None when
        the loop is not bound yet (nothing was done).
        """
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None:
            return None
        if threading.get_ident() == thread:
            fn(*args)
            return True
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed: the run cannot be running any more
            return False
        return True

    def call_later(self, delay: float, fn: Callable[[], Any]) -> None:
        """Arm a timer on the loop; must be called on it."""
        assert self._loop is not None, "bind() first"
        self._loop.call_later(delay, fn)

    def run_from_worker(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the loop and wait for it, from one of the run's worker threads.

        Runs `fn` directly when on the loop or not bound yet; does nothing when the loop has
        stopped (the run is gone, and so is what `fn` would change).

        Raises:
            RuntimeError: the caller is neither on the loop nor one of its worker threads.
        """
        if self._thread is None or self.on_loop:
            fn(*args)
            return
        try:
            anyio.from_thread.run_sync(fn, *args)
        except RuntimeError:
            loop = self._loop
            if loop is None or loop.is_closed() or not loop.is_running():
                return
            raise


def in_event_loop() -> bool:
    """Whether the calling thread runs an event loop (where a blocking wait would freeze it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
