"""Arbitrary JSON into the message parser, the run-creation models and the WebSocket frame parser:
only a 422 (`ApiError`, or pydantic's `ValidationError`, which FastAPI answers with 422) comes
out, never another exception. Hypothesis drives it, biased towards almost-valid messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tether.messages import Message
from tether.server.errors import ApiError
from tether.server.inputs import parse_message
from tether.server.routes_ws import parse_frame
from tether.server.schemas import RunCreate, ThreadCreate, run_input

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

text = st.text(alphabet=st.characters(codec=None), max_size=12)  # includes lone surrogates
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer", 5, None])
tool_calls = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "id": text | json_values,
            "type": st.sampled_from(["function", "other"]) | json_values,
            "function": st.fixed_dictionaries(
                {}, optional={"name": text | json_values, "arguments": text | json_values}
            )
            | json_values,
            "name": text | json_values,
        },
    ),
    max_size=3,
)
content_parts = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url"]) | json_values},
        optional={"text": text | json_values, "image_url": json_values},
    ),
    max_size=3,
)
messages = st.fixed_dictionaries(
    {"role": ROLES},
    optional={
        "content": text | content_parts | json_values,
        "tool_calls": tool_calls | json_values,
        "tool_call_id": text | json_values,
        "name": text | json_values,
        "id": text | json_values,
        "status": st.sampled_from(["complete", "stopped", "cancelled", "bogus"]) | json_values,
        "metadata": json_values,
        "extra": json_values,
    },
)
anything = messages | json_values


def _refusal(call: Callable[[], object]) -> tuple[int, str] | None:
    """None if `call()` accepted its input; else (status, message) of its 422. Any other
    exception propagates and fails the test."""
    try:
        call()
    except ApiError as exc:
        return exc.status_code, str(exc.detail)
    except ValidationError as exc:  # FastAPI answers a model's ValidationError with 422
        return 422, str(exc)
    return None


@SETTINGS
@given(anything)
def test_the_message_parser_raises_only_422(data: Any) -> None:
    refused = _refusal(lambda: parse_message(data, where="input.messages[0]"))
    if refused is None:
        message = parse_message(data, where="input.messages[0]")
        assert isinstance(message, Message)
        message.model_dump_json()  # what is accepted can be stored as JSON text
    else:
        assert refused[0] == 422
        assert "input.messages[0]" in refused[1]


run_bodies = st.fixed_dictionaries(
    {},
    optional={
        "input": st.fixed_dictionaries({}, optional={"messages": st.lists(anything, max_size=3)})
        | json_values,
        "resume": json_values,
        "multitask_strategy": st.sampled_from(["reject", "enqueue"]) | json_values,
        "on_disconnect": st.sampled_from(["cancel", "continue"]) | json_values,
        "metadata": json_values,
        "config": json_values,
        "app": text | json_values,
    },
)


@SETTINGS
@given(run_bodies | json_values)
def test_the_run_models_raise_only_422(data: Any) -> None:
    refused = _refusal(lambda: run_input(RunCreate.model_validate(data)))
    assert refused is None or refused[0] == 422
    refused = _refusal(lambda: ThreadCreate.model_validate(data))
    assert refused is None or refused[0] == 422


frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "stop", "resume", "join", "bogus"]) | json_values},
    optional={
        "content": text | json_values,
        "messages": st.lists(anything, max_size=3) | json_values,
        "reason": text | json_values,
        "mode": st.sampled_from(["now", "after_step", "rollback"]) | json_values,
        "run_id": text | json_values,
        "after_seq": st.integers() | json_values,
        "multitask_strategy": json_values,
    },
)


@SETTINGS
@given(frames | json_values)
def test_the_websocket_frame_parser_raises_only_422(data: Any) -> None:
    try:
        text_frame = json.dumps(data)
    except (ValueError, TypeError):
        return
    refused = _refusal(lambda: parse_frame(text_frame))
    assert refused is None or refused[0] == 422
