"""Runs the storage conformance suite (`conformance.py`) on every backend.

The `checkpointer` fixture is parametrized over memory, SQLite and Postgres in `conftest.py`.
"""

from __future__ import annotations

import pytest
from tests.storage.conformance import *  # noqa: F403  # the suite's test functions

pytestmark = pytest.mark.anyio
