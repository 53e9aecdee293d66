"""`Signal` and `RunLoop`: one thread-safe flag with one change signal, and the run's event loop.

Design note. A run's code lives on one event loop, but a stop, a sent value, a stream item or a
reader can come from any thread or any other event loop: the sync API's caller, a sync node or
handler in a worker thread, a server thread, a test on its own loop. Every such hop goes through
one object, never through a local copy of "am I on the loop, else `call_soon_threadsafe`".

`Signal` is the waiting half: one flag, set once and never cleared (a run ended, a gate opened),
and one change signal (`notify()`: new events were appended). Waiters register on the signal:
- an async waiter, on any event loop, parks on a future of its *own* loop; `notify()` and `set()`
  resolve that future directly when they run on the waiter's loop (the hot path: one future per
  reader wake-up, no thread hop), else through that loop's `call_soon_threadsafe`;
- a thread blocks on a `threading.Event` made when the first thread waits.
Nothing is allocated for a signal nobody waits on: a run with no reader costs one lock and a few
slots (this is what keeps an idle run small). The flag, the waiter list and the thread event are
guarded by the one lock; `notify()` reads the list without it on the hot path.

Residual race: a waiter on *another* loop than the notifier checks its condition, then registers;
a `notify()` in between is missed, and that waiter wakes at the next change or when the flag is set
(never later: `set()` checks and wakes under the lock). A waiter on the notifier's own loop cannot
miss one. A waiter whose event loop closes while it waits is never woken; it cannot run any more
anyway.

`RunLoop` is a `Signal` that also knows the run's loop. The run binds it once, on its loop
(`bind()`); from then on:
- `on_loop` says whether the caller runs on the loop's thread;
- `call_soon(fn)` runs `fn` on the loop: at once when the caller is on it, else scheduled
  thread-safely; it returns False when the loop is closed (the run cannot be running any more);
- `run_from_worker(fn)` runs `fn` on the loop from one of the run's worker threads and waits for it
  (anyio's `from_thread`); a hop that finds the loop stopped does nothing;
- `call_later(delay, fn)` arms a timer on the loop.

Before `bind()` there is no loop to hop to: `call_soon` returns None and the caller keeps the work
for later (a stop or a value that arrives before the run starts), and `run_from_worker` calls `fn`
directly. The binding is guarded by the lock and set once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import anyio.from_thread
import anyio.lowlevel

__all__ = ["RunLoop", "Signal", "in_event_loop", "resolve"]

_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]


def resolve(future: asyncio.Future[None]) -> None:
    """Wake whoever awaits `future` (once; later calls do nothing). Call it on the future's loop."""
    if not future.done():
        future.set_result(None)


def _wake(waiters: list[_Waiter]) -> None:
    """Resolve each waiter's future on its own loop: directly from that loop, else thread-safely."""
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for loop, future in waiters:
        if loop is here:
            resolve(future)
        else:
            # A closed loop raises RuntimeError: its waiter cannot run any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(resolve, future)


class Signal:
    """A flag set once (from any thread) and a change signal, awaitable from any event loop."""

    __slots__ = ("_lock", "_sync", "flag", "waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # True once `set()` ran; never cleared. Written under `_lock`, read without it.
        self.flag = False
        # The async waiters for the next change (or the flag), or None when nobody waits; the
        # list is replaced, never mutated, once it was handed to `_wake`. Read lock-free by the
        # hot path (`if signal.waiters: signal.notify()`).
        self.waiters: list[_Waiter] | None = None
        # Made by the first thread that blocks in `wait_sync`; set together with `is_set`.
        self._sync: threading.Event | None = None

    @property
    def lock(self) -> threading.Lock:
        """The lock guarding this signal; the run's `StopToken` shares it (one lock per run).

        A holder must not call this signal's methods (the lock is not reentrant).
        """
        return self._lock

    def notify(self) -> None:
        """Wake every async waiter of `wait_change()`; safe from any thread. Cheap when none wait."""
        if self.waiters is None:
            return
        with self._lock:
            waiters, self.waiters = self.waiters, None
        if waiters:
            _wake(waiters)

    def set(self) -> None:
        """Set the flag and wake every waiter, async and blocking; idempotent, any thread."""
        with self._lock:
            self.flag = True
            waiters, self.waiters = self.waiters, None
            sync = self._sync
        if sync is not None:
            sync.set()
        if waiters:
            _wake(waiters)

    async def wait_change(self) -> None:
        """Wait for the next `notify()`, or for the flag; returns at once if the flag is set.

        A caller checks its own condition first (e.g. "are there new events?") and then waits:
        when it runs on the loop that notifies, nothing can change in between.

        Cancellation: stops waiting and unregisters; nothing else changes.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if self.flag:
                return
            if self.waiters is None:
                self.waiters = []
            self.waiters.append((loop, future))
        try:
            await future
        finally:
            if future.cancelled() or not future.done():  # not resolved by a wake: still listed
                self._forget(future)

    async def wait(self) -> None:
        """Wait until the flag is set; from any event loop. A checkpoint even when it is set.

        Cancellation: stops waiting and unregisters; nothing else changes.
        """
        while not self.flag:
            await self.wait_change()
        await anyio.lowlevel.checkpoint()

    def wait_sync(self, timeout: float | None = None) -> bool:
        """Block this thread until the flag is set; False if `timeout` ran out first."""
        with self._lock:
            if self.flag:
                return True
            if self._sync is None:
                self._sync = threading.Event()
            sync = self._sync
        return sync.wait(timeout)

    def _forget(self, future: asyncio.Future[None]) -> None:
        with self._lock:
            waiters = self.waiters
            if waiters:
                self.waiters = [w for w in waiters if w[1] is not future] or None


class RunLoop(Signal):
    """The loop of one run, with the run's end flag and event signal; thread-safe."""

    __slots__ = ("_loop", "_thread")

    def __init__(self) -> None:
        super().__init__()
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
