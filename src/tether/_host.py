"""Where runs execute: one host per event loop.

A run must outlive the call that started it: a background run, a run whose client disconnected
with `on_disconnect="continue"`, or a stream the caller reads lazily. So each event loop gets one
*host*, like trio's system nursery, and it is the one place tether creates bare asyncio tasks:

- each run is one asyncio task (`Host.spawn_run`), kept in the host's set of runs until it ends.
  A run is not an anyio task-group child because anyio builds a task handle, an event and a
  cancel scope for every child: about 2.3 KB per run (BENCHMARKS.md row 5, an idle run's memory).
  anyio cancel scopes work in any asyncio task, so the run's own scope (its stop) is unchanged;
- the host's other background tasks (the repair of failed final commits, the Redis registry's
  listener) run in `Host.tg`, a task group opened by the host's supervisor task.

Guarantees:
- When the loop shuts down (`asyncio.run` or `anyio.run` returns, the server stops), asyncio
  cancels every task: each run then records `cancelled` with `requested_by="shutdown"` in a
  shielded scope before the cancellation propagates. The supervisor, cancelled too (or ended by a
  bug in a background task), cancels every run that is not cancelled yet and waits for all of
  them to end, as a task group waits for its children.
- An exception that escapes a run (a bug: the engine lets only the host's cancellation out) is
  reported to the loop's exception handler (logged by default) with the run's task; it is never
  lost and never touches another run.
- A host leaves `_hosts` when its supervisor ends, so a closed loop and its host can be freed.

Residual race: a run started after the supervisor has ended (by code that still runs while the
loop shuts down) gets a fresh host, which nothing cancels: asyncio closes the loop with its
task pending and warns about it, as it does for any task started that late.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

__all__ = ["Host", "current_host"]

_hosts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Host] = weakref.WeakKeyDictionary()


class Host:
    """The runs on one loop, and the task group of its other background tasks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready = anyio.Event()
        self._tg: TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None  # asyncio keeps tasks by weak reference only
        # Every run task that has not ended: the host's strong references to them.
        self._runs: set[asyncio.Task[None]] = set()
        self._run_done = self._on_run_done  # one bound method for every run's done callback

    async def _main(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._ready.set()
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self._end_runs()

    async def _end_runs(self) -> None:
        """Cancel every run not cancelled yet and wait until all have ended (loop shutdown)."""
        while self._runs:
            for task in list(self._runs):
                # asyncio's shutdown cancelled most runs already; a second cancel would break
                # the shielded commit of their end.
                if not task.cancelling():
                    task.cancel()
            await asyncio.wait(list(self._runs))

    @property
    def tg(self) -> TaskGroup:
        """The host task group (available once `current_host()` returned)."""
        assert self._tg is not None, "await current_host() first"
        return self._tg

    def spawn_run(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `coro` (the body of one run) in a task of its own on the host's loop."""
        task = self._loop.create_task(coro, name=name)
        self._runs.add(task)
        task.add_done_callback(self._run_done)
        return task

    def _on_end(self, task: asyncio.Task[None]) -> None:
        # The host refers to its loop: left in `_hosts`, it would keep the loop alive forever.
        if _hosts.get(self._loop) is self:
            del _hosts[self._loop]

    def _on_run_done(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        if task.cancelled():
            return  # the loop shut down; the run recorded that before it ended
        error = task.exception()
        if error is not None:
            self._loop.call_exception_handler(
                {"message": "an error escaped a tether run", "exception": error, "task": task}
            )


async def current_host() -> Host:
    """The host of the running loop, started on first use."""
    loop = asyncio.get_running_loop()
    host = _hosts.get(loop)
    if host is None or (host._task is not None and host._task.done()):
        # None yet, or its supervisor ended (a bug let an error out of a background task): start
        # a fresh one rather than refuse every later run on this loop.
        host = Host(loop)
        _hosts[loop] = host
        # The supervisor of the host's background tasks (see the module docstring).
        host._task = loop.create_task(host._main(), name="tether-host")
        host._task.add_done_callback(host._on_end)
    await host._ready.wait()
    return host
