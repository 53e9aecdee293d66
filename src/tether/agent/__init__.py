"""The agent engine: an LLM-and-tools loop built on the graph engine."""

from __future__ import annotations

from .agent import Agent, ToolsIgnoredWarning, create_agent
from .output import OutputValidationError
from .subagent import AgentTool

__all__ = ["Agent", "AgentTool", "OutputValidationError", "ToolsIgnoredWarning", "create_agent"]
