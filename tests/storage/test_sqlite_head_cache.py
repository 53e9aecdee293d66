"""SQLite's cached head read: `get_checkpoint(thread)` reuses the messages of the checkpoint this
process last wrote or read, and only while that checkpoint is still the thread's head."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from tether.ids import new_id
from tether.messages import Message
from tether.storage import Checkpoint
from tether.storage.sqlite import SqliteCheckpointer


def _checkpoint(thread: str, parent: str | None, messages: list[Message], step: int) -> Checkpoint:
    return Checkpoint(
        checkpoint_id=new_id(),
        thread_id=thread,
        parent_id=parent,
        run_id=None,
        step=step,
        values={"messages": messages, "n": step},
    )


def test_head_written_by_another_process_is_read_not_the_cached_one(tmp_path: Path) -> None:
    path = os.fspath(tmp_path / "t.db")
    thread = new_id()

    async def main() -> None:
        with anyio.fail_after(30) as watchdog:
            async with SqliteCheckpointer(path) as a, SqliteCheckpointer(path) as b:
                hi = Message.user("hi")
                first = _checkpoint(thread, None, [hi], 1)
                await a.commit(checkpoint=first)  # `a` caches `first`
                got = await a.get_checkpoint(thread)
                assert got is not None
                assert got.values == {"messages": [hi], "n": 1}
                got.values["messages"].append(Message.user("sneaky"))  # the caller's copy

                second = _checkpoint(thread, first.checkpoint_id, [hi, Message.assistant("yo")], 2)
                await b.commit(checkpoint=second)  # another writer moves the head
                head = await a.get_checkpoint(thread)
                assert head is not None
                assert head.checkpoint_id == second.checkpoint_id
                assert head.values == second.values

                again = await a.get_checkpoint(thread)  # now served from `a`'s cache
                assert again is not None
                assert again.values == second.values
                assert again.next == second.next
                assert again.parent_id == first.checkpoint_id
        assert not watchdog.cancel_called

    anyio.run(main)
