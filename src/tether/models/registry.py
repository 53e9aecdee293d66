"""`resolve_model`: turn a short model name into a `Model`.

The forms:
- `"local"`: `LocalModel()`, SmolLM2-135M-Instruct in-process (the `local` extra);
- `"openai:<model>"`: `OpenAICompatible` at `$OPENAI_BASE_URL` (default OpenAI's API) with
  `$OPENAI_API_KEY`;
- `"openai-compatible:<model>@<base_url>"`: `OpenAICompatible` at an explicit URL, e.g.
  `"openai-compatible:smollm2@http://127.0.0.1:8080/v1"`;
- `"llama-server:<model>@<base_url>"` and `"vllm:<model>@<base_url>"`: the same, for llama.cpp's
  `llama-server` (`continuation="prefill"`) and vLLM (`continuation="continue_final_message"`),
  so that Continue extends the stopped answer itself.
"""

from __future__ import annotations

import os

from tether.errors import UserError
from tether.models.base import Continuation, Model
from tether.models.local import LocalModel
from tether.models.openai import OpenAICompatible

__all__ = ["DEFAULT_OPENAI_BASE_URL", "resolve_model"]

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"

_FORMS = (
    "'local', 'openai:<model>', 'openai-compatible:<model>@<base_url>', "
    "'llama-server:<model>@<base_url>' or 'vllm:<model>@<base_url>'"
)
# The `continuation` of each `<kind>:<model>@<base_url>` form.
_AT_URL: dict[str, Continuation] = {
    "openai-compatible": "instruction",
    "llama-server": "prefill",
    "vllm": "continue_final_message",
}


def resolve_model(spec: str | Model) -> Model:
    """Return `spec` if it is a `Model`, else the model its short name describes.

    Environment variables are read at call time: `OPENAI_BASE_URL` and `OPENAI_API_KEY` for
    `"openai:<model>"`, and `OPENAI_API_KEY` (when set) for the `...@<base_url>` forms.

    Raises:
        UserError: `spec` is not one of the forms above.
    """
    if isinstance(spec, Model):
        return spec
    if not isinstance(spec, str):
        raise UserError(f"a model is a Model object or a string like {_FORMS}, not {spec!r}")
    kind, sep, rest = spec.partition(":")
    if spec == "local":
        return LocalModel()
    if sep and kind == "openai" and rest:
        base_url = os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
        return OpenAICompatible(base_url, rest, api_key=os.environ.get("OPENAI_API_KEY"))
    if sep and kind in _AT_URL:
        model, at, base_url = rest.partition("@")
        if model and at and base_url:
            return OpenAICompatible(
                base_url,
                model,
                api_key=os.environ.get("OPENAI_API_KEY"),
                continuation=_AT_URL[kind],
            )
    raise UserError(f"unknown model {spec!r}; use a Model object or one of {_FORMS}")
