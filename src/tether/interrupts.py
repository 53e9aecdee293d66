"""Human-in-the-loop: `interrupt(value)` pauses a run until a person answers it.

Called inside a node or a tool, `interrupt(value)` ends the run `interrupted` (a deliberate pause,
never a stop). The payload is in the run record (`RunRecord.interrupt`), in the terminal event
(`RunFinished.interrupt`) and in the head checkpoint's metadata (`"interrupt"`), which the HTTP API
shows with the run and the thread state. `Command(resume=answer)` as the next run's input continues
it: the interrupted node runs again from its start, and this time `interrupt()` returns `answer`.

A node may call `interrupt()` several times; each resume answers the next one, in order, and the
answers given so far are replayed (kept in the checkpoint), so the node's earlier `interrupt()`
calls return at once. Code before an `interrupt()` runs again on resume: keep side effects after
it, or make them idempotent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .errors import TetherError, UserError
from .ids import new_id

__all__ = ["GraphInterrupt", "Interrupt", "interrupt"]


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A pending question to a person: its JSON `value`, where it was asked, and its id.

    `resumes` holds the answers the node already received (replayed on the next resume);
    `run_id` is the run that paused.
    """

    value: Any
    node: str | None = None
    id: str = field(default_factory=new_id)
    resumes: tuple[Any, ...] = ()
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form kept in the checkpoint and the run record."""
        return {
            "id": self.id,
            "node": self.node,
            "value": self.value,
            "resumes": list(self.resumes),
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interrupt:
        return cls(
            value=data.get("value"),
            node=data.get("node"),
            id=str(data.get("id") or new_id()),
            resumes=tuple(data.get("resumes") or ()),
            run_id=data.get("run_id"),
        )


class GraphInterrupt(TetherError):
    """Raised by `interrupt()` to pause the run. The graph catches it: never catch it yourself.

    (Code with a broad `except Exception` around an `interrupt()` call must re-raise it.)
    """

    def __init__(self, interrupt: Interrupt) -> None:
        super().__init__(f"the run paused for a person's answer to {interrupt.value!r}")
        self.interrupt = interrupt


@dataclass
class _NodeCall:
    """The interrupt bookkeeping of one node call: the answers it may use, and how many it used."""

    node: str | None
    resumes: list[Any]
    used: int = 0


_CURRENT: ContextVar[_NodeCall | None] = ContextVar("tether_interrupt_scope", default=None)


@contextmanager
def node_call(node: str | None, resumes: tuple[Any, ...] = ()) -> Iterator[None]:
    """Make `interrupt()` work in the code this block runs (and the worker threads it starts)."""
    token = _CURRENT.set(_NodeCall(node, list(resumes)))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def interrupt(value: Any) -> Any:
    """Pause the run and ask a person: returns their answer once the run is resumed.

    The first time, this raises `GraphInterrupt`: the run ends `interrupted` with `value` (which
    must be JSON) as its payload. A run started with `Command(resume=answer)` runs the node again,
    and the same call then returns `answer`.

    Args:
        value: What to show the person (JSON: a question, the arguments of a tool call, ...).

    Raises:
        UserError: called outside a node or tool of a running graph or agent.
    """
    call = _CURRENT.get()
    if call is None:
        raise UserError(
            f"interrupt({value!r}) was called outside a running node or tool; call it from the "
            "code of a graph node or an agent's tool"
        )
    if call.used < len(call.resumes):
        answer = call.resumes[call.used]
        call.used += 1
        return answer
    raise GraphInterrupt(Interrupt(value, node=call.node, resumes=tuple(call.resumes)))
