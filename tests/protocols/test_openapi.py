"""The front-end protocol endpoints are in the OpenAPI spec, as event streams."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.anyio


async def test_protocol_endpoints_are_documented_in_openapi(make_served: Any) -> None:
    served = await make_served()
    spec = (await served.client.get("/openapi.json")).json()
    for path, body in (("/ai-sdk/chat", "ChatRequest"), ("/ag-ui", "RunAgentInput")):
        post = spec["paths"][path]["post"]
        assert "text/event-stream" in post["responses"]["200"]["content"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(body)
        assert {p["name"] for p in post.get("parameters", [])} >= {"app"}
