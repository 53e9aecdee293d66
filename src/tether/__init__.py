"""tether: streaming AI agents that a person can stop at any moment, and then continue."""

from __future__ import annotations

from .agent import Agent, AgentTool, OutputValidationError, ToolsIgnoredWarning, create_agent
from .app import App, StateSnapshot
from .commands import Command, Resume
from .context import RunContext
from .coordination import LocalRunRegistry, RunRegistry, StopResult
from .errors import (
    CheckpointConflictError,
    CoordinationUnavailableError,
    CorruptRecordError,
    GraphRecursionError,
    MissingExtraError,
    ModelError,
    NotFoundError,
    RunCancelledError,
    RunError,
    RunFailedError,
    StorageError,
    TetherError,
    ThreadBusyError,
    UserError,
)
from .events import (
    CheckpointSaved,
    CustomEvent,
    Event,
    MessageDeltaEvent,
    MessageEvent,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)
from .flow import Flow, FlowData, FlowRun, RuntimeStream, SyncRuntimeStream
from .graph import END, START, CompiledGraph, StateGraph
from .handle import RunHandle, RunStream, SyncRunStream
from .interrupts import GraphInterrupt, Interrupt, interrupt
from .messages import Message, MessageDelta, ToolCall, ToolCallDelta, add_messages
from .run import RunRecord
from .state import AgentState, MessagesState
from .stop import StopRequest
from .storage import (
    Checkpoint,
    Checkpointer,
    InMemoryCheckpointer,
    SqliteCheckpointer,
    ThreadInfo,
)
from .tools import Tool, tool
from .transcript import repair_transcript

__version__ = "0.1.0"

__all__ = [
    "END",
    "START",
    "Agent",
    "AgentState",
    "AgentTool",
    "App",
    "Checkpoint",
    "CheckpointConflictError",
    "CheckpointSaved",
    "Checkpointer",
    "Command",
    "CompiledGraph",
    "CoordinationUnavailableError",
    "CorruptRecordError",
    "CustomEvent",
    "Event",
    "Flow",
    "FlowData",
    "FlowRun",
    "GraphInterrupt",
    "GraphRecursionError",
    "InMemoryCheckpointer",
    "Interrupt",
    "LocalRunRegistry",
    "Message",
    "MessageDelta",
    "MessageDeltaEvent",
    "MessageEvent",
    "MessagesState",
    "MissingExtraError",
    "ModelError",
    "NodeFinished",
    "NodeStarted",
    "NotFoundError",
    "OutputValidationError",
    "Resume",
    "RunCancelledError",
    "RunContext",
    "RunError",
    "RunFailedError",
    "RunFinished",
    "RunHandle",
    "RunRecord",
    "RunRegistry",
    "RunStarted",
    "RunStream",
    "RuntimeStream",
    "SqliteCheckpointer",
    "StateGraph",
    "StateSnapshot",
    "StopRequest",
    "StopResult",
    "StorageError",
    "SyncRunStream",
    "SyncRuntimeStream",
    "TetherError",
    "ThreadBusyError",
    "ThreadInfo",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolsIgnoredWarning",
    "UserError",
    "__version__",
    "add_messages",
    "create_agent",
    "interrupt",
    "repair_transcript",
    "tool",
]
