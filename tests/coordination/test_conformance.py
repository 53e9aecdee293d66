"""Runs the coordination conformance suite (`conformance.py`) on every registry backend."""

from __future__ import annotations

from tests.coordination.conformance import *  # noqa: F403  # the suite's test functions
