"""Where runs execute: one host task group per event loop.

A run must outlive the call that started it: a background run, a run whose client disconnected
with `on_disconnect="continue"`, or a stream the caller reads lazily. anyio only spawns tasks into a
task group, so each event loop gets one *host*: a task group opened by a single supervisor task, like
trio's system nursery. Runs are started with `host.tg.start_soon`, so they are structured children
of the host, and the host is the one place tether creates a bare asyncio task.

When the loop shuts down (`asyncio.run` returns, the server stops), asyncio cancels the supervisor;
its task group cancels every run, which records `cancelled` with `requested_by="shutdown"` in a
shielded scope before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import weakref

import anyio
from anyio.abc import TaskGroup

__all__ = ["Host", "current_host"]

_hosts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Host] = weakref.WeakKeyDictionary()


class Host:
    """The task group that runs execute in, on one loop."""

    def __init__(self) -> None:
        self._ready = anyio.Event()
        self._tg: TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None  # asyncio keeps tasks by weak reference only

    async def _main(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._ready.set()
            await anyio.sleep_forever()

    @property
    def tg(self) -> TaskGroup:
        """The host task group (available once `current_host()` returned)."""
        assert self._tg is not None, "await current_host() first"
        return self._tg


async def current_host() -> Host:
    """The host of the running loop, started on first use."""
    loop = asyncio.get_running_loop()
    host = _hosts.get(loop)
    if host is None or (host._task is not None and host._task.done()):
        # None yet, or its supervisor ended (a bug let an error out of a run): start a fresh one
        # rather than refuse every later run on this loop.
        host = Host()
        _hosts[loop] = host
        # The one bare task: the supervisor of every run on this loop (see the module docstring).
        host._task = loop.create_task(host._main(), name="tether-host")
    await host._ready.wait()
    return host
