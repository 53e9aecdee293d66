"""`tune_gc()` raises the collector's thresholds, which is safe because runs leave no cycles."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from tether import InMemoryCheckpointer, StateGraph
from tether.server import tune_gc
from tether.server.tuning import GC_THRESHOLDS


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_start_up_objects_and_raises_the_thresholds() -> None:
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_stopped_runs_leave_no_cyclic_garbage() -> None:
    async def forever(state: dict[str, Any]) -> Any:
        yield "token "
        await anyio.sleep_forever()

    async def main() -> int:
        g = StateGraph()
        g.add_node("forever", forever)
        g.set_entry_point("forever")
        app = g.compile(InMemoryCheckpointer())
        gc.collect()
        gc.disable()
        try:
            for i in range(200):
                handle = await app.astart("go", thread_id=f"t{i}")
                await handle.wait_for_events(2)
                assert await app.astop(run_id=handle.run_id)
            del handle
            return gc.collect()
        finally:
            gc.enable()

    assert anyio.run(main) == 0
