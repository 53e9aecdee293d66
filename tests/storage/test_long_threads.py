"""Long threads: a step's commit encodes only the messages it added or changed, and reading the
head decodes none, on every backend (BENCHMARKS.md row 7: cost independent of the thread's
length). Counted, not timed: `Message.model_dump` is what encoding a message costs, and
`Message.model_validate` what decoding one costs.
"""

from __future__ import annotations

import random
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest
from tests.storage.conformance import Backend, assert_same_checkpoint, chain, checkpoint

from tether.errors import UserError
from tether.ids import new_id
from tether.messages import Message, MessageDelta, add_messages
from tether.storage import Checkpoint, Checkpointer, InMemoryCheckpointer

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


# Steps whose messages channel is an `add_messages` result, as the engine commits them.


def merged_history(size: int) -> list[Message]:
    return add_messages(None, history(size))


async def test_a_merged_step_encodes_only_the_messages_it_added(
    checkpointer: Checkpointer, counts: Counts
) -> None:
    tid = new_id()
    messages = merged_history(60)
    (head,) = await chain(checkpointer, tid, [{"messages": messages}])
    answer = Message.assistant("streamed")
    steps: list[tuple[Any, int]] = [
        (answer, 1),  # an answer appended
        (MessageDelta(id=answer.id, content=", and more"), 1),  # the last one replaced
        (messages[10].model_copy(update={"content": "edited"}), 1),  # one in the middle
        ([Message.user("u"), Message.assistant("a")], 2),
        ([], 0),  # nothing changed
    ]
    for step, (update, encoded) in enumerate(steps, start=1):
        messages = add_messages(messages, update)
        kept = list(messages)
        counts.reset()
        cp = checkpoint(tid, head.checkpoint_id, {"messages": messages}, step=step)
        await checkpointer.commit(checkpoint=cp)
        assert counts.encoded == encoded, f"step {step}"
        head = replace(cp, values={"messages": kept})
    assert_same_checkpoint(await checkpointer.get_checkpoint(tid), head)


def _peak(before: int) -> int:
    return tracemalloc.get_traced_memory()[1] - before


async def test_a_merged_step_commit_allocates_the_same_at_any_length() -> None:
    """The memory backend stores a step as a change of its parent's messages and skips the ones
    the merge says it shares, so a commit copies and compares no message of the history. (The SQL
    backends keep the head's messages in a tuple per commit: one pointer per message.)"""
    checkpointer = InMemoryCheckpointer()
    peaks = []
    for size in (20, 5_000):
        tid = new_id()
        messages = merged_history(size)
        (head,) = await chain(checkpointer, tid, [{"messages": messages}])
        messages = add_messages(messages, Message.assistant("answer"))
        cp = checkpoint(tid, head.checkpoint_id, {"messages": messages}, step=1)
        tracemalloc.start()
        try:
            await checkpointer.commit(checkpoint=cp)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    small, large = peaks
    # 5,000 more messages would be 40,000 bytes for a copy of the list, as much again to compare it
    assert large - small < 4_000, peaks


MUTATIONS: dict[str, Any] = {
    "append": lambda lst, m, r: lst.append(m),
    "insert": lambda lst, m, r: lst.insert(r.randrange(len(lst) + 1), m),
    "setitem": lambda lst, m, r: lst.__setitem__(r.randrange(len(lst)), m),
    "setslice": lambda lst, m, r: lst.__setitem__(slice(1, 3), [m]),
    "delitem": lambda lst, m, r: lst.__delitem__(r.randrange(len(lst))),
    "extend": lambda lst, m, r: lst.extend([m]),
    "iadd": lambda lst, m, r: lst.__iadd__([m]),
    "pop": lambda lst, m, r: lst.pop(0),
    "remove": lambda lst, m, r: lst.remove(lst[-1]),
    "sort": lambda lst, m, r: lst.sort(key=lambda x: x.content),
    "reverse": lambda lst, m, r: lst.reverse(),
    "base-class append": lambda lst, m, r: list.append(lst, m),  # bypasses the subclass
}


async def test_merged_histories_stay_exact_through_edits_in_place_reads_and_rollbacks(
    checkpointer: Checkpointer,
) -> None:
    """Merges, changes made to a committed list in place (every list method), re-reads, lists read
    from older checkpoints and from another thread, checked step by step: the skipped prefix is
    never wrong."""
    rng = random.Random(20261207)
    other = new_id()
    (elsewhere,) = await chain(checkpointer, other, [{"messages": merged_history(5)}])
    tid = new_id()
    messages: list[Message] = merged_history(8)
    committed: list[Checkpoint] = []
    for step in range(150):
        fresh = Message.user(f"m{step} " + "x" * rng.randrange(20))
        op = rng.choice(["append", "append", "stream", "edit", "mutate", "reread", "rollback"])
        if op == "append":
            messages = add_messages(messages, fresh)
        elif op == "stream":
            messages = add_messages(messages, MessageDelta(id=messages[-1].id, content="+"))
        elif op == "edit":
            target = messages[rng.randrange(len(messages))]
            messages = add_messages(messages, target.model_copy(update={"content": f"e{step}"}))
        elif op == "mutate":
            name = rng.choice(sorted(MUTATIONS))
            MUTATIONS[name](messages, fresh, rng)
            if not messages:
                messages.append(fresh)
        elif op == "reread":
            got = await checkpointer.get_checkpoint(tid) if committed else None
            messages = got.values["messages"] if got is not None else messages
        elif committed:  # rollback: continue from an older checkpoint's list, or another thread's
            source = rng.choice([*committed, elsewhere])
            got = await checkpointer.get_checkpoint(source.thread_id, source.checkpoint_id)
            assert got is not None
            messages = add_messages(got.values["messages"], fresh)
        kept = list(messages)
        parent = committed[-1].checkpoint_id if committed else None
        cp = checkpoint(tid, parent, {"messages": messages, "step": step}, step=step)
        await checkpointer.commit(checkpoint=cp)
        committed.append(replace(cp, values={"messages": kept, "step": step}))
        assert_same_checkpoint(
            await checkpointer.get_checkpoint(tid, cp.checkpoint_id), committed[-1]
        )
    for cp in committed:
        assert_same_checkpoint(await checkpointer.get_checkpoint(tid, cp.checkpoint_id), cp)


async def test_a_long_run_of_steps_without_reads_reads_back_exactly(
    checkpointer: Checkpointer,
) -> None:
    """600 steps, each adding a message and replacing one, none read back until the end."""
    tid = new_id()
    messages = merged_history(4)
    committed: list[Checkpoint] = []
    for step in range(600):
        messages = add_messages(
            messages,
            [
                messages[step % 4].model_copy(update={"content": f"s{step}"}),
                Message.user(f"n{step}"),
            ],
        )
        parent = committed[-1].checkpoint_id if committed else None
        cp = checkpoint(tid, parent, {"messages": messages}, step=step)
        await checkpointer.commit(checkpoint=cp)
        committed.append(replace(cp, values={"messages": list(messages)}))
    for cp in (committed[-1], committed[300], committed[0], committed[-2]):
        assert_same_checkpoint(await checkpointer.get_checkpoint(tid, cp.checkpoint_id), cp)
