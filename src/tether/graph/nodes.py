"""Graph nodes: how each kind of node is called, and how its output is collected.

Kinds, and what a stop does to each:
- `async def`: awaited in the run's cancel scope; a `now` stop cancels it at its next await.
- `async def` with `yield` (async generator): iterated in the scope; each item is streamed at once
  and folded into the step's output. On stop it is closed (`aclose()`), and what it yielded so far
  is kept, partial messages marked `stopped`.
- plain `def`: run in a worker thread. Python cannot kill a thread, so on stop it is *abandoned*: the
  run ends at once, the thread runs on until the function returns, and its result is discarded. It
  may poll `ctx.stop_requested` to return early.
- `def` with `yield`: each `next()` runs in a worker thread; on stop it is abandoned likewise.

A node takes `(state)`, `(state, ctx)` with a `RunContext`, or `(state, config)` with the config dict
(the second parameter's name decides: `config` gets the dict, anything else the context).

What a node yields or returns: a dict of state updates; a `Message` (streamed as a `message` event);
a `MessageDelta` (a `message_delta` event, appended to the message with its id); a `str` (a text
delta of the assistant message the node call is streaming: the one its last text `MessageDelta`
named, else a new message, one per node call); or None.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import anyio
import anyio.lowlevel

from ..context import RunContext
from ..errors import UserError
from ..events import MessageDeltaEvent, MessageEvent, NodeFinished, NodeStarted
from ..handle import RunHandle, TextKey
from ..ids import new_id
from ..interrupts import enter_node, leave_node
from ..messages import Message, MessageBuilder, MessageDelta
from ..state import StateSchema

__all__ = ["Node", "NodeOutput", "run_node"]

NodeKind = Literal["async", "agen", "sync", "syncgen"]
_CHECKPOINT_EVERY = 256  # items a generator may yield between two trips to the event loop
_DONE = object()


@dataclass(frozen=True, slots=True)
class Node:
    """A named node of a graph."""

    name: str
    fn: Callable[..., Any]
    kind: NodeKind
    second: Literal["none", "ctx", "config"]  # what the second argument is

    @classmethod
    def of(cls, name: str, fn: Callable[..., Any]) -> Node:
        if not callable(fn):
            raise UserError(f"node {name!r} must be a function, not {fn!r}")
        target = getattr(fn, "__call__", fn) if not inspect.isroutine(fn) else fn  # noqa: B004
        if inspect.isasyncgenfunction(target):
            kind: NodeKind = "agen"
        elif inspect.iscoroutinefunction(target):
            kind = "async"
        elif inspect.isgeneratorfunction(target):
            kind = "syncgen"
        else:
            kind = "sync"
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not params:
            raise UserError(f"node {name!r} must take the state as its first parameter")
        second: Literal["none", "ctx", "config"] = "none"
        if len(params) >= 2:
            second = "config" if params[1].name == "config" else "ctx"
        return cls(name, fn, kind, second)


@dataclass
class NodeOutput:
    """What one node call produced in the current step, so far."""

    node: str
    updates: list[dict[str, Any]] = field(default_factory=list)  # in the order produced
    messages: dict[str, Message] = field(default_factory=dict)  # whole messages, by id
    builders: dict[str, MessageBuilder] = field(default_factory=dict)  # streamed, still open
    text_builder: MessageBuilder | None = None  # the message that plain `str` yields append to
    text_key: TextKey = (None, "")  # (node, id of `text_builder`): its tokens' `emit_text` key
    finished: bool = False  # the node returned
    existing: list[Message] | None = None  # the messages the node saw: deltas extend these by id

    def update(self, schema: StateSchema, *, stopped: bool) -> tuple[dict[str, Any], list[Message]]:
        """The node's state update, and the messages it closed as `stopped`."""
        closed = [b.build("stopped" if stopped else "complete") for b in self.builders.values()]
        merged: dict[str, Any] = {}
        writes = [*self.updates]
        msgs = [*self.messages.values(), *closed]
        if msgs:
            writes.append({"messages": msgs})
        for write in writes:
            for key, value in write.items():
                channel = schema.channels.get(key)
                if key in merged and channel is not None and channel.reducer is not None:
                    merged[key] = channel.reducer(merged[key], value)
                else:
                    merged[key] = value
        return merged, (closed if stopped else [])


async def run_node(
    node: Node,
    state: dict[str, Any],
    ctx: RunContext,
    handle: RunHandle,
    out: NodeOutput,
    schema: StateSchema,
    resumes: tuple[Any, ...] = (),
) -> None:
    """Call `node` and collect its output into `out`; see the module docstring for stops.

    `resumes` are the answers its `interrupt()` calls return (`tether.interrupts`).
    """
    # Rebinding `ctx` drops the caller's context, which an idle node would otherwise keep.
    ctx = replace(ctx, _sink=lambda item: _collect(item, out, handle, schema))
    token = enter_node(node.name, resumes)
    try:
        await _run_node(node, state, ctx, handle, out, schema)
    finally:
        leave_node(token)


async def _run_node(
    node: Node,
    state: dict[str, Any],
    ctx: RunContext,
    handle: RunHandle,
    out: NodeOutput,
    schema: StateSchema,
) -> None:
    handle.emit(NodeStarted, node=node.name, step=ctx.step)
    out.existing = state.get("messages") if schema.has_messages else None
    args: tuple[Any, ...] = (state,)
    if node.second == "ctx":
        args = (state, ctx)
    elif node.second == "config":
        args = (state, ctx.config)
    try:
        if node.kind == "async":
            _collect(await node.fn(*args), out, handle, schema)
        elif node.kind == "sync":
            result = await anyio.to_thread.run_sync(lambda: node.fn(*args), abandon_on_cancel=True)
            _collect(result, out, handle, schema)
        elif node.kind == "agen":
            await _drain(node.fn(*args), out, handle, schema)
        else:
            gen = node.fn(*args)
            while (
                item := await anyio.to_thread.run_sync(next, gen, _DONE, abandon_on_cancel=True)
            ) is not _DONE:
                _collect(item, out, handle, schema)
    except Exception as exc:
        exc.add_note(f"in node {node.name!r}")
        raise
    for builder in out.builders.values():
        message = builder.build("complete")
        out.messages[message.id] = message
        handle.emit(MessageEvent, node=node.name, message=message)
    out.builders.clear()
    out.text_builder = None
    out.finished = True
    handle.emit(NodeFinished, node=node.name, step=ctx.step)


async def _drain(
    agen: AsyncGenerator[Any, None], out: NodeOutput, handle: RunHandle, schema: StateSchema
) -> None:
    """Collect every item an async-generator node yields; on cancel the generator is closed.

    The token hot path: a `str` that extends the open text message is folded and logged here,
    without a call to `_collect`. The loop visits the event loop every `_CHECKPOINT_EVERY` items,
    so a generator that never awaits cannot starve the readers or delay a stop.
    """
    emit_text, budget = handle.emit_text, _CHECKPOINT_EVERY
    async with aclosing(agen):
        async for item in agen:
            builder = out.text_builder
            if builder is not None and type(item) is str:
                builder.add_text(item)
                emit_text(out.text_key, item)
            else:
                _collect(item, out, handle, schema)
            budget -= 1
            if not budget:
                budget = _CHECKPOINT_EVERY
                await anyio.lowlevel.checkpoint()


def _collect(item: Any, out: NodeOutput, handle: RunHandle, schema: StateSchema) -> None:
    """Fold one yielded or returned item into `out`, streaming it as an event."""
    if item is None:
        return
    if type(item) is str:
        builder = out.text_builder
        if builder is None:  # the first text of this call, or its message was replaced
            builder = out.text_builder = MessageBuilder(new_id())
            out.builders[builder.id] = builder
            out.text_key = (out.node, builder.id)
        builder.add_text(item)
        handle.emit_text(out.text_key, item)
    elif isinstance(item, MessageDelta):
        builder = out.builders.get(item.id)
        if builder is None:
            builder = out.builders[item.id] = MessageBuilder(item.id, item.role)
            base = next((m for m in out.existing or () if m.id == item.id), None)
            if base is not None:  # a delta extends the message with its id (e.g. a resumed answer)
                builder.add(MessageDelta(id=item.id, role=base.role, content=base.content))
        if item.tool_calls or item.role != "assistant":
            builder.add(item)
        else:  # a text token: later `str`s extend this message (an agent's model stream does so)
            builder.add_text(item.content)
            if out.text_builder is not builder:
                out.text_builder, out.text_key = builder, (out.node, item.id)
            handle.emit_text(out.text_key, item.content)
            return
        handle.emit(
            MessageDeltaEvent,
            node=out.node,
            message_id=item.id,
            content=item.content,
            role=item.role,
            tool_calls=item.tool_calls,
        )
    elif isinstance(item, Message):
        if out.builders.pop(item.id, None) is out.text_builder:  # a whole message supersedes
            out.text_builder = None  # its deltas; later text starts a new one
        out.messages[item.id] = item
        handle.emit(MessageEvent, node=out.node, message=item)
    elif isinstance(item, list) and all(isinstance(m, Message) for m in item):
        for message in item:
            _collect(message, out, handle, schema)
    else:
        out.updates.append(schema.as_update(item, writer=out.node))
