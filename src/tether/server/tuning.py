"""Process tuning for a long-running server: short, rare garbage-collection pauses.

A server that streams to a thousand clients allocates an event, a JSON chunk and a few small objects
per token. CPython's default collector thresholds then run a collection every few hundred
allocations, and the full (generation 2) collections scan every live object: at 1,000 open streams
those pauses are the latency tail (`bench/server_load.py`, 1,000 streams at 10 tokens/s on this
project's 2-core machine: cancel -> stream end max 394 ms with the defaults, 58 ms tuned).

tether's own run objects are freed by reference counting (a stopped run leaves no cyclic garbage;
see `tests/server/test_tuning.py`), so collecting less often costs little memory.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

GC_THRESHOLDS = (50_000, 50, 100)
"""Allocations before a young collection, then young collections per middle one, middle per full."""


def tune_gc() -> None:
    """Collect once, freeze what start-up allocated (modules, apps), and raise the thresholds.

    Call it once the apps are built, just before serving. `tether serve` and `tether demo` do.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
