"""Unit checks of the two translators for events the end-to-end tests do not produce."""

from __future__ import annotations

import json
from typing import Any

from tether.events import CustomEvent, RunFinished
from tether.server.ag_ui import AGUIStream
from tether.server.ai_sdk import UIMessageStream

IDS = {"run_id": "r1", "thread_id": "t1", "ts": 0.0}


def decoded(chunks: Any) -> list[dict[str, Any]]:
    return [json.loads(c.decode().removeprefix("data: ")) for c in chunks]


def test_custom_events_become_data_parts_and_custom_events() -> None:
    event = CustomEvent(seq=1, data={"type": "mcp_progress", "progress": 1.0}, **IDS)
    assert decoded(UIMessageStream("t1", "r1").translate(event)) == [
        {"type": "data-custom", "data": {"type": "mcp_progress", "progress": 1.0}}
    ]
    assert decoded(AGUIStream("t1", "r1").translate(event)) == [
        {
            "type": "CUSTOM",
            "name": "tether.custom",
            "value": {"type": "mcp_progress", "progress": 1.0},
        }
    ]


def test_every_terminal_status_ends_each_protocol_with_its_own_end_event() -> None:
    ends = {}
    for status in ("completed", "cancelled", "failed", "interrupted"):
        final = RunFinished(seq=9, status=status, reason="why", error="boom", **IDS)  # type: ignore[arg-type]
        ends[status] = (
            [c["type"] for c in decoded(UIMessageStream("t1", "r1").translate(final))],
            decoded(AGUIStream("t1", "r1").translate(final))[-1],
        )
    assert ends["completed"][0] == ["finish"]
    assert ends["cancelled"][0] == ["abort", "finish"]
    assert ends["failed"][0] == ["error", "finish"]
    assert ends["interrupted"][0] == ["finish"]
    assert ends["completed"][1]["type"] == "RUN_FINISHED" and "outcome" not in ends["completed"][1]
    assert ends["cancelled"][1]["outcome"] == {"type": "cancelled"}
    assert ends["failed"][1] == {"type": "RUN_ERROR", "message": "boom", "code": "run_failed"}
    assert ends["interrupted"][1]["result"] == {"status": "interrupted", "reason": "why"}
