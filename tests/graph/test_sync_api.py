"""The sync API: stream from one thread, stop from another; invoke; errors surface plainly."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from tether import InMemoryCheckpointer, RunCancelledError, RunFinished, StateGraph, UserError


def blocking_app() -> tuple[Any, threading.Event]:
    entered = threading.Event()

    async def talk(state: dict[str, Any]) -> Any:
        yield "partial"
        entered.set()
        await anyio.sleep_forever()

    g = StateGraph()
    g.add_node("talk", talk)
    g.set_entry_point("talk")
    return g.compile(InMemoryCheckpointer()), entered


def test_stop_from_another_thread_ends_the_readers_stream() -> None:
    app, entered = blocking_app()
    events: list[Any] = []
    reader = threading.Thread(
        target=lambda: events.extend(app.stream("go", config={"thread_id": "s"}))
    )
    reader.start()
    assert entered.wait(10)
    assert app.stop({"thread_id": "s"}, reason="user clicked stop") is True
    reader.join(10)
    assert not reader.is_alive()
    assert isinstance(events[-1], RunFinished) and events[-1].status == "cancelled"
    assert events[-1].reason == "user clicked stop"
    last = app.get_state("s").values["messages"][-1]
    assert (last.content, last.status) == ("partial", "stopped")
    [run] = app.list_runs("s")
    assert run.status == "cancelled" and run.stop_reason == "user clicked stop"
    assert app.get_run(run.run_id) == run


def test_invoke_of_a_stopped_run_raises_run_cancelled() -> None:
    app, entered = blocking_app()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            app.invoke("go", thread_id="i")
        except RunCancelledError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert entered.wait(10)
    assert app.cancel_run(thread_id="i") is True
    caller.join(10)
    assert len(errors) == 1


def test_bad_config_is_refused_with_a_clear_error() -> None:
    app, _ = blocking_app()
    with pytest.raises(UserError, match="config must be a mapping"):
        app.stream("x", config="thread-1")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="thread_id must be"):
        app.stream("x", thread_id="")
