"""Model providers behind one streaming protocol; see `tether.models.base` and docs/models.md."""

from __future__ import annotations

from tether.models.base import (
    CONTINUE_PROMPT,
    Continuation,
    Finish,
    Model,
    ModelDelta,
    ModelError,
    ModelSettings,
    TextDelta,
    ToolCallChunk,
    ToolSpec,
    Usage,
    to_message_delta,
)
from tether.models.local import LocalModel, default_model_path
from tether.models.openai import OpenAICompatible
from tether.models.registry import resolve_model

__all__ = [
    "CONTINUE_PROMPT",
    "Continuation",
    "Finish",
    "LocalModel",
    "Model",
    "ModelDelta",
    "ModelError",
    "ModelSettings",
    "OpenAICompatible",
    "TextDelta",
    "ToolCallChunk",
    "ToolSpec",
    "Usage",
    "default_model_path",
    "resolve_model",
    "to_message_delta",
]
