"""Flow inputs for runs in other processes: each live run's inbox list in Redis.

`Flow.send` / `asend` and `Flow.stop_stream` for a run elsewhere append to the run's inbox
(`SEND_INPUT`, only while the run is live) and publish an `input` notification. The executing
process drains the inbox into the run (`send`, `stop_stream`) on the notification, on resync and
on every heartbeat, one drain at a time, so inputs arrive in the order they were sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from redis.exceptions import RedisError

from ..handle import RunHandle
from ..serde import decode_value, encode_value
from .redis_context import RedisContext

__all__ = ["Inbox"]

log = logging.getLogger("tether.coordination")


class Inbox:
    """Sends inputs to runs' inboxes, and drains the inboxes of this process's runs."""

    def __init__(self, ctx: RedisContext) -> None:
        self._ctx = ctx
        # Serializes drains, so inputs of one name reach a run in the order they were sent.
        self._draining = anyio.Lock()

    async def send_input(self, run_id: str, name: str, value: Any) -> bool:
        """See `RedisRunRegistry.send_input`."""
        payload = json.dumps({"name": name, "value": encode_value(value, where="the input")})
        return await self._to_inbox(run_id, payload, "send input")

    async def close_stream(self, run_id: str) -> bool:
        """See `RedisRunRegistry.close_stream`."""
        return await self._to_inbox(run_id, json.dumps({"close_stream": True}), "end the stream")

    async def _to_inbox(self, run_id: str, payload: str, action: str) -> bool:
        ctx = self._ctx
        client = await ctx.client()
        keys = [ctx.key("run", run_id), ctx.key("inbox", run_id)]
        try:
            sent = await ctx.scripts.send_input(
                keys=keys, args=[run_id, payload, ctx.channel], client=client
            )
        except RedisError as exc:
            raise ctx.unavailable(f"{action} of run {run_id!r}", exc) from exc
        return bool(sent)

    async def drain(self, runs: list[RunHandle]) -> None:
        """Hand the inputs waiting in the runs' inboxes to the runs (called on an `input`
        notification, on resync and on every heartbeat, so none is left behind)."""
        client = self._ctx.redis
        if client is None:
            return
        async with self._draining:
            for handle in runs:
                send = getattr(handle, "send", None)  # a FlowRun; other runs take no input
                stop_stream = getattr(handle, "stop_stream", None)
                if send is None or stop_stream is None:
                    continue
                try:
                    payloads = await self._ctx.scripts.drain_input(
                        keys=[self._ctx.key("inbox", handle.run_id)], client=client
                    )
                except RedisError as exc:
                    log.warning("could not read the inputs of run %s: %s", handle.run_id, exc)
                    return
                for payload in payloads:
                    try:
                        data = json.loads(payload)
                        if data.get("close_stream"):
                            stop_stream()
                        else:
                            send(data["name"], decode_value(data["value"]))
                    except Exception:  # a malformed input must not take the registry down
                        log.exception("run %s: could not deliver input %r", handle.run_id, payload)
