"""Tools the model can call: `@tool` builds one from a typed function; see docs/tools.md."""

from __future__ import annotations

from tether.tools.process import ToolProcessError
from tether.tools.tool import Isolation, Tool, ToolArgumentsError, tool, tool_result_text

__all__ = [
    "Isolation",
    "Tool",
    "ToolArgumentsError",
    "ToolProcessError",
    "tool",
    "tool_result_text",
]
