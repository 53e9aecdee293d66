"""Every flow test ends by checking S1 on every run it stored."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from ._support import TRACKED, check_stored_runs


@pytest.fixture(autouse=True)
def every_run_ends_with_one_terminal_event() -> Iterator[None]:
    TRACKED.clear()
    yield
    for checkpointer in TRACKED:
        anyio.run(check_stored_runs, checkpointer)
    TRACKED.clear()
