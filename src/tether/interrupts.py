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

Inside a child run. A child (a subgraph node, an agent used as a tool; `tether.children`) that
pauses pauses its parent too: the parent's node re-raises the child's question as its own pause,
whose `path` names the child (`("<segment>", *the child's own path)`) and whose `value` is the
child's. The parent's replayed answers then hold a *child marker*, `{"__tether_child__": path,
"thread_id": <the child's thread>}`, and on resume the answer right after it is the child's:
`run_child` finds the marker of its path (`child_resume`), resumes the paused child on its
thread with `Command(resume=answer)`, or, when that child already ended in an earlier resume of
the node, takes its final state without running it again. Markers and the answer after each are
invisible to the node's own `interrupt()` calls, which keep their own order.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from .errors import TetherError, UserError
from .ids import new_id

__all__ = ["GraphInterrupt", "Interrupt", "child_pause", "child_resume", "interrupt"]

CHILD_MARKER = "__tether_child__"
"""The key of a child marker among a pause's replayed answers (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A pending question to a person: its JSON `value`, where it was asked, and its id.

    `resumes` holds the answers the node already received (replayed on the next resume);
    `run_id` is the run that paused; `path` names the child run that asked, when a child did
    (empty: the node itself asked).
    """

    value: Any
    node: str | None = None
    id: str = field(default_factory=new_id)
    resumes: tuple[Any, ...] = ()
    run_id: str | None = None
    path: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON form kept in the checkpoint and the run record."""
        return {
            "id": self.id,
            "node": self.node,
            "value": self.value,
            "resumes": list(self.resumes),
            "run_id": self.run_id,
            "path": list(self.path),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interrupt:
        return cls(
            value=data.get("value"),
            node=data.get("node"),
            id=str(data.get("id") or new_id()),
            resumes=tuple(data.get("resumes") or ()),
            run_id=data.get("run_id"),
            path=tuple(data.get("path") or ()),
        )


class GraphInterrupt(TetherError):
    """Raised by `interrupt()` to pause the run. The graph catches it: never catch it yourself.

    (Code with a broad `except Exception` around an `interrupt()` call must re-raise it.)
    """

    def __init__(self, interrupt: Interrupt) -> None:
        super().__init__(f"the run paused for a person's answer to {interrupt.value!r}")
        self.interrupt = interrupt


@dataclass(slots=True)
class _NodeCall:
    """The interrupt bookkeeping of one node call: the answers it may use, and how many it used."""

    node: str
    resumes: tuple[Any, ...]  # every replayed answer, child markers and their answers included
    own: tuple[Any, ...] = field(init=False)  # the answers of the node's own `interrupt()` calls
    used: int = 0  # how many of `own` the node's `interrupt()` calls returned so far

    def __post_init__(self) -> None:
        self.own = tuple(r for i, r in enumerate(self.resumes) if not self._child_entry(i))

    def _child_entry(self, index: int) -> bool:
        """Whether `resumes[index]` is a child marker or the answer right after one."""
        return _is_marker(self.resumes[index]) or (
            index > 0 and _is_marker(self.resumes[index - 1])
        )


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and CHILD_MARKER in value


_CURRENT: ContextVar[_NodeCall | None] = ContextVar("tether_interrupt_scope", default=None)

NodeCallToken = Token[_NodeCall | None]


def enter_node(node: str, resumes: tuple[Any, ...] = ()) -> NodeCallToken:
    """Make `interrupt()` work in the code that runs from here until `leave_node(token)` (and in
    the worker threads it starts). A pair of calls rather than a context manager: this runs for
    every node call, and an idle run keeps its frames (BENCHMARKS.md row 5)."""
    return _CURRENT.set(_NodeCall(node, resumes))


def leave_node(token: NodeCallToken) -> None:
    """End what `enter_node` returned `token` for; call it in a `finally`."""
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
    if call.used < len(call.own):
        answer = call.own[call.used]
        call.used += 1
        return answer
    raise GraphInterrupt(Interrupt(value, node=call.node, resumes=call.resumes))


def child_resume(path: str) -> tuple[str, Any] | None:
    """For the child run at `path` of the running node: `(its thread id, the answer to its
    question)` when the node resumes a pause of that child, else None."""
    call = _CURRENT.get()
    if call is None:
        return None
    for i, entry in enumerate(call.resumes[:-1]):
        if _is_marker(entry) and entry[CHILD_MARKER] == path:
            return str(entry["thread_id"]), call.resumes[i + 1]
    return None


def child_pause(path: str, thread_id: str, question: dict[str, Any] | None) -> GraphInterrupt:
    """The pause of the running node because its child at `path`, on `thread_id`, paused with
    `question` (the child's interrupt payload); raise it. See the module docstring."""
    call = _CURRENT.get()
    child = Interrupt.from_json(question or {})
    marker = {CHILD_MARKER: path, "thread_id": thread_id}
    kept: list[Any] = []
    if call is not None:  # replayed answers, without this child's earlier marker and answer
        skip = -1
        for i, entry in enumerate(call.resumes):
            if i == skip:
                continue
            if _is_marker(entry) and entry[CHILD_MARKER] == path:
                skip = i + 1
                continue
            kept.append(entry)
    return GraphInterrupt(
        Interrupt(
            child.value,
            node=call.node if call is not None else None,
            resumes=(*kept, marker),
            path=(path, *child.path),
        )
    )
