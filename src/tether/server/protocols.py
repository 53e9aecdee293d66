"""The front-end protocol endpoints, as one router: the Vercel AI SDK's and AG-UI's.

See `ai_sdk.py`, `ag_ui.py`, and docs/protocols.md.
"""

from __future__ import annotations

from fastapi import APIRouter

from .ag_ui import router as ag_ui_router
from .ai_sdk import router as ai_sdk_router
from .errors import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)
router.include_router(ai_sdk_router)
router.include_router(ag_ui_router)
