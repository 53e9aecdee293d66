"""`Inbox`: outside input for a running flow, sent from any thread and awaited by handlers.

Design note. A flow handler that needs input from outside the run (a person typing, a webhook)
awaits `data.wait_for("UserInput")`; the caller feeds it with `run.send("UserInput", text)`. The
inbox is the meeting point, one per run, and it is separate from the flow's own events
(`data.emit` / `flow.when`): a sent value never starts a handler, and an emitted event never
satisfies a `wait_for`. Keeping the two apart means a value typed early can never skip the handler
that was meant to read it.

Mechanism:
- `send()` may be called from any thread, before the run starts, while it runs, or after it ended.
  Under a `threading.Lock` it checks that the inbox is open and whether it is bound to the run's
  event loop yet. Before `bind()` the value is queued directly (no handler can be waiting yet).
  After `bind()` the value is handed to the loop through the run's `RunLoop` (directly on the
  loop thread, else thread-safely), so every waiter and queue is touched only on the loop.
- On the loop, a value goes to the oldest handler waiting for that name, or else into that name's
  queue, where the next `wait_for` takes it at once. Values of one name are delivered in send order.
- `close()` (the run's program ended, however) makes later `send()` calls return False.

Guarantees: no value is delivered twice; a value handed to a waiter that is cancelled in the same
instant is put back at the front of its queue, so it is not lost while the run goes on.

Residual race: a `send()` that returns True just before the run ends may deliver a value that no
handler will read; it is discarded with the run.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import anyio
import anyio.lowlevel

from .._loop import RunLoop
from ..errors import UserError

__all__ = ["Inbox"]


class _Waiter:
    """One handler blocked in `Inbox.get`."""

    __slots__ = ("delivered", "event", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()  # set once `value` holds the delivered value
        self.delivered = False  # True once a value was handed over (even if the waiter is gone)
        self.value: Any = None


class Inbox:
    """The outside input of one flow run: named queues of values, and the handlers awaiting them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Values nobody has taken yet, per name, oldest first. Touched under `_lock` before
        # `bind()`, and only on the loop after it.
        self._queues: dict[str, deque[Any]] = {}
        # Handlers waiting in `get()`, per name, oldest first; only touched on the loop.
        self._waiters: dict[str, deque[_Waiter]] = {}
        # The run's loop; None until the program binds the inbox.
        self._loop: RunLoop | None = None
        # True once the run's program ended; set once, never cleared.
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether the run ended, so that `send()` is refused."""
        return self._closed

    def bind(self, loop: RunLoop) -> None:
        """Attach the inbox to the run's (bound) loop; called once by the program as it starts."""
        with self._lock:
            self._loop = loop

    def close(self) -> None:
        """Refuse further values; called on the loop when the program ends."""
        with self._lock:
            self._closed = True
            self._queues.clear()

    def send(self, name: str, value: Any = None) -> bool:
        """Deliver `value` under `name` to the run; safe from any thread.

        Returns:
            True if the run accepted the value (it has not ended), False otherwise.
        """
        _check_name(name)
        with self._lock:
            if self._closed:
                return False
            loop = self._loop
            if loop is None:
                self._queues.setdefault(name, deque()).append(value)
                return True
        return loop.call_soon(self._deliver, name, value) is True

    def _deliver(self, name: str, value: Any) -> None:
        """Hand `value` to the oldest waiter for `name`, or queue it. Runs on the loop."""
        if self._closed:
            return
        waiters = self._waiters.get(name)
        if waiters:
            waiter = waiters.popleft()
            waiter.value, waiter.delivered = value, True
            waiter.event.set()
            return
        self._queues.setdefault(name, deque()).append(value)

    async def get(self, name: str) -> Any:
        """Wait for the next value sent under `name` and return it.

        Cancellation: stops waiting. A value that was handed over in the same instant is put back
        at the front of the queue, for the next `get()`.
        """
        _check_name(name)
        await anyio.lowlevel.checkpoint_if_cancelled()
        queue = self._queues.get(name)
        if queue:
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return queue.popleft()
        waiter = _Waiter()
        self._waiters.setdefault(name, deque()).append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.delivered:
                self._queues.setdefault(name, deque()).appendleft(waiter.value)
            else:
                self._waiters[name].remove(waiter)
            raise
        return waiter.value

    def has_value(self, name: str) -> bool:
        """Whether a value for `name` is queued, so that `get(name)` returns without waiting."""
        return bool(self._queues.get(name))


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise UserError(f"an input name must be a non-empty string, not {name!r}")
