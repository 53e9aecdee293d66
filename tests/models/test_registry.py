"""`resolve_model`: short names for models."""

from __future__ import annotations

import pytest

from tether.errors import UserError
from tether.models import LocalModel, OpenAICompatible, resolve_model
from tether.testing import ScriptedModel


def test_a_model_object_is_returned_as_is() -> None:
    model = ScriptedModel("hi")
    assert resolve_model(model) is model


def test_local_is_the_embedded_model() -> None:
    model = resolve_model("local")
    assert isinstance(model, LocalModel)
    assert not model.loaded  # loading waits for the first call


def test_openai_reads_base_url_and_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = resolve_model("openai:gpt-4o-mini")
    assert isinstance(model, OpenAICompatible)
    assert (model.base_url, model.model) == ("https://api.openai.com/v1", "gpt-4o-mini")
    assert model._api_key == "sk-test"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    assert resolve_model("openai:m").url == "http://127.0.0.1:9/v1/chat/completions"  # type: ignore[attr-defined]


def test_openai_compatible_names_model_and_url() -> None:
    model = resolve_model("openai-compatible:smollm2@http://127.0.0.1:8080/v1")
    assert isinstance(model, OpenAICompatible)
    assert (model.base_url, model.model) == ("http://127.0.0.1:8080/v1", "smollm2")


@pytest.mark.parametrize(
    "spec", ["gpt-4o", "openai:", "openai-compatible:m", "openai-compatible:@http://x", "LOCAL"]
)
def test_unknown_names_are_user_errors_listing_the_forms(spec: str) -> None:
    with pytest.raises(UserError) as info:
        resolve_model(spec)
    assert repr(spec) in str(info.value)
    assert "openai-compatible:<model>@<base_url>" in str(info.value)


@pytest.mark.parametrize(
    ("kind", "continuation"),
    [
        ("openai-compatible", "instruction"),
        ("llama-server", "prefill"),
        ("vllm", "continue_final_message"),
    ],
)
def test_servers_by_kind_continue_a_stopped_answer_their_own_way(
    kind: str, continuation: str
) -> None:
    model = resolve_model(f"{kind}:m@http://127.0.0.1:8080/v1")
    assert isinstance(model, OpenAICompatible)
    assert (model.base_url, model.model, model.continuation) == (
        "http://127.0.0.1:8080/v1",
        "m",
        continuation,
    )
