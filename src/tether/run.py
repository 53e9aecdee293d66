"""Run records: what storage keeps about each run, including how it was stopped (S7)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from .errors import UserError
from .events import RunStatus

__all__ = ["MultitaskStrategy", "OnDisconnect", "RunOptions", "RunRecord", "check_strategy"]

MultitaskStrategy = Literal["reject", "interrupt", "rollback", "enqueue"]


def check_strategy(strategy: str) -> MultitaskStrategy:
    """Return `strategy` if it is a multitask strategy, else raise a `UserError` listing them."""
    if strategy not in get_args(MultitaskStrategy):
        raise UserError(
            f"multitask_strategy {strategy!r} is not one of 'reject', 'interrupt', "
            "'rollback', 'enqueue'"
        )
    return strategy  # type: ignore[return-value]  # narrowed by the membership test above


OnDisconnect = Literal["cancel", "continue"]


class RunRecord(BaseModel):
    """The durable record of one run.

    `stop_requested_at` is when the first stop request arrived; `stopped_at` is when it took effect
    (the run ended). Both stay `None` for a run that was never stopped.
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    thread_id: str
    status: RunStatus = "pending"
    app: str | None = None
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    stop_requested_at: float | None = None
    stopped_at: float | None = None
    stop_mode: str | None = None
    stop_reason: str | None = None
    stop_requested_by: str | None = None
    error: str | None = None
    multitask_strategy: MultitaskStrategy = "reject"
    worker: str | None = None  # "host:pid:boot" of the process executing it, for crash recovery
    heartbeat_at: float | None = None  # last time that worker proved it was alive
    metadata: dict[str, Any] = Field(default_factory=dict)
    # An `interrupt()` pause: {"id", "node", "value", "resumes"}; None for any other end.
    interrupt: dict[str, Any] | None = None

    @property
    def is_active(self) -> bool:
        """Whether the run has not ended yet."""
        return self.status in ("pending", "running")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The options of one run, resolved once from keyword arguments and `config` by the `App`.

    It travels whole from the `App` to the `Engine` (`Engine.start`) and the program's
    `Execution` (`ex.options`).
    """

    thread_id: str | None  # None: the engine makes a new thread
    config: dict[str, Any]  # the user's config mapping, copied
    multitask_strategy: MultitaskStrategy
    on_disconnect: OnDisconnect
    checkpoint_id: str | None  # start from this checkpoint of the thread instead of its head
    metadata: dict[str, Any]  # stored on the run record
    thread_metadata: dict[str, Any]  # stored on a thread this run creates
