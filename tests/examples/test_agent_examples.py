"""The seed 002 port and the stop-tools example run as written (scripted models, short timings)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tether.testing import ScriptedModel, stream_forever

EXAMPLES = Path(__file__).parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cancel_run_example_cancels_from_another_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_DB", str(tmp_path / "t.db"))
    result = load("cancel_run").main(ScriptedModel([stream_forever("dragon ")]), delay=0.2)
    assert result["status"] == "cancelled" and result["cancelled"] is True
    assert result["content"].startswith("dragon")


def test_stop_tools_example_never_runs_the_remaining_tools() -> None:
    example = load("stop_tools")
    statuses = asyncio.run(example.main())
    assert example.started == ["dragons", "compilers"]
    assert statuses == [
        "user:complete",
        "assistant:complete",
        "tool:complete",
        "tool:cancelled",
        "tool:cancelled",
        "user:complete",
        "assistant:complete",
    ]
