"""The `RunRegistry` contract: who runs what, stop delivery, and the per-thread policy.

A registry is the single index of every active run (pending or running) of the processes that share
it; nothing else in tether keeps a second one. It:
- admits a run to its thread under the run's multitask strategy (`acquire`): `reject` raises
  `ThreadBusyError`; `interrupt` and `rollback` stop the active run (mode `now` or `rollback`,
  `requested_by="superseded"`) and wait until it released the thread; `enqueue` waits in FIFO order.
  A run whose thread is held by a run that is already stopping waits instead of being rejected.
- delivers stop requests by run id or thread id to the run wherever it executes (`request_stop`),
  and says in a typed `StopResult` which run accepted it;
- lists the runs that execute in this process (`local`, `local_runs`, `active_on`), for re-joins,
  live records and shutdown;
- forgets a run once it ended (`release`), so nothing leaks (S6): `size()` is back to 0 when idle.

A backend that cannot deliver a stop (its server is unreachable) raises
`CoordinationUnavailableError`; it never drops the stop silently.

`LocalRunRegistry` serves one process. A Redis backend serves many processes and machines behind
the same methods. `tests/coordination/conformance.py` is the suite every backend must pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import _portal
from ..handle import RunHandle, RunStream
from ..run import MultitaskStrategy
from ..stop import StopRequest
from ..storage.base import Checkpointer

__all__ = ["RunRegistry", "StopResult"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StopResult:
    """What `RunRegistry.request_stop` did. Truthy exactly when a run accepted the stop."""

    accepted: bool  # a live (pending or running) run accepted the stop
    run_id: str | None = None  # the run that accepted it; never another run's id
    handle: RunHandle | None = None  # its local handle, when it executes in this process

    def __bool__(self) -> bool:
        return self.accepted


class RunRegistry(ABC):
    """Coordinates runs across threads of conversation (and, for some backends, processes)."""

    # Whether the cross-process hooks below reach runs of other processes (False: every run is
    # local, so a run that is not in this process does not exist anywhere).
    cross_process: bool = False

    @abstractmethod
    async def register(self, handle: RunHandle) -> None:
        """Make the pending run visible to stop requests (by run id and thread id)."""

    @abstractmethod
    async def acquire(self, handle: RunHandle, strategy: MultitaskStrategy) -> None:
        """Wait until `handle` holds its thread, applying `strategy` to the run already there.

        Raises `ThreadBusyError` for `reject`. If cancelled while waiting, the run leaves the queue
        and holds nothing.
        """

    @abstractmethod
    async def release(self, handle: RunHandle) -> None:
        """Give up the thread (if held) and forget the run. Idempotent; never raises.

        Cancellation: callers run it shielded; it completes or does nothing.
        """

    @abstractmethod
    async def request_stop(
        self, request: StopRequest, *, run_id: str | None = None, thread_id: str | None = None
    ) -> StopResult:
        """Deliver a stop to the active run with that id, or to the active run of the thread.

        With both ids, the run must be on that thread. Returns a `StopResult` whose `run_id` is
        the run that accepted the stop and whose `handle` is set when that run executes in this
        process (so the caller may wait for it); `StopResult(accepted=False)` when no active run
        matched (unknown or finished runs are not errors).

        Raises:
            CoordinationUnavailableError: the backend cannot deliver the stop right now.

        Cancellation: the stop may or may not have been delivered.
        """

    @abstractmethod
    def local(self, run_id: str) -> RunHandle | None:
        """The handle of an active run executing in this process, or None."""

    @abstractmethod
    def local_runs(self) -> list[RunHandle]:
        """Every active run (pending or running) executing in this process (e.g. for shutdown)."""

    @abstractmethod
    def active_on(self, thread_id: str) -> RunHandle | None:
        """The local run holding the thread, or None."""

    @abstractmethod
    def size(self) -> int:
        """How many runs and thread slots the registry tracks (0 when idle: the leak check)."""

    async def aclose(self) -> None:  # noqa: B027  # a no-op default, not an abstract method
        """Release the backend's clients and background tasks. The local registry has none.

        Cancellation: what was closed stays closed.
        """

    # Cross-process hooks; the in-process defaults do nothing (every run is local).

    def attach(self, checkpointer: Checkpointer) -> None:  # noqa: B027  # optional hook
        """Called by the engine with its checkpointer (a backend may record lost runs there)."""

    async def join(self, run_id: str, after_seq: int) -> RunStream | None:
        """A live stream of a run that executes in another process, or None."""
        return None

    async def wait_released(self, run_id: str) -> None:  # noqa: B027  # optional hook
        """Wait until a run of another process released its thread (returns at once here)."""

    async def send_input(self, run_id: str, name: str, value: Any) -> bool:
        """Deliver a flow input (`Flow.asend`) to a run of another process; False here.

        Cancellation: the value may or may not have been sent.
        """
        return False

    async def close_stream(self, run_id: str) -> bool:
        """End the runtime stream of a flow run of another process (`Flow.astop_stream`); False
        here.

        Cancellation: the stream may or may not have been ended.
        """
        return False

    def call_sync(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` for a sync face (`Flow.send`, `Flow.stop_stream`) that must
        reach this registry's backend: here, on tether's background loop (`_portal`). A backend
        bound to one event loop runs it on that loop instead.
        """
        return _portal.call(fn, *args)
