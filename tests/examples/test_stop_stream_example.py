"""The seed 000 port runs as written, with shorter timings, and really ends early."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import ModuleType

from tether import RunFinished

EXAMPLE = Path(__file__).parents[2] / "examples" / "stop_stream.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stop_stream_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stop_stream_example_ends_early_with_the_chunks_kept() -> None:
    example = load_example()
    example.CHUNK_DELAY = 0.01
    result = example.run_and_stop(stop_after=0.1)
    assert result["stopped"] is True
    final = result["final"]
    assert isinstance(final, RunFinished) and final.status == "cancelled"
    chunks = [m.content for m in result["messages"] if m.role == "assistant"]
    assert 1 <= len(chunks) < 50
    assert chunks == [f"Chunk {i + 1} from MAIN" for i in range(len(chunks))]
    assert not any(
        t.name.startswith("Thread") and t.is_alive()
        for t in threading.enumerate()
        if t.daemon and "reader" in t.name
    )
