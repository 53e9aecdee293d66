"""One node of the test cluster: `uvicorn --app-dir tests/cluster _node:api` (see `_cluster.py`).

It serves the `chat` agent of `tests/server/_served.py` (its `ControlledModel` plays turns the test
scripts over HTTP, with gates) built WITHOUT a checkpointer or registry, so storage and
coordination come from `TETHER_DATABASE_URL` / `TETHER_REDIS_URL` (`TETHER_REDIS_PREFIX`,
`TETHER_LEASE`), exactly as `tether serve --database-url --redis-url` sets them. `/_test/...`
controls the model and reports the registry's size and the process id.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tests.server._served import ControlledModel, chat_agent
from tether.server import create_app

model = ControlledModel()
agent = chat_agent(model, None)
api = create_app(agent)
control = APIRouter(prefix="/_test", include_in_schema=False)


@control.post("/script")
async def script(body: dict[str, Any]) -> dict[str, int]:
    model.turns.extend(body["turns"])
    return {"queued": len(model.turns)}


@control.get("/gates/{name}/reached")
async def reached(name: str) -> dict[str, bool]:
    with anyio.fail_after(30):
        await model.gate(name).reached()
    return {"reached": True}


@control.post("/gates/{name}/release")
async def release(name: str) -> dict[str, bool]:
    model.gate(name).release()
    return {"released": True}


@control.get("/state")
async def state() -> dict[str, Any]:
    return {"pid": os.getpid(), "size": agent.registry.size()}


api.include_router(control)
