"""Special run inputs that are commands rather than new state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Command", "Resume"]


@dataclass(frozen=True, slots=True)
class Resume:
    """Continue the thread's stopped assistant answer from where it ended (the UI's Continue).

    An agent extends the last `stopped` assistant message: the model is asked to carry on, and its
    new text is appended to the same message, which becomes `complete` (or `stopped` again).
    """


@dataclass(frozen=True, slots=True)
class Command:
    """Continue a run paused by `interrupt()` (status `interrupted`): `Command(resume=answer)`.

    The paused node runs again, and its `interrupt()` call returns `answer` (JSON). For a tool
    that `requires_approval`, the answer is an approval decision (see `tether.agent.approval`).
    """

    resume: Any = None
