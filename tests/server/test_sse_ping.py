"""SSE pings: streams opened together do not all check for idleness at the same moment."""

from __future__ import annotations

import itertools

import pytest

from tether.server import sse


@pytest.mark.parametrize("count", [2, 10, 100, 1_000])
@pytest.mark.parametrize("first", [0, 7, 12_345])
def test_consecutive_streams_first_check_for_pings_at_evenly_spread_fractions(
    count: int, first: int
) -> None:
    fractions = sorted(sse.ping_phase(k) for k in range(first, first + count))
    assert all(0.0 <= f < 1.0 for f in fractions)
    gaps = [b - a for a, b in itertools.pairwise(fractions)]
    gaps.append(1.0 - fractions[-1] + fractions[0])  # around the circle
    assert max(gaps) < 3 / count  # no cluster: every stretch of the interval has its streams


def test_each_new_stream_gets_the_next_fraction() -> None:
    a, b = sse.ping_phase(), sse.ping_phase()
    assert a != b
