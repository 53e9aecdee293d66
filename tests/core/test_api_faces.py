"""The Python faces of a run: sync and async twins that cannot drift, one meaning for `stop`, the
seeds' own calls, and clear errors for wrong arguments."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Unpack, get_args, get_origin

import anyio
import pytest

from tether import (
    Agent,
    App,
    CompiledGraph,
    InMemoryCheckpointer,
    RunContext,
    RunFinished,
    RunHandle,
    StateGraph,
    ToolsIgnoredWarning,
    UserError,
    tool,
)
from tether.flow import Flow
from tether.run import RunOptions, StartOptions, StreamOptions
from tether.testing import ScriptedModel, stream_forever
from tether.worker import enqueue_run

WATCHDOG = 10.0


def _pairs(cls: type) -> list[tuple[str, str]]:
    names = {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}
    return sorted((n, n[1:]) for n in names if n.startswith("a") and n[1:] in names)


@pytest.mark.parametrize("cls", [App, CompiledGraph, Agent, Flow, RunHandle])
def test_every_sync_async_pair_has_the_same_parameters(cls: type) -> None:
    pairs = _pairs(cls)
    assert pairs, f"{cls.__name__} has no sync/async pairs"
    for async_name, sync_name in pairs:
        async_params = list(inspect.signature(getattr(cls, async_name)).parameters.values())
        sync_params = list(inspect.signature(getattr(cls, sync_name)).parameters.values())
        shape = [(p.name, p.kind, p.default) for p in async_params]
        assert shape == [(p.name, p.kind, p.default) for p in sync_params], (
            f"{cls.__name__}.{async_name} and .{sync_name} differ"
        )


# Pairs that are not twins: `send` and `stop_stream` reach a run of this process at once, from any
# thread, without blocking (they are safe inside a handler on the run's own loop); only for a run
# in another process do they wait for their async method on the registry's loop.
NOT_TWINS = {(Flow, "asend", "send"), (Flow, "astop_stream", "stop_stream")}


@pytest.mark.parametrize("cls", [App, CompiledGraph, Agent, Flow])
def test_every_sync_face_is_generated_from_its_async_twin(cls: type) -> None:
    for async_name, sync_name in _pairs(cls):
        if (cls, async_name, sync_name) in NOT_TWINS:
            continue
        sync = getattr(cls, sync_name)
        assert inspect.unwrap(sync) is getattr(cls, async_name), (
            f"{cls.__name__}.{sync_name} is not generated from .{async_name} (tether._twin)"
        )
        assert sync.__name__ == sync_name
        assert f"`{async_name}`" in (sync.__doc__ or "")


def _keywords(face: Callable[..., Any]) -> set[str]:
    """The names a face takes: its own parameters, and the keys of the keyword bundle it unpacks
    (`**options: Unpack[StartOptions]`)."""
    names: set[str] = set()
    for param in inspect.signature(face, eval_str=True).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            assert get_origin(param.annotation) is Unpack, f"{face.__qualname__}: **{param.name}"
            (bundle,) = get_args(param.annotation)
            names |= bundle.__required_keys__ | bundle.__optional_keys__
        elif param.kind is not param.VAR_POSITIONAL:
            names.add(param.name)
    return names - {"self"}


# Every face that starts a run, with the names it takes besides astart's options: its input, and
# its own flags. A keyword added to `App.astart` alone (instead of to `StartOptions`), or to one of
# these alone, makes the test below fail.
RUN_FACES: list[tuple[Callable[..., Any], set[str]]] = [
    (App.start, {"input"}),
    (App.ainvoke, {"input"}),
    (App.invoke, {"input"}),
    (App.astream, {"input", "on_disconnect"}),
    (App.stream, {"input", "on_disconnect"}),
    (Agent.arun, {"input", "stream", "on_disconnect"}),
    (Agent.run, {"input", "stream", "on_disconnect"}),
    (Agent.ainvoke_output, {"input"}),
    (Agent.invoke_output, {"input"}),
    (Flow.astart, {"input"}),
    (Flow.start, {"input"}),
    (Flow.aget_runtime_stream, {"initial_value", "timeout", "detached"}),
    (Flow.get_runtime_stream, {"initial_value", "timeout", "detached"}),
    (enqueue_run, {"app", "input"}),
]


@pytest.mark.parametrize(("face", "own"), RUN_FACES, ids=lambda f: getattr(f, "__qualname__", ""))
def test_every_face_that_starts_a_run_takes_exactly_astarts_options(
    face: Callable[..., Any], own: set[str]
) -> None:
    options = _keywords(App.astart) - {"input"}
    assert options == {"config"} | StartOptions.__optional_keys__
    assert _keywords(face) == options | own


def test_every_option_of_the_bundle_reaches_the_runs_options() -> None:
    given: dict[str, Any] = {
        "thread_id": "t",
        "multitask_strategy": "enqueue",
        "on_disconnect": "continue",
        "checkpoint_id": "c1",
        "metadata": {"a": 1},
        "thread_metadata": {"b": 2},
    }
    assert set(given) == StreamOptions.__optional_keys__  # the test lists every option
    assert {f.name for f in dataclasses.fields(RunOptions)} == set(given) | {"config"}
    resolved = RunOptions.resolve("astream", {"recursion_limit": 3}, given, on_disconnect=None)
    assert {name: getattr(resolved, name) for name in given} == given
    assert resolved.config == {"recursion_limit": 3}


def test_an_unknown_option_is_a_type_error_on_every_face() -> None:
    app = counter_app()
    with pytest.raises(TypeError, match="unexpected keyword argument 'thred_id'"):
        app.start({}, thred_id="t")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'thred_id'"):
        app.stream({}, thred_id="t")  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match=r"ainvoke\(\) got an unexpected keyword argument 'on_disconnect'"
    ):
        app.invoke({}, on_disconnect="continue")  # type: ignore[call-arg]
    with pytest.raises(UserError, match="on_disconnect 'later'"):
        app.stream({}, on_disconnect="later")
    assert app.list_threads() == []  # nothing started


def test_the_sync_faces_pass_every_option_through() -> None:
    app = counter_app()
    handle = app.start({}, thread_id="s", metadata={"k": 1}, thread_metadata={"owner": "ann"})
    assert handle._loop.wait_sync(WATCHDOG)
    events = list(app.stream({}, {"thread_id": "s"}, on_disconnect="continue", metadata={"k": 2}))
    assert events[-1].type == "run_finished"
    assert [t.thread_id for t in app.list_threads(metadata={"owner": "ann"})] == ["s"]
    assert [r.metadata for r in app.list_runs("s")] == [{"k": 2}, {"k": 1}]
    assert app.get_state("s").values == {"n": 2}
    first = app.get_state_history("s")[-1].checkpoint_id  # before the first run's step
    assert app.invoke({}, thread_id="s", checkpoint_id=first) == {"n": 1}  # forked from it


def test_the_pairs_include_the_ones_users_reach_for() -> None:
    assert {("astart", "start"), ("astop", "stop"), ("ajoin", "join")} <= set(_pairs(App))
    assert ("astop", "stop") in _pairs(RunHandle)
    assert {("alist_threads", "list_threads"), ("aupdate_state", "update_state")} <= set(
        _pairs(App)
    )


def forever_agent(**kwargs: Any) -> Agent:
    # Two replies that never end: a test may start a second run on the thread and stop it too.
    model = ScriptedModel([stream_forever()], [stream_forever()], default_reply="Next.")
    return Agent(model, checkpointer=InMemoryCheckpointer(), **kwargs)


def test_agnos_cancel_run_takes_the_run_id_positionally_and_returns_a_bool() -> None:
    agent = forever_agent()
    handle = agent.start("tell me a story", thread_id="t")
    assert agent.cancel_run(handle.run_id) is True
    assert handle.done  # like stop(): it waited for the run to end
    assert handle.status == "cancelled"
    assert agent.cancel_run(handle.run_id) is False
    assert agent.cancel_run("no-such-run") is False


def test_handle_stop_means_what_app_stop_means_it_waits_for_the_end() -> None:
    agent = forever_agent()
    handle = agent.start("go", thread_id="t")
    assert handle.stop(reason="enough") is True
    assert handle.done
    assert isinstance(handle.events[-1], RunFinished)
    assert handle.events[-1].reason == "enough"
    again = agent.start("go", thread_id="t")  # the thread is free once stop() returned
    assert again.stop(wait=False) is True  # asks, and returns at once
    assert again._loop.wait_sync(WATCHDOG)
    assert again.stop() is False  # it has ended


def test_wrong_argument_types_get_errors_that_say_what_was_expected() -> None:
    agent = forever_agent()
    with pytest.raises(TypeError, match=r"stop\(thread_id=\.\.\.\)"):
        agent.stop("t1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"a run id \(a string\) or a config mapping"):
        agent.cancel_run(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="thread_id must be str"):
        agent.get_state(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metadata must be a mapping"):
        agent.start("x", metadata=["a"])  # type: ignore[arg-type]
    with pytest.raises(UserError, match="config must be a mapping"):
        agent.start("x", "t1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="grace must be a number"):
        agent.stop(thread_id="t", grace="soon")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="description must be a string"):
        forever_agent(description=["helpful"])


def test_description_is_accepted_and_opens_the_system_prompt() -> None:
    model = ScriptedModel("Hi.")
    agent = Agent(
        model,
        description="You are a pirate.",
        instructions="Answer briefly.",
        checkpointer=InMemoryCheckpointer(),
    )
    agent.invoke("hello", thread_id="t")
    system = model.calls[0][0]
    assert system.role == "system"
    assert system.content == "You are a pirate.\n\nAnswer briefly."


class TextOnly(ScriptedModel):
    supports_tools = False


def test_tools_on_a_model_that_cannot_call_tools_warn_once() -> None:
    @tool
    def lookup(q: str) -> str:
        """Look up."""
        return q

    with pytest.warns(ToolsIgnoredWarning, match="lookup") as caught:
        Agent(TextOnly("Hi."), tools=[lookup], checkpointer=InMemoryCheckpointer())
    assert len(caught) == 1
    Agent(ScriptedModel("Hi."), tools=[lookup], checkpointer=InMemoryCheckpointer())  # no warning


def counter_app() -> CompiledGraph:
    async def bump(state: dict[str, Any]) -> dict[str, Any]:
        return {"n": (state.get("n") or 0) + 1}

    from typing import TypedDict

    class Count(TypedDict, total=False):
        n: int

    g = StateGraph(Count)
    g.add_node("bump", bump)
    g.set_entry_point("bump")
    return g.compile(InMemoryCheckpointer())


@pytest.mark.anyio
async def test_ajoin_works_directly_in_async_for_and_awaited() -> None:
    app = counter_app()
    with anyio.fail_after(WATCHDOG) as watchdog:
        handle = await app.astart({}, thread_id="t")
        await handle.wait()
        live = [e.type async for e in app.ajoin(handle.run_id)]
        awaited = await app.ajoin(handle.run_id, after_seq=0)
        rest = [e.seq async for e in awaited]
    assert not watchdog.cancel_called
    assert live[0] == "run_started" and live[-1] == "run_finished"
    assert rest == list(range(1, len(live)))
    with pytest.raises(UserError, match="no run 'nope'"):
        await app.ajoin("nope")
    with pytest.raises(UserError, match="no run 'nope'"):
        async for _ in app.ajoin("nope"):
            pass


def test_threads_on_the_python_api_list_update_and_delete() -> None:
    app = counter_app()
    app.invoke({}, thread_id="a", thread_metadata={"owner": "ann"})
    app.invoke({}, thread_id="b")
    assert [t.thread_id for t in app.list_threads(metadata={"owner": "ann"})] == ["a"]
    assert [e.type for e in app.join(app.list_runs("a")[0].run_id)][-1] == "run_finished"
    updated = app.update_state("a", {"n": 10})
    assert updated.values == {"n": 10}
    assert updated.source == "update"
    assert app.invoke({}, thread_id="a") == {"n": 11}  # the next run starts from the update
    assert app.delete_thread("a") is True
    assert app.delete_thread("a") is False
    assert app.get_state("a").checkpoint_id is None  # gone: a new, empty thread
    with pytest.raises(UserError, match="not in the state schema"):
        app.update_state("b", {"nope": 1})


def test_resume_is_a_typed_flag_of_the_run_not_a_key_of_the_users_config() -> None:
    seen: list[tuple[bool, Any]] = []

    async def node(state: dict[str, Any], ctx: RunContext) -> None:
        seen.append((ctx.resume, ctx.config.get("resume")))

    g = StateGraph()
    g.add_node("n", node)
    g.set_entry_point("n")
    app = g.compile(InMemoryCheckpointer())
    app.invoke({}, {"thread_id": "t", "resume": "the user's own value"})
    assert seen == [(False, "the user's own value")]
