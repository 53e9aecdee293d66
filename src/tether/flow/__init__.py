"""Event-driven flows with a runtime stream that really stops; see `tether.flow.flow` and
docs/flow.md."""

from __future__ import annotations

from .data import FlowData
from .flow import Chain, Flow, Handler
from .handle import RuntimeStream, SyncRuntimeStream
from .program import START, FlowProgram, FlowRun

__all__ = [
    "START",
    "Chain",
    "Flow",
    "FlowData",
    "FlowProgram",
    "FlowRun",
    "Handler",
    "RuntimeStream",
    "SyncRuntimeStream",
]
