"""Schemathesis against the server's own OpenAPI spec: no 5xx, no answer the spec does not allow.

Every operation, with a valid API key, on an in-process app (a scripted agent in memory). CI runs
a bounded number of examples per operation (`TETHER_SCHEMATHESIS_EXAMPLES`, default 25). The long
run, `reliability/server_fuzz.py`, sets more examples and points the test at a real uvicorn
(`TETHER_SCHEMATHESIS_URL`); with `TETHER_SCHEMATHESIS_REPORT` set, the status codes of every case
are counted into that JSON file.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from tether.server import create_app  # noqa: E402
from tether.testing import ScriptedModel  # noqa: E402

from ._chat import chat_app  # noqa: E402

KEY = os.environ.get("TETHER_SCHEMATHESIS_KEY", "sk-schemathesis-key-1")
EXAMPLES = int(os.environ.get("TETHER_SCHEMATHESIS_EXAMPLES", "25"))
URL = os.environ.get("TETHER_SCHEMATHESIS_URL")
REPORT = os.environ.get("TETHER_SCHEMATHESIS_REPORT")
STATUSES: Counter[str] = Counter()  # "<operation> <status>" -> cases

api = create_app(chat_app(ScriptedModel(default_reply="ok")), api_keys={KEY: "fuzz"})
if URL:
    schema = schemathesis.openapi.from_url(f"{URL}/openapi.json")
else:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)


@pytest.fixture(scope="module", autouse=True)
def lifespan() -> Iterator[None]:
    """Run the app's lifespan (storage setup, shutdown stops) around the module's cases."""
    with TestClient(api):
        yield
    if REPORT:
        Path(REPORT).write_text(json.dumps(dict(STATUSES), indent=1, sort_keys=True))


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_answers_within_its_spec_and_never_5xx(case: object) -> None:
    # Every check but "a schema-valid request is accepted": the spec cannot say that a thread is
    # busy (409) or that a run id names nothing (404), so valid-looking requests are refused.
    response = case.call(headers={"Authorization": f"Bearer {KEY}"})  # type: ignore[attr-defined]
    STATUSES[f"{case.operation.label} {response.status_code}"] += 1  # type: ignore[attr-defined]
    case.validate_response(  # type: ignore[attr-defined]
        response, excluded_checks=[positive_data_acceptance]
    )
