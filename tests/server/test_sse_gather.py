"""SSE gathering: after writing text deltas, a run's stream holds the next events for an interval
that grows with the number of open streams, and writes them together; a stop requested through
the server is written at once.

The tests set the interval to an hour, so "held until the interval ends" and "written at once" are
told apart without timing anything: whatever is written comes from a flush, never from the timer.
"""

from __future__ import annotations

import dataclasses

import anyio
import httpx
import pytest

from tether.errors import UserError
from tether.server import create_app, sse
from tether.testing import Gate, ScriptedModel

from ._chat import chat_app
from .test_api import HI, sse_events
from .test_disconnect import FakeClient

pytestmark = pytest.mark.anyio

WATCHDOG = 10
HOUR = 3600.0


def bodies(client: FakeClient) -> list[bytes]:
    """The body of each `send` of the response, in order."""
    return [m["body"] for m in client.sent if m["type"] == "http.response.body" and m["body"]]


@pytest.fixture
def hour_long_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """One open stream gathers for the longest interval (`sse_flush_interval`, set per test)."""
    monkeypatch.setattr(sse, "WRITE_RATE", 1e-9)


@pytest.mark.usefixtures("hour_long_interval")
async def test_deltas_after_a_delta_write_are_held_for_the_interval_and_a_stop_ends_it() -> None:
    gates = Gate("before a"), Gate("after a"), Gate("after c"), Gate("after e")
    app = chat_app(
        ScriptedModel([gates[0], "a", gates[1], "b", "c", gates[2], "d", "e", gates[3], "f"])
    )
    api = create_app(app)
    api.state.tether = dataclasses.replace(api.state.tether, sse_flush_interval=HOUR)
    stream = FakeClient(api, "POST", "/threads/t1/runs/stream", HI)
    with anyio.fail_after(WATCHDOG) as watchdog:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(stream.run)
            await gates[0].reached()
            await stream.wait_for(lambda b: b"event: node_started" in b)  # not held: at once
            handle = app.registry.local(stream.headers["x-tether-run-id"])
            assert handle is not None
            gates[0].release()
            await gates[1].reached()
            # The first delta after another kind of event is not held either (an hour would
            # time the watchdog out).
            await stream.wait_for(lambda b: b'"content":"a"' in b)
            gates[1].release()
            await gates[2].reached()
            await anyio.wait_all_tasks_blocked()
            assert b'"content":"b"' not in stream.body  # held: the interval has not ended
            writes = len(bodies(stream))

            sse.flush_now(handle)  # as the end of the interval does
            await stream.wait_for(lambda b: b'"content":"c"' in b)
            (together,) = bodies(stream)[writes:]  # one write for both
            assert b'"content":"b"' in together and b'"content":"c"' in together

            gates[2].release()  # "d" and "e" come, and are held again
            await gates[3].reached()
            await anyio.wait_all_tasks_blocked()
            assert b'"content":"d"' not in stream.body
            r = await client.post(f"/threads/t1/runs/{handle.run_id}/cancel")
            assert r.json()["stopped"] is True
            await stream.done.wait()  # the stop ended the wait, and its end was not held
    assert not watchdog.cancelled_caught
    events = sse_events(stream.body.decode())
    assert events[-1][0] == "run_finished"
    assert events[-1][2]["status"] == "cancelled"
    assert "".join(d["content"] for e, _, d in events if e == "message_delta") == "abcde"
    assert (sse._gathering.open, sse._gathering.waiting) == (0, {})  # nothing left behind


def test_the_interval_grows_with_the_open_streams_up_to_the_limit() -> None:
    assert sse.gather_interval(1, 0.2) == 1 / sse.WRITE_RATE
    assert sse.gather_interval(100, 0.2) == 100 / sse.WRITE_RATE < 0.2
    assert sse.gather_interval(100_000, 0.2) == 0.2


def test_the_flush_interval_is_checked() -> None:
    app = chat_app(ScriptedModel())
    with pytest.raises(UserError, match="sse_flush_interval"):
        create_app(app, sse_flush_interval=100)
    assert create_app(app, sse_flush_interval=0).state.tether.sse_flush_interval == 0
