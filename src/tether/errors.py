"""The exceptions tether raises.

Every exception derives from `TetherError`:

    TetherError
    ├── UserError                 misuse: a bad argument, input or config (also a ValueError)
    │   ├── NotFoundError         no such thread, run or checkpoint (also a LookupError)
    │   └── ThreadBusyError       the thread runs something and the policy is "reject"
    ├── ModelError                a model provider failed (HTTP error, unreachable, broken stream)
    ├── StorageError              the storage backend failed or holds bad data
    │   ├── CheckpointConflictError   another writer moved the thread's head first
    │   └── CorruptRecordError    a stored row does not decode; the message names the row
    ├── CoordinationUnavailableError  the run registry cannot deliver a stop (e.g. Redis is down)
    └── RunError                  a run ended without completing
        ├── RunFailedError        user code raised; `__cause__` holds the original error
        ├── GraphRecursionError   the run took more steps than `recursion_limit`
        └── RunCancelledError     `invoke()` was asked for the result of a stopped run

Stopping a run is never an error: a stopped stream ends normally with a `run_finished` event whose
status is `cancelled`. `RunCancelledError` only exists for `invoke()`, which has no event to return.
"""

from __future__ import annotations

__all__ = [
    "CheckpointConflictError",
    "CoordinationUnavailableError",
    "CorruptRecordError",
    "GraphRecursionError",
    "ModelError",
    "NotFoundError",
    "RunCancelledError",
    "RunError",
    "RunFailedError",
    "StorageError",
    "TetherError",
    "ThreadBusyError",
    "UserError",
]


class TetherError(Exception):
    """The root of every error tether raises."""


class UserError(TetherError, ValueError):
    """The caller misused the API: the message names the value and says what to do instead."""


class NotFoundError(UserError, LookupError):
    """No thread, run or checkpoint has that id (or it belongs to someone else)."""


class ThreadBusyError(UserError):
    """A run is already active on the thread and the multitask strategy is `"reject"`."""

    def __init__(self, thread_id: str, active_run_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} is busy with run {active_run_id!r}; stop it first, or pass "
            "multitask_strategy='interrupt', 'rollback' or 'enqueue'"
        )
        self.thread_id = thread_id
        self.active_run_id = active_run_id


class ModelError(TetherError):
    """A model provider failed: the server answered with an error, or could not be reached.

    Attributes:
        status_code: The HTTP status of the failed request, when there was one.
        body: The start of the error response's body, when there was one.
    """

    def __init__(self, message: str, *, status_code: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class StorageError(TetherError):
    """The storage backend failed or returned data tether cannot use."""


class CheckpointConflictError(StorageError):
    """Another writer committed a checkpoint on the thread first; this commit was not applied."""


class CorruptRecordError(StorageError):
    """A stored row could not be decoded. The message names the table and the row."""


class CoordinationUnavailableError(TetherError):
    """The run registry cannot reach its backend, so a stop or an admission cannot be delivered.

    A stop that cannot be delivered is refused with this error, never dropped. Retry once the
    backend (e.g. Redis) is reachable again.
    """


class RunError(TetherError):
    """A run ended without completing."""

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunFailedError(RunError):
    """User code raised inside the run. The original exception is the `__cause__`."""


class GraphRecursionError(RunError):
    """The run took more supersteps than its `recursion_limit` allows."""


class RunCancelledError(RunError):
    """`invoke()` returned no result because the run was stopped."""
