"""Agno side of `bench/compare/` (see `run.py`).

Stop API: `agent.acancel_run(run_id)`, Agno's documented run cancellation. Agno has no scripted
test model, so `FakeModel` implements Agno's own `Model` interface (`ainvoke_stream` yielding
`ModelResponse`s), the way a provider does; no network. The store is Agno's `InMemoryDb`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from _scenarios import (
    BLOCK,
    SETTLE,
    TICK,
    TICKS_BEFORE_STOP,
    TOOL_SLEEP,
    Counter,
    latency_summary,
    report,
    throughput,
    wait_for,
)
from agno.agent import Agent
from agno.db.in_memory import InMemoryDb
from agno.models.base import Model
from agno.models.response import ModelResponse
from agno.run.agent import RunEvent
from agno.run.base import RunStatus


@dataclass
class FakeModel(Model):
    """A scripted model: `mode` picks what it streams (see `_script`)."""

    id: str = "fake"
    name: str = "FakeModel"
    provider: str = "fake"
    mode: str = "tick"
    limit: int = 10**9
    items: int = 0
    counter: Counter = field(default_factory=Counter)

    def invoke(self, *args: Any, **kwargs: Any) -> ModelResponse:
        raise NotImplementedError("the benchmark streams")

    async def ainvoke(self, messages: list[Any], *args: Any, **kwargs: Any) -> ModelResponse:
        whole = ModelResponse(role="assistant", content="")
        async for part in self._script(messages):
            whole.content += part.content or ""
            if part.tool_calls:
                whole.tool_calls = part.tool_calls
        return whole

    def invoke_stream(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the benchmark uses the async API")

    async def ainvoke_stream(
        self, messages: list[Any], *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async for item in self._script(messages):
            yield item

    def _parse_provider_response(self, response: Any, **kwargs: Any) -> ModelResponse:
        return response

    def _parse_provider_response_delta(self, response: Any) -> ModelResponse:
        return response

    async def _script(self, messages: list[Any]) -> AsyncIterator[ModelResponse]:
        last = messages[-1]
        if self.mode == "tick":
            for _ in range(self.limit):
                await asyncio.sleep(TICK)
                self.counter.tick()
                yield ModelResponse(role="assistant", content="tok ")
        elif self.mode == "block":
            yield ModelResponse(role="assistant", content="started ")
            if self.limit < 10**9:
                return
            self.counter.tick()
            await asyncio.sleep(BLOCK)
            self.counter.tick()
            yield ModelResponse(role="assistant", content="done")
        elif self.mode == "tools":
            if last.role == "user" and last.content == "use the tools":
                calls = [
                    {
                        "id": f"call_{n}",
                        "type": "function",
                        "function": {"name": n, "arguments": "{}"},
                    }
                    for n in ("quick", "slow_a", "slow_b")
                ]
                yield ModelResponse(role="assistant", tool_calls=calls)
            elif last.role == "tool":
                yield ModelResponse(role="assistant", content="the tools answered")
            else:
                yield ModelResponse(role="assistant", content="the answer after the stop")
        else:  # throughput
            for _ in range(self.items):
                yield ModelResponse(role="assistant", content="tok ")


async def _consume(agent: Agent, text: str, session: str, ids: list[str]) -> int:
    ids.append(str(uuid.uuid4()))
    count = 0
    async for event in agent.arun(text, stream=True, session_id=session, run_id=ids[0]):
        if event.event == RunEvent.run_content.value:
            count += 1
        elif event.event == RunEvent.run_cancelled.value:
            break
    return count


async def stop_scenario(shape: str, rounds: int) -> dict[str, Any]:
    latencies, after = [], 0
    kept: dict[str, Any] = {}
    for i in range(rounds):
        model = FakeModel(mode="tick" if shape == "ticking" else "block")
        agent = Agent(model=model, db=InMemoryDb())
        session, ids = f"s{i}", []
        task = asyncio.ensure_future(_consume(agent, "go", session, ids))  # noqa: TID251  # a plain task, awaited below
        want = TICKS_BEFORE_STOP if shape == "ticking" else 1
        await wait_for(lambda c=model.counter, w=want, ids=ids: c.total >= w and bool(ids))
        model.counter.stop()
        start = time.perf_counter()
        await agent.acancel_run(ids[0])
        await task
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(SETTLE if shape == "ticking" else BLOCK + SETTLE)
        after += model.counter.after_stop
        if i == 0:
            run = await agent.aget_last_run_output(session_id=session)
            kept["partial_saved"] = run is not None and bool(run.content)
            kept["marked"] = None if run is None else str(getattr(run.status, "value", run.status))
            model.limit = 2
            result = await agent.arun("again", session_id=session)
            expected = "tok tok " if shape == "ticking" else "started "
            kept["next_run_ok"] = (
                result.status == RunStatus.completed and result.content == expected
            )
    return {**latency_summary(latencies), "work_after_stop": after, **kept}


async def tools_scenario() -> dict[str, Any]:
    done: list[str] = []
    started = [0]

    async def quick() -> str:
        """A tool that answers at once."""
        done.append("quick")
        return "quick done"

    async def slow_a() -> str:
        """A slow tool."""
        started[0] += 1
        await asyncio.sleep(TOOL_SLEEP)
        done.append("slow_a")
        return "a done"

    async def slow_b() -> str:
        """Another slow tool."""
        started[0] += 1
        await asyncio.sleep(TOOL_SLEEP)
        done.append("slow_b")
        return "b done"

    agent = Agent(model=FakeModel(mode="tools"), tools=[quick, slow_a, slow_b], db=InMemoryDb())
    ids: list[str] = []
    task = asyncio.ensure_future(_consume(agent, "use the tools", "tools", ids))  # noqa: TID251  # a plain task, awaited below
    await wait_for(lambda: started[0] == 2 and bool(ids))
    before = len(done)
    start = time.perf_counter()
    await agent.acancel_run(ids[0])
    await task
    latency = time.perf_counter() - start
    await asyncio.sleep(TOOL_SLEEP + SETTLE)
    messages = await agent.aget_session_messages(session_id="tools")
    calls = {c["id"] for m in messages if m.role == "assistant" for c in (m.tool_calls or [])}
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    result = await agent.arun("go on", session_id="tools")
    return {
        "stop_ms": latency * 1e3,
        "tools_finished_after_stop": len(done) - before,
        "every_call_answered": calls <= answered,
        "next_turn_ok": result.status == RunStatus.completed
        and result.content == "the answer after the stop",
    }


async def stream_agno(n: int) -> int:
    agent = Agent(model=FakeModel(mode="throughput", items=n), db=InMemoryDb())
    return await _consume(agent, "go", "throughput", [])


async def main() -> None:
    logging.getLogger("agno").setLevel(logging.WARNING)  # one INFO line per cancel otherwise
    results = {
        "stop_ticking": await stop_scenario("ticking", 10),
        "stop_blocked": await stop_scenario("blocked", 5),
        "tools": await tools_scenario(),
        "throughput": await throughput(stream_agno),
    }
    report("Agno", version("agno"), "agent.acancel_run(run_id) (documented)", results)


if __name__ == "__main__":
    asyncio.run(main())
