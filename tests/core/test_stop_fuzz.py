"""CI's share of the stop-fuzz (`reliability/stop_fuzz.py`): a few hundred random stops across
graph, agent and flow runs, each checked against the stop contract, with no violation."""

from __future__ import annotations

import pytest
from reliability import stop_fuzz


@pytest.mark.timeout(600)
def test_three_hundred_random_stops_keep_the_contract() -> None:
    report = stop_fuzz.fuzz(300, seed=9)
    assert report.cases == 300
    assert set(report.by_kind) == set(stop_fuzz.KINDS)  # every engine, and raising user code
    assert report.violations == [], report.violations[0]
