"""Seed 003's first demo on tether: a flow pushes three progress items into its runtime stream,
then ends the stream, and the caller prints each item as it arrives.

Run it with `python examples/flow_runtime_stream.py`. Expected output:

    [stream] {'step': 1, 'status': 'working'}
    [stream] {'step': 2, 'status': 'working'}
    [stream] {'step': 3, 'status': 'working'}

Unlike TriggerFlow, the run is a tether run: it is recorded (`flow.get_run(run_id)`), its items are
kept in its event log, and breaking out of the `for` loop early stops it. `stop_stream()` only
ends the stream: the run goes on (here it returns `"done"`), and `stream.wait()` waits for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from tether.flow import Flow, FlowData, SyncRuntimeStream
from tether.storage.base import Checkpointer


def build_flow(checkpointer: Checkpointer | None = None) -> Flow:
    """The demo's flow: one handler that streams three steps, then ends the stream."""
    flow = Flow(checkpointer=checkpointer, name="runtime-stream-demo")

    async def stream_steps(data: FlowData) -> str:
        for i in range(3):
            data.put_into_stream({"step": i + 1, "status": "working"})
            await anyio.sleep(0.05)
        data.stop_stream()
        return "done"

    flow.to(stream_steps).end()
    return flow


def triggerflow_runtime_stream_demo(
    flow: Flow | None = None, *, show: Callable[..., Any] = print
) -> SyncRuntimeStream:
    """Run the demo and print the stream; returns the stream (its `run` is the run)."""
    flow = flow or build_flow()
    stream = flow.get_runtime_stream("start")
    for event in stream:
        show("[stream]", event)
    # The stream ended at stop_stream(); the run itself returns "done" right after. Wait for it,
    # so that it is stored as completed before the program exits.
    stream.wait()
    return stream


if __name__ == "__main__":
    triggerflow_runtime_stream_demo()
