"""Process A of the cross-process flow tests: `python tests/cluster/_flow_node.py DSN REDIS PREFIX`.

It starts one run of the `asker` flow, reads its runtime stream and reports on stdout, one JSON
object a line: `{"run": id}` once the run started, `{"item": x}` per stream item, `{"ended":
true, "run_done": bool}` when the stream ended, then `{"status": ..., "result": ...}` at the
run's end. The test process (B) feeds the run and ends its stream through Redis.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tether.coordination.redis import RedisRunRegistry
from tether.flow import Flow, FlowData
from tether.storage.postgres import PostgresCheckpointer


async def ask_twice(data: FlowData) -> Any:
    data.put_into_stream("asking")
    first = await data.wait_for("Answer")
    data.put_into_stream(first)
    second = await data.wait_for("Answer")
    data.put_into_stream(second)  # dropped once B ended the stream
    return [first, second]


def make_flow(dsn: str, url: str, prefix: str) -> Flow:
    registry = RedisRunRegistry(url, prefix=prefix, lease=2.0)
    flow = Flow(checkpointer=PostgresCheckpointer(dsn), registry=registry, name="asker")
    flow.to(ask_twice).end()
    return flow


def say(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


async def main(dsn: str, url: str, prefix: str) -> None:
    flow = make_flow(dsn, url, prefix)
    stream = flow.aget_runtime_stream("question", thread_id="cross-flow")
    run = await stream.start()
    say({"run": run.run_id})
    async for item in stream:
        say({"item": item})
    say({"ended": True, "run_done": run.done})
    values = await run.result()
    record = await flow.aget_run(run.run_id)
    assert record is not None
    say({"status": record.status, "result": values["result"]})
    await flow.registry.aclose()
    await flow.checkpointer.aclose()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
