"""Special run inputs that are commands rather than new state."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Resume"]


@dataclass(frozen=True, slots=True)
class Resume:
    """Continue the thread's stopped assistant answer from where it ended (the UI's Continue).

    An agent extends the last `stopped` assistant message: the model is asked to carry on, and its
    new text is appended to the same message, which becomes `complete` (or `stopped` again).
    """
