"""Stop requests and the per-run stop token.

Design note. Each run owns one `StopToken`. `request()` may be called from any thread or event loop:
under a `threading.Lock` it records the first request (the first reason wins, and the request is
sticky, like trio's `cancel_called`), then wakes the run's own event loop through its `RunLoop`
(`_loop.py`: directly when already on that loop, else thread-safely). On the loop, the token:
- cancels the run's cancel scope for `now` and `rollback`;
- for `after_step`, sets `after_step` so the engine stops at the next clean boundary, and arms a
  `grace` timer that escalates to `now` when it runs out.

When the stop actually ended the run (trio's `cancelled_caught`), the engine records it in the run
record's `stopped_at`. A request that arrives before the token is bound to a scope (stop before start)
is kept, and `bind()` applies it at once, so the run ends `cancelled` without running.

Residual race: a request that arrives after the run has committed its terminal event returns `False`
(the run is finished); one that arrives during the shielded commit returns `True` but changes
nothing, because the outcome is already decided. Both are correct under S2.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal, get_args

from anyio import CancelScope

from ._loop import RunLoop
from .errors import UserError

__all__ = ["RequestedBy", "StopMode", "StopRequest", "StopToken", "check_mode"]

StopMode = Literal["now", "after_step", "rollback"]
RequestedBy = Literal["user", "disconnect", "superseded", "shutdown", "timeout", "api"]


def check_mode(mode: str) -> StopMode:
    """Return `mode` if it is a stop mode, else raise a `UserError` that lists the choices."""
    if mode not in get_args(StopMode):
        raise UserError(f"stop mode {mode!r} is not one of 'now', 'after_step', 'rollback'")
    return mode  # type: ignore[return-value]  # narrowed by the membership test above


@dataclass(frozen=True, slots=True)
class StopRequest:
    """One request to stop a run."""

    mode: StopMode = "now"
    reason: str | None = None
    requested_by: str = "user"
    grace: float | None = None  # seconds an `after_step` stop waits before it escalates to `now`
    requested_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.grace is not None and self.grace < 0:
            raise UserError(f"grace must be a number of seconds >= 0, not {self.grace!r}")


class StopToken:
    """The stop state of one run; thread-safe.

    One per run, so it has slots and no lock of its own: it guards its state with its `RunLoop`'s
    lock (held only for a few assignments, never while calling out).
    """

    __slots__ = ("_grace_armed", "_lock", "_scope", "begun", "finished", "loop", "mode", "request")

    def __init__(self, loop: RunLoop | None = None) -> None:
        # The first request; set once and never cleared (sticky), so the first reason wins.
        self.request: StopRequest | None = None
        # The strongest mode requested so far: a later `now` escalates an `after_step` request.
        self.mode: StopMode | None = None
        # True once the run has decided how it ends; later requests return False. Set only by
        # `RunHandle.finish_events()`, which also ends the handle's text span: `emit_text` checks
        # this flag only when a span starts, so setting it anywhere else would let tokens through.
        self.finished = False
        # The run's cancel scope, set by `bind()` when the run starts executing.
        self._scope: CancelScope | None = None
        # The run's loop: where requests are applied; bound by `bind()`.
        self.loop = loop if loop is not None else RunLoop()
        self._lock: threading.Lock = self.loop.lock
        # True once the run won its thread; before that, every stop mode cancels at once.
        self.begun = False
        # Whether the grace timer of an after_step stop is running.
        self._grace_armed = False

    @property
    def requested(self) -> bool:
        """Whether any stop was requested (sticky)."""
        return self.request is not None

    def request_stop(self, req: StopRequest) -> bool:
        """Record `req` and wake the run. Returns False only when the run already finished."""
        with self._lock:
            if self.finished:
                return False
            if self.request is None:
                self.request = req
            if self.mode is None or _rank(req.mode) > _rank(self.mode):
                self.mode = req.mode
        # None: not bound yet, and bind() applies it; False: the loop closed, the run is gone.
        return self.loop.call_soon(self._apply) is not False

    def bind(self, scope: CancelScope) -> None:
        """Attach the run's scope; must be called on the run's loop. Applies an early request."""
        with self._lock:
            self._scope = scope
        self.loop.bind()
        if self.request is not None:
            self._apply()

    def escalate(self) -> None:
        """Turn a pending `after_step` stop into `now` (the grace ran out)."""
        with self._lock:
            if self.mode == "after_step":
                self.mode = "now"
        self._apply()

    def _apply(self) -> None:
        if self._scope is not None and (self.mode in ("now", "rollback") or not self.begun):
            self._scope.cancel()
        elif (
            self.mode == "after_step"
            and self.request is not None
            and self.request.grace is not None
            and self.loop.bound
            and not self._grace_armed
        ):
            self._grace_armed = True
            self.loop.call_later(self.request.grace, self.escalate)


def _rank(mode: StopMode) -> int:
    return {"after_step": 0, "now": 1, "rollback": 2}[mode]
