"""Run records: what storage keeps about each run, including how it was stopped (S7)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, get_args

from pydantic import BaseModel, ConfigDict, Field

from .errors import UserError
from .events import RunStatus

__all__ = [
    "MultitaskStrategy",
    "OnDisconnect",
    "RunOptions",
    "RunRecord",
    "StartOptions",
    "StreamOptions",
    "check_strategy",
]

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

    @classmethod
    def live(cls, **fields: Any) -> RunRecord:
        """A new record for the engine to keep up to date while its run executes.

        Validated like `RunRecord(**fields)`, and like a record read back from storage it counts
        every field as set (`model_fields_set`). That set is one set shared by all live records:
        pydantic only ever adds a field's name to it on assignment, and every name is in it
        already, so it never changes. A record's own field set would grow past pydantic's small
        set size as the run sets its fields (0.7 KB per live run, BENCHMARKS.md row 5).
        """
        record = cls(**fields)
        object.__setattr__(record, "__pydantic_fields_set__", _EVERY_FIELD)
        return record


# Every `RunRecord` field name: the shared field set of live records (`RunRecord.live`). Never
# mutated: pydantic only adds names to a field set, and they are all here.
_EVERY_FIELD = set(RunRecord.model_fields)


class StartOptions(TypedDict, total=False):
    """The keyword options of every call that starts a run, listed once.

    `App.astart` / `start` and `ainvoke` / `invoke` take them as `**options`, and so do
    `Agent.arun` / `run` and `ainvoke_output` / `invoke_output`, `Flow.aget_runtime_stream` /
    `get_runtime_stream` and `tether.worker.enqueue_run`; the streaming faces take
    `StreamOptions`. A keyword added here reaches every one of them (and must be resolved into
    `RunOptions` by `RunOptions.resolve`); `tests/core/test_api_faces.py` fails if a face lists a
    keyword of its own instead. Unknown keywords raise `TypeError` at run time too.

    Keys (every one optional):
        thread_id: The thread to run on; by default `config["thread_id"]`, else a new thread.
        multitask_strategy: What a run does when its thread is busy: `"reject"` (the default;
            raises `ThreadBusyError`), `"interrupt"`, `"rollback"` or `"enqueue"`.
        checkpoint_id: Start from this checkpoint of the thread (a fork) instead of its head.
        metadata: Stored on the run record.
        thread_metadata: Stored on the thread, if this run creates it.
    """

    thread_id: str | None
    multitask_strategy: str
    checkpoint_id: str | None
    metadata: Mapping[str, Any] | None
    thread_metadata: Mapping[str, Any] | None


class StreamOptions(StartOptions, total=False):
    """`StartOptions` and what a consumer that stops reading early does to the run.

    Keys (every one optional):
        on_disconnect: `"cancel"` (the default) stops the run with `requested_by="disconnect"`
            when the consumer closes or drops the stream, or is cancelled; `"continue"` lets it
            run on, to be re-joined with `join`.
    """

    on_disconnect: str


_START_KEYS = StartOptions.__required_keys__ | StartOptions.__optional_keys__
_STREAM_KEYS = StreamOptions.__required_keys__ | StreamOptions.__optional_keys__


def thread_id_of(config: Mapping[str, Any] | None) -> str | None:
    """The thread id in a config mapping (`thread_id`, or `configurable.thread_id`), if any."""
    if not config:
        return None
    nested = config.get("configurable")
    value = config.get("thread_id") or (
        nested.get("thread_id") if isinstance(nested, Mapping) else None
    )
    if value is not None and not isinstance(value, str):
        raise UserError(f"thread_id must be a string, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The options of one run, resolved once from a public call's arguments (`resolve`).

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

    @classmethod
    def resolve(
        cls,
        face: str,
        config: object,
        options: Mapping[str, object],
        *,
        on_disconnect: OnDisconnect | None,
    ) -> RunOptions:
        """Check the arguments of the public call `face` and resolve them into one run's options.

        Args:
            face: The call's name, for error messages (`"astart"`).
            config: Its `config` argument: a mapping, or None.
            options: Its keyword options: `StartOptions`, or `StreamOptions` when the call takes
                `on_disconnect` itself.
            on_disconnect: The fixed disconnect policy of a call that takes no `on_disconnect`
                keyword; None for one that does (it defaults to `"cancel"`).

        Raises:
            TypeError: an unknown keyword, or a value of the wrong type.
            UserError: a bad value: `config` is not a mapping, an empty thread id, an unknown
                strategy or disconnect policy.
        """
        allowed = _START_KEYS if on_disconnect is not None else _STREAM_KEYS
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise TypeError(
                f"{face}() got an unexpected keyword argument {unknown[0]!r}; "
                f"its options are {', '.join(sorted(allowed))}"
            )
        if config is not None and not isinstance(config, Mapping):
            raise UserError(
                f"config must be a mapping such as {{'thread_id': ...}}, not {config!r}"
            )
        metadata = _mapping_or_none(options, "metadata")
        thread_metadata = _mapping_or_none(options, "thread_metadata")
        checkpoint_id = options.get("checkpoint_id")
        if checkpoint_id is not None and not isinstance(checkpoint_id, str):
            raise TypeError(f"checkpoint_id must be a string, not {checkpoint_id!r}")
        strategy = options.get("multitask_strategy", "reject")
        if not isinstance(strategy, str):
            raise TypeError(f"multitask_strategy must be a string, not {strategy!r}")
        policy = options.get("on_disconnect", "cancel") if on_disconnect is None else on_disconnect
        if policy not in get_args(OnDisconnect):
            raise UserError(f"on_disconnect {policy!r} is not 'cancel' or 'continue'")
        cfg = dict(config or {})
        tid = options.get("thread_id")
        if tid is None:
            tid = thread_id_of(cfg)
        if not isinstance(tid, str | None) or tid == "" or (tid is not None and len(tid) > 200):
            raise UserError(
                f"thread_id must be a non-empty string of at most 200 characters, not {tid!r}"
            )
        return cls(
            thread_id=tid,
            config=cfg,
            multitask_strategy=check_strategy(strategy),
            on_disconnect=policy,  # type: ignore[arg-type]  # one of OnDisconnect, checked above
            checkpoint_id=checkpoint_id or cfg.get("checkpoint_id"),
            metadata=dict(metadata or {}),
            thread_metadata=dict(thread_metadata or {}),
        )


def _mapping_or_none(options: Mapping[str, object], name: str) -> Mapping[str, Any] | None:
    value = options.get(name)
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, not {value!r}")
    return value
