"""`MessageList`, the list `add_messages` returns: a plain list to its users, whose trace (the id
index and the origin storage stamps on it) lives exactly as long as nothing changes the list.
Work is counted (bytes allocated, traces present), never timed.
"""

from __future__ import annotations

import copy
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from tether.messages import Message, MessageDelta, MessageList, add_messages
from tether.serde import decode_value, encode_value


def history(size: int) -> MessageList:
    merged = add_messages(None, [Message.user(f"q{i}") for i in range(size)])
    assert isinstance(merged, MessageList)
    return merged


def test_the_merge_result_reads_compares_and_serializes_as_a_plain_list() -> None:
    merged = history(3)
    plain = list(merged)
    assert merged == plain and plain == merged
    assert repr(merged) == repr(plain)
    assert json.dumps([m.id for m in merged]) == json.dumps([m.id for m in plain])
    assert decode_value(encode_value(merged)) == plain
    assert merged[1:] == plain[1:] and merged[-1] is plain[-1]


CHANGES: dict[str, Callable[[MessageList, Message], Any]] = {
    "append": lambda lst, m: lst.append(m),
    "extend": lambda lst, m: lst.extend([m]),
    "insert": lambda lst, m: lst.insert(0, m),
    "setitem": lambda lst, m: lst.__setitem__(0, m),
    "setslice": lambda lst, m: lst.__setitem__(slice(0, 1), [m]),
    "delitem": lambda lst, m: lst.__delitem__(0),
    "iadd": lambda lst, m: lst.__iadd__([m]),
    "imul": lambda lst, m: lst.__imul__(1),
    "pop": lambda lst, m: lst.pop(),
    "remove": lambda lst, m: lst.remove(lst[0]),
    "clear": lambda lst, m: lst.clear(),
    "sort": lambda lst, m: lst.sort(key=lambda x: x.content, reverse=True),
    "reverse": lambda lst, m: lst.reverse(),
    "init": lambda lst, m: lst.__init__([m]),  # type: ignore[misc]  # re-initializing in place
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_through_the_list_drops_its_trace(change: str) -> None:
    merged = history(4)
    assert merged.trace is not None
    CHANGES[change](merged, Message.user("new"))
    assert merged.trace is None
    # and a merge of the changed list starts over from its items: the result is exact
    again = add_messages(merged, Message.user("after"))
    assert [m.content for m in again] == [*(m.content for m in merged), "after"]


def test_copies_are_new_lists_without_a_trace() -> None:
    merged = history(3)
    for other in (copy.copy(merged), copy.deepcopy(merged)):
        assert isinstance(other, MessageList)
        assert other == merged
        assert other.trace is None


def test_a_second_merge_into_the_same_list_is_exact() -> None:
    """The first merge takes the id index over from its left operand; a second one must not
    trust what the first one added to it."""
    left = history(3)
    first = add_messages(left, [Message.user("a", id="a")])
    second = add_messages(
        left, [Message.user("b", id="b"), Message.user("q0 again", id=left[0].id)]
    )
    assert [m.content for m in first] == ["q0", "q1", "q2", "a"]
    assert [m.content for m in second] == ["q0 again", "q1", "q2", "b"]
    third = add_messages(first, [Message.user("b2", id="b"), Message.user("a2", id="a")])
    assert [m.content for m in third] == ["q0", "q1", "q2", "a2", "b2"]


def test_deltas_and_replacements_merge_by_id_as_before() -> None:
    left = history(2)
    merged = add_messages(
        left, [MessageDelta(id="x", content="He"), MessageDelta(id="x", content="y")]
    )
    merged = add_messages(merged, MessageDelta(id=left[0].id, content="!"))
    assert [m.content for m in merged] == ["q0!", "q1", "Hey"]
    # duplicate ids in a plain left list: the last one is the one replaced
    dup = Message.user("dup", id="d")
    merged = add_messages([dup, Message.user("mid"), dup], Message.user("new", id="d"))
    assert [m.content for m in merged] == ["dup", "mid", "new"]


def test_a_replacement_behind_the_lists_methods_is_caught_by_the_merge() -> None:
    """`list.__setitem__` on the base class bypasses the trace; the merge checks every index hit
    against the message it finds there, and indexes again on a mismatch."""
    left = add_messages(MessageList.traced(history(3), object()), [])  # with an index and origin
    first = left[0]
    list.__setitem__(left, 0, Message.user("stranger"))
    assert left.trace is not None  # not seen: the documented limit
    merged = add_messages(left, [Message.user("q0 replaced", id=first.id)])
    assert [m.content for m in merged] == ["stranger", "q1", "q2", "q0 replaced"]
    assert (trace := merged.trace) is not None and trace.origin is None


def test_a_length_change_behind_the_lists_methods_drops_the_trace() -> None:
    left = history(3)
    list.append(left, Message.user("behind"))
    assert left.trace is None


def test_the_merge_passes_the_origin_on_up_to_the_first_replaced_message() -> None:
    origin = object()
    read = MessageList.traced(history(5), origin)
    appended = add_messages(read, Message.user("new"))
    assert (trace := appended.trace) is not None
    assert (trace.origin, trace.shared) == (origin, 5)
    replaced = add_messages(appended, Message.user("q2 again", id=read[2].id))
    assert (trace := replaced.trace) is not None
    assert (trace.origin, trace.shared) == (origin, 2)
    assert add_messages(history(2), Message.user("x")).trace.origin is None  # type: ignore[union-attr]


def test_a_stamp_after_a_change_does_nothing() -> None:
    merged = history(3)
    trace = merged.trace
    assert trace is not None
    merged.append(Message.user("late"))
    merged.stamp(trace, object())
    assert merged.trace is None and trace.origin is None


def _allocated(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_merging_into_an_unchanged_list_builds_no_id_index() -> None:
    """Beyond the new list itself (one pointer per message), merging one message into a
    merge result allocates the same at 20 and 5,000 messages: no index of the history."""
    small, large = history(20), history(5_000)
    grown = _allocated(lambda: add_messages(large, Message.user("x")))
    base = _allocated(lambda: add_messages(small, Message.user("x")))
    pointers = 8 * (5_000 - 20)
    assert grown - base < pointers * 1.25, (grown, base)
    # A plain list still gets indexed, which costs several times the list itself.
    plain = _allocated(lambda: add_messages(list(large), Message.user("x")))
    assert plain - base > pointers * 3, (plain, base)
