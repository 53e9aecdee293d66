"""`RunContext`: what a node, tool or flow handler may know and do about its run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._loop import RunLoop
from .events import CustomEvent

if TYPE_CHECKING:
    from .handle import RunHandle

__all__ = ["RunContext"]


@dataclass(frozen=True, slots=True)
class RunContext:
    """The typed run context passed to a node as its second argument (`ctx`).

    Attributes:
        run_id: The run's id.
        thread_id: The conversation's id.
        node: The node (or flow handler) this context was made for, if any.
        step: The superstep number, when known.
        config: The run's config mapping (`thread_id`, `run_id`, `recursion_limit`, and whatever
            else the caller passed); a node whose second parameter is named `config` gets this.
        resume: Whether the run continues a stopped answer (`agent.resume(...)`, a `Resume()`
            input) rather than answering a new message.
    """

    run_id: str
    thread_id: str
    node: str | None = None
    step: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    _handle: RunHandle | None = field(default=None, repr=False, compare=False)
    _loop: RunLoop | None = field(default=None, repr=False, compare=False)
    _sink: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was requested. Sync code in a worker thread may poll this to end early."""
        return self._handle is not None and self._handle.token.requested

    def send(self, item: Any) -> None:
        """Stream an item from a node exactly as if the node had yielded it. Safe from threads.

        For nodes that are not generators: a `Message` sent here is streamed at once and kept in
        the step's output even if the node is then stopped (the agent's tools node sends each tool
        result this way). Dropped once a `now` stop was requested.
        """
        sink = self._sink
        if sink is None or self._stopping():
            return
        self._on_loop(sink, item)

    def _keep(self, item: Any) -> None:
        """`send`, even while a `now` stop is being applied: a node that is being cancelled keeps
        what its child run produced (`tether.children`). Must be called on the run's loop."""
        if self._sink is not None:
            self._sink(item)

    def _stopping(self) -> bool:
        token = self._handle.token if self._handle is not None else None
        return token is not None and token.mode in ("now", "rollback")

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._loop is None:
            fn(*args)
        else:
            self._loop.run_from_worker(fn, *args)

    def emit(self, data: Any) -> None:
        """Send `data` to the run's stream as a `custom` event. Safe from worker threads.

        Dropped once a `now` stop was requested, and after the run's terminal event.
        """
        self.emit_event(CustomEvent, data=data)

    def emit_event(self, cls: type[Any], /, **fields: Any) -> None:
        """Emit an event of type `cls` from this node (engines use this for tool-call events)."""
        handle = self._handle
        if handle is None or self._stopping():
            return
        fields.setdefault("node", self.node)
        self._on_loop(lambda: handle.emit(cls, **fields))
