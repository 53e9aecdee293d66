"""Long threads: a step's commit encodes only the messages it added or changed, and reading the
head decodes none, on every backend (BENCHMARKS.md row 7: cost independent of the thread's
length). Counted, not timed: `Message.model_dump` is what encoding a message costs, and
`Message.model_validate` what decoding one costs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from tests.storage.conformance import Backend, assert_same_checkpoint, chain, checkpoint

from tether.errors import UserError
from tether.ids import new_id
from tether.messages import Message
from tether.storage import Checkpointer

pytestmark = pytest.mark.anyio


class Counts:
    """How many messages were encoded and decoded since the last `reset()`."""

    def __init__(self) -> None:
        self.encoded = self.decoded = 0

    def reset(self) -> None:
        self.encoded = self.decoded = 0


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    found = Counts()
    dump, validate = Message.model_dump, Message.model_validate

    def counting_dump(self: Message, *args: Any, **kwargs: Any) -> dict[str, Any]:
        found.encoded += 1
        return dump(self, *args, **kwargs)

    def counting_validate(*args: Any, **kwargs: Any) -> Message:
        found.decoded += 1
        return validate(*args, **kwargs)

    monkeypatch.setattr(Message, "model_dump", counting_dump)
    monkeypatch.setattr(Message, "model_validate", staticmethod(counting_validate))
    return found


def history(size: int) -> list[Message]:
    return [
        Message.user(f"q{i}") if i % 2 == 0 else Message.assistant(f"a{i} " + "x" * 50)
        for i in range(size)
    ]


async def test_a_step_encodes_only_the_messages_it_changed(
    checkpointer: Checkpointer, counts: Counts
) -> None:
    tid = new_id()
    messages = history(60)
    (head,) = await chain(checkpointer, tid, [{"messages": messages, "n": 0}])
    steps: list[tuple[list[Message], int]] = []
    answer = Message.assistant("streamed")
    steps.append(([*messages, answer], 1))  # an answer appended
    longer = answer.model_copy(update={"content": "streamed, and more"})
    steps.append(([*messages, longer], 1))  # the last one replaced in place, as a stream does
    steps.append(([*messages[:10], *messages[11:], longer], 0))  # one removed from the middle
    steps.append(([*messages[:10], *messages[11:], longer, Message.tool("t", tool_call_id="c")], 1))
    for step, (values, encoded) in enumerate(steps, start=1):
        counts.reset()
        cp = checkpoint(tid, head.checkpoint_id, {"messages": values, "n": step}, step=step)
        await checkpointer.commit(checkpoint=cp)
        assert counts.encoded == encoded, f"step {step}"
        head = cp
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), head)


async def test_reading_the_head_decodes_no_message(
    backend: Backend, checkpointer: Checkpointer, counts: Counts
) -> None:
    tid = new_id()
    messages = history(60)
    first, second = await chain(
        checkpointer, tid, [{"messages": messages}, {"messages": [*messages, Message.user("?")]}]
    )
    counts.reset()
    for _ in range(3):
        assert_same_checkpoint(await checkpointer.get_checkpoint(tid), second)
    assert counts.decoded == 0

    # An older checkpoint, and the head seen by another process, are read from their rows.
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid, first.checkpoint_id), first)
    if backend.durable:
        counts.reset()
        other = backend.open()
        assert_same_checkpoint(await other.get_checkpoint(tid), second)
        assert counts.decoded == len(messages) + 1
        counts.reset()
        assert_same_checkpoint(await other.get_checkpoint(tid), second)  # now cached there
        assert counts.decoded == 0


async def test_a_new_message_that_cannot_be_stored_is_refused_after_shared_ones(
    checkpointer: Checkpointer,
) -> None:
    tid = new_id()
    messages = history(20)
    (head,) = await chain(checkpointer, tid, [{"messages": messages}])
    bad = Message.user("bad", metadata={"f": object()})
    for values in ([*messages, bad], [*messages[:5], bad, *messages[5:]]):
        with pytest.raises(UserError, match=r"state\['messages'\]"):
            await checkpointer.commit(
                checkpoint=checkpoint(tid, head.checkpoint_id, {"messages": values})
            )
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), head)


async def test_a_checkpoint_id_is_committed_once(checkpointer: Checkpointer) -> None:
    tid = new_id()
    first, second = await chain(checkpointer, tid, [{"n": 0}, {"n": 1}])
    reused = replace(first, parent_id=second.checkpoint_id, values={"n": 2})
    with pytest.raises(UserError, match="already has a checkpoint"):
        await checkpointer.commit(checkpoint=reused)
    assert [cp.checkpoint_id for cp in await checkpointer.list_checkpoints(tid)] == [
        second.checkpoint_id,
        first.checkpoint_id,
    ]
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid, first.checkpoint_id), first)


async def test_mutating_a_committed_or_returned_message_list_changes_nothing_stored(
    checkpointer: Checkpointer,
) -> None:
    """The messages are shared, immutable objects; the lists that hold them never are."""
    tid = new_id()
    messages = history(10)
    (first,) = await chain(checkpointer, tid, [{"messages": messages}])
    kept = list(messages)
    messages.append(Message.user("appended after the commit"))
    messages[0] = Message.user("replaced after the commit")
    got = await checkpointer.get_checkpoint(tid)
    assert got is not None
    assert got.values["messages"] == kept
    edited = Message.user("replaced in a read")
    got.values["messages"].pop()
    got.values["messages"][0] = edited

    second = checkpoint(tid, first.checkpoint_id, {"messages": got.values["messages"]}, step=1)
    await checkpointer.commit(checkpoint=second)  # the parent's objects, in a changed list
    got.values["messages"].clear()
    assert_same_checkpoint(
        await checkpointer.get_checkpoint(tid, first.checkpoint_id),
        replace(first, values={"messages": kept}),
    )
    assert_same_checkpoint(
        await checkpointer.get_checkpoint(tid),
        replace(second, values={"messages": [edited, *kept[1:-1]]}),
    )
