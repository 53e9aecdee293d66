"""The agent engine: an LLM-and-tools loop built on the graph engine."""

from __future__ import annotations

from .agent import Agent, ToolsIgnoredWarning, create_agent
from .output import OutputValidationError

__all__ = ["Agent", "OutputValidationError", "ToolsIgnoredWarning", "create_agent"]
