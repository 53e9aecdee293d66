"""The agent-capability examples run as written (scripted by default; SmolLM2 where marked)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_structured_output_example_validates_then_gives_none_when_stopped() -> None:
    example = load("structured_output")
    first, second = asyncio.run(example.main())
    assert first == example.City(name="Oslo", country="Norway", population=709000)
    assert second is None
