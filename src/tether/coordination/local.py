"""`LocalRunRegistry`: coordination inside one process.

Thread slots live in a dict guarded by a `threading.Lock` (stops come from any thread). A slot holds
the run that owns the thread and a FIFO of runs waiting for it. Waiting is done on the owner's
completion, which the engine signals after it released the slot, so a woken waiter always finds
the slot free or owned by a run that jumped the queue legitimately (`interrupt`/`rollback` go first).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..errors import ThreadBusyError
from ..handle import RunHandle
from ..run import MultitaskStrategy
from ..stop import StopRequest
from .base import RunRegistry, StopResult

__all__ = ["LocalRunRegistry"]


@dataclass(slots=True)
class _Slot:
    owner: RunHandle | None = None  # the run that holds the thread; None when free
    # Admitted runs, in turn order: a list, not a deque, since it is short and usually empty,
    # and an empty deque costs ~0.7 KiB for every idle run (BENCHMARKS.md row 5).
    waiting: list[RunHandle] = field(default_factory=list)


class LocalRunRegistry(RunRegistry):
    """Coordinates the runs of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, RunHandle] = {}  # every registered, not yet released run
        self._slots: dict[str, _Slot] = {}  # thread_id -> slot; removed when free and unqueued

    async def register(self, handle: RunHandle) -> None:
        with self._lock:
            self._runs[handle.run_id] = handle

    async def acquire(self, handle: RunHandle, strategy: MultitaskStrategy) -> None:
        queued = False
        try:
            while True:
                with self._lock:
                    slot = self._slots.setdefault(handle.thread_id, _Slot())
                    owner = slot.owner
                    first = not slot.waiting or slot.waiting[0] is handle
                    if owner is None and first:
                        slot.owner = handle
                        if queued:
                            slot.waiting.pop(0)
                        return
                    if owner is not None and strategy == "reject" and not owner.token.requested:
                        raise ThreadBusyError(handle.thread_id, owner.run_id)
                    if not queued:
                        queued = True
                        if strategy in ("interrupt", "rollback"):
                            slot.waiting.insert(0, handle)
                        else:
                            slot.waiting.append(handle)
                    blocker = owner if owner is not None else slot.waiting[0]
                if owner is not None and strategy in ("interrupt", "rollback"):
                    owner.request_stop(
                        mode="now" if strategy == "interrupt" else "rollback",
                        reason=f"superseded by run {handle.run_id}",
                        requested_by="superseded",
                    )
                await blocker.wait()
        except BaseException:
            if queued:
                with self._lock:
                    queue = self._slots.get(handle.thread_id)
                    if queue is not None and handle in queue.waiting:
                        queue.waiting.remove(handle)
                    self._drop_if_idle(handle.thread_id)
            raise

    async def release(self, handle: RunHandle) -> None:
        with self._lock:
            self._runs.pop(handle.run_id, None)
            slot = self._slots.get(handle.thread_id)
            if slot is not None:
                if slot.owner is handle:
                    slot.owner = None
                if handle in slot.waiting:
                    slot.waiting.remove(handle)
                self._drop_if_idle(handle.thread_id)

    def _drop_if_idle(self, thread_id: str) -> None:
        slot = self._slots.get(thread_id)
        if slot is not None and slot.owner is None and not slot.waiting:
            del self._slots[thread_id]

    async def request_stop(
        self, request: StopRequest, *, run_id: str | None = None, thread_id: str | None = None
    ) -> StopResult:
        with self._lock:
            if run_id is not None:
                handle = self._runs.get(run_id)
                if handle is not None and thread_id is not None and handle.thread_id != thread_id:
                    handle = None
            elif thread_id is not None:
                slot = self._slots.get(thread_id)
                handle = slot.owner if slot is not None else None
                if handle is None and slot is not None and slot.waiting:
                    handle = slot.waiting[0]
                if handle is None:  # registered, not yet admitted (stop before start)
                    handle = next(
                        (h for h in self._runs.values() if h.thread_id == thread_id), None
                    )
            else:
                handle = None
        if handle is None or not handle.token.request_stop(request):
            return StopResult(accepted=False)
        return StopResult(accepted=True, run_id=handle.run_id, handle=handle)

    def local(self, run_id: str) -> RunHandle | None:
        with self._lock:
            return self._runs.get(run_id)

    def local_runs(self) -> list[RunHandle]:
        with self._lock:
            return list(self._runs.values())

    def active_on(self, thread_id: str) -> RunHandle | None:
        with self._lock:
            slot = self._slots.get(thread_id)
            return slot.owner if slot is not None else None

    def size(self) -> int:
        with self._lock:
            return len(self._runs) + len(self._slots)
