"""The agent engine: an LLM-and-tools loop built on the graph engine."""

from __future__ import annotations

from .agent import Agent, ToolsIgnoredWarning, create_agent

__all__ = ["Agent", "ToolsIgnoredWarning", "create_agent"]
