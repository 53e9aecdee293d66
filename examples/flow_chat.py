"""Seed 003's second demo on tether: an interactive loop of input -> streamed reply -> input.

Run it with `python examples/flow_chat.py` (the local SmolLM2 model, from the `local` extra) or
`python examples/flow_chat.py --scripted` (canned replies, no model needed). Type `exit` to end.

The flow is the seed's, almost line for line, with two differences:
- `get_input` does not call `input()`, which would block the event loop. It puts a prompt into the
  stream and awaits `data.wait_for("UserInput")`; the main thread reads the line and feeds it with
  `stream.send("UserInput", line)`. Outside input and the flow's own events are separate channels,
  so the internal event is called `Question` here.
- The reply is streamed token by token from a tether model, and the conversation is kept in the
  flow's stored state, `data.state["messages"]`. If the run is stopped mid-reply (Ctrl+C), the
  partial reply is kept there with `status="stopped"`, and the next run on the same thread sees it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO

from tether.flow import Flow, FlowData, SyncRuntimeStream
from tether.messages import Message
from tether.models.base import Model, ModelError, TextDelta
from tether.storage.base import Checkpointer

PROMPT = "Question (type 'exit' to stop): "
"""The stream item that asks the caller for a line of input."""

SCRIPTED_REPLIES = [
    ["Hello", "!", " I am", " a scripted", " model", "."],
    ["tether", " stops", " all", " the", " way", "."],
]


def build_chat_flow(model: Model, *, checkpointer: Checkpointer | None = None) -> Flow:
    """The chat flow: `get_input` -> `Question` -> `stream_reply` -> `Loop` -> `get_input`."""
    flow = Flow(checkpointer=checkpointer, name="flow-chat")

    async def get_input(data: FlowData) -> str:
        data.put_into_stream(PROMPT)
        user_input = str(await data.wait_for("UserInput")).strip()
        if user_input.lower() == "exit":
            data.stop_stream()
            return "exit"
        data.put_into_stream(f"\n[user] {user_input}\n")
        await data.async_emit("Question", user_input)
        return "next"

    async def stream_reply(data: FlowData) -> None:
        data.put_into_stream("[assistant] ")
        history: list[Message] = data.state.setdefault("messages", [])
        history.append(Message.user(data.value))
        reply: list[str] = []
        done = False
        try:
            async with model.stream(list(history)) as deltas:
                async for delta in deltas:
                    if isinstance(delta, TextDelta):
                        reply.append(delta.text)
                        data.put_into_stream(delta.text)
            done = True
        except ModelError as exc:
            data.put_into_stream(f"\n[error] {exc}\n")
            data.stop_stream()
            return
        finally:
            # Also on a stop: the partial reply is kept, marked stopped, and checkpointed.
            status = "complete" if done else "stopped"
            history.append(Message.assistant("".join(reply), status=status))
        data.put_into_stream("\n")
        await data.async_emit("Loop", None)

    # This loop is stream-driven, so we don't set a default result with end().
    flow.to(get_input)
    flow.when("Question").to(stream_reply)
    flow.when("Loop").to(get_input)
    return flow


def chat(
    model: Model,
    *,
    inputs: Iterable[str] | None = None,
    checkpointer: Checkpointer | None = None,
    thread_id: str | None = None,
    out: TextIO | None = None,
) -> SyncRuntimeStream:
    """Chat until `exit`, printing the runtime stream; returns the stream (its `run` is the run).

    Args:
        model: The model that writes the replies.
        inputs: The lines to answer the prompts with (echoed); `None` reads them from stdin.
        checkpointer: Where the run is stored; SQLite under `./.tether/` by default.
        thread_id: The conversation to continue; a new one by default.
        out: Where to print; stdout by default.
    """
    out = out or sys.stdout
    flow = build_chat_flow(model, checkpointer=checkpointer)
    lines = iter(inputs) if inputs is not None else None
    stream = flow.get_runtime_stream("start", timeout=None, thread_id=thread_id)
    for event in stream:
        if event == PROMPT:
            print(PROMPT, end="", flush=True, file=out)
            stream.send("UserInput", _next_line(lines, out))
            continue
        print(event, end="", flush=True, file=out)
    stream.wait()  # `exit` ended the stream; let the run finish and be stored
    return stream


def _next_line(lines: Iterator[str] | None, out: TextIO) -> str:
    if lines is not None:
        line = next(lines, "exit")
        print(line, file=out)
        return line
    try:
        return input()
    except EOFError:
        return "exit"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scripted", action="store_true", help="use canned replies instead of the local model"
    )
    args = parser.parse_args(argv)
    model: Model
    if args.scripted:
        from tether.testing import ScriptedModel

        model = ScriptedModel(*SCRIPTED_REPLIES, default_reply="(no more scripted replies)")
    else:
        from tether.models import LocalModel

        model = LocalModel()
    chat(model)


if __name__ == "__main__":
    main()
