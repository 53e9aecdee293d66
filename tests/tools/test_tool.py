"""`@tool`: schemas from signatures and docstrings, argument validation, and what a stop does."""

from __future__ import annotations

import threading
from typing import Annotated, Literal

import anyio
import anyio.to_thread
import pydantic
import pytest

from tether.errors import UserError
from tether.models import ToolSpec
from tether.tools import Tool, ToolArgumentsError, tool

pytestmark = pytest.mark.anyio

WATCHDOG = 10.0


class Place(pydantic.BaseModel):
    city: str
    country: str = "FR"


@tool
def get_weather(place: Place, unit: Literal["C", "F"] = "C", days: int = 1) -> dict[str, object]:
    """Get the weather forecast.

    Looks it up in a table.

    Args:
        place: Where to look.
        unit (str): The temperature unit,
            Celsius or Fahrenheit.
        days: How many days ahead.

    Returns:
        The forecast.
    """
    return {"city": place.city, "unit": unit, "days": days}


def test_schema_comes_from_signature_and_docstring() -> None:
    spec = get_weather.spec
    assert isinstance(spec, ToolSpec)
    assert spec.name == "get_weather"
    assert spec.description == "Get the weather forecast.\n\nLooks it up in a table."
    params = spec.parameters
    assert params["type"] == "object"
    assert params["required"] == ["place"]
    assert params["additionalProperties"] is False
    assert params["properties"]["unit"] == {
        "enum": ["C", "F"],
        "type": "string",
        "default": "C",
        "description": "The temperature unit, Celsius or Fahrenheit.",
    }
    assert params["properties"]["days"]["description"] == "How many days ahead."
    assert params["properties"]["place"]["$ref"] == "#/$defs/Place"
    assert spec.to_openai()["function"]["parameters"] is params


def test_decorator_options_and_direct_calls() -> None:
    @tool(name="shout", description="Say it loudly.")
    def loud(text: Annotated[str, pydantic.Field(description="What to say.")]) -> str:
        return text.upper()

    assert isinstance(loud, Tool)
    assert (loud.name, loud.description) == ("shout", "Say it loudly.")
    assert loud.spec.parameters["properties"]["text"]["description"] == "What to say."
    assert loud("hi") == "HI"  # calling the tool calls the function


def test_parameter_names_may_shadow_basemodel_attributes() -> None:
    @tool
    def odd(json: str, copy: int = 0) -> str:
        """Odd names."""
        return f"{json}{copy}"

    assert set(odd.spec.parameters["properties"]) == {"json", "copy"}
    assert odd.validate('{"json": "a"}') == {"json": "a", "copy": 0}


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (lambda *args: None, "named parameters only"),
        (lambda **kw: None, "named parameters only"),
    ],
)
def test_variadic_parameters_are_rejected(bad: object, why: str) -> None:
    with pytest.raises(UserError, match=why):
        Tool(bad, name="bad")  # type: ignore[arg-type]  # a lambda is a fine callable


def test_bad_isolation_and_bad_name_are_user_errors() -> None:
    def f() -> None:
        """F."""

    with pytest.raises(UserError, match="'fork'"):
        Tool(f, isolation="fork")  # type: ignore[arg-type]  # the wrong value is the point
    with pytest.raises(UserError, match="'has space'"):
        Tool(f, name="has space")


def test_process_tool_must_be_importable() -> None:
    def local() -> None:
        """Defined in a function: a child process cannot import it."""

    with pytest.raises(UserError, match="module level"):
        tool(isolation="process")(local)


async def test_run_validates_converts_and_returns_text() -> None:
    with anyio.fail_after(WATCHDOG):
        text = await get_weather.run('{"place": {"city": "Paris"}, "days": "3"}')
        as_dict = await get_weather.run({"place": {"city": "Oslo"}})
    assert text == '{"city":"Paris","unit":"C","days":3}'
    assert as_dict == '{"city":"Oslo","unit":"C","days":1}'


async def test_str_results_are_returned_as_is_and_empty_arguments_mean_none() -> None:
    @tool
    async def hello() -> str:
        """Say hello."""
        return "hello"

    with anyio.fail_after(WATCHDOG):
        assert await hello.run("") == "hello"
        assert await hello.run("{}") == "hello"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"place": ', "not JSON"),
        ("[1, 2]", "send a JSON object"),
        ("{}", "place: Field required"),
        ('{"place": {"city": "P"}, "unit": "K"}', "unit: Input should be 'C' or 'F'"),
        ('{"place": {"city": "P"}, "extra": 1}', "extra: Extra inputs are not permitted"),
    ],
)
async def test_bad_arguments_raise_tool_arguments_error(arguments: str, expected: str) -> None:
    with pytest.raises(ToolArgumentsError) as info:
        await get_weather.run(arguments)
    assert expected in str(info.value)
    assert "get_weather" in str(info.value)
    assert info.value.tool_name == "get_weather"
    assert info.value.arguments == arguments
    assert isinstance(info.value, UserError)


async def test_tool_exceptions_propagate_unchanged() -> None:
    class Boom(Exception):
        pass

    @tool
    def sync_boom() -> str:
        """Fail."""
        raise Boom("sync")

    @tool
    async def async_boom() -> str:
        """Fail."""
        raise Boom("async")

    with anyio.fail_after(WATCHDOG):
        with pytest.raises(Boom, match="sync"):
            await sync_boom.run({})
        with pytest.raises(Boom, match="async"):
            await async_boom.run({})


async def test_sync_tools_run_in_a_worker_thread() -> None:
    threads: list[threading.Thread] = []

    @tool
    def where() -> str:
        """Which thread am I on."""
        threads.append(threading.current_thread())
        return "ok"

    with anyio.fail_after(WATCHDOG):
        assert await where.run({}) == "ok"
    assert threads[0] is not threading.current_thread()


async def test_async_tool_is_cancelled_at_its_next_await() -> None:
    started = anyio.Event()
    cleaned_up: list[bool] = []

    @tool
    async def wait_forever() -> str:
        """Block until cancelled."""
        try:
            started.set()
            await anyio.sleep_forever()
        finally:
            cleaned_up.append(True)
        return "never"

    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_forever.run, {})
            await started.wait()
            tg.cancel_scope.cancel()
    assert cleaned_up == [True]


async def test_cancelled_sync_tool_is_abandoned_and_its_result_discarded() -> None:
    started = threading.Event()
    proceed = threading.Event()
    finished = threading.Event()
    results: list[str] = []

    @tool
    def slow() -> str:
        """Block this thread until the test lets it go."""
        started.set()
        proceed.wait(WATCHDOG)
        finished.set()
        return "late result"

    async def call() -> None:
        results.append(await slow.run({}))

    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            assert await anyio.to_thread.run_sync(started.wait, WATCHDOG)
            tg.cancel_scope.cancel()
        # run() returned while the thread was still blocked: it was abandoned, not awaited.
        assert not finished.is_set()
        proceed.set()
        assert await anyio.to_thread.run_sync(finished.wait, WATCHDOG)
    assert results == []  # the thread finished, and its result went nowhere
