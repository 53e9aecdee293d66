"""`RunRecord.live`: the record the engine keeps up to date while a run executes looks like any
other record, and assigning its fields changes no other record."""

from __future__ import annotations

import pydantic
import pytest

from tether import InMemoryCheckpointer
from tether.run import RunRecord

pytestmark = pytest.mark.anyio

FIELDS = {"run_id": "r1", "thread_id": "t1", "app": "a", "metadata": {"k": [1]}}


def test_a_live_record_is_validated_like_any_record() -> None:
    live, plain = RunRecord.live(**FIELDS), RunRecord(**FIELDS)
    assert live.model_dump(exclude={"created_at"}) == plain.model_dump(exclude={"created_at"})
    with pytest.raises(pydantic.ValidationError):
        RunRecord.live(run_id="r1", thread_id="t1", multitask_strategy="later")
    with pytest.raises(pydantic.ValidationError):
        RunRecord.live(run_id="r1", thread_id="t1", colour="red")


def test_assigning_a_live_records_fields_changes_no_other_record() -> None:
    one, two = RunRecord.live(**FIELDS), RunRecord.live(run_id="r2", thread_id="t2")
    before = two.model_dump()
    one.status = "running"
    one.started_at = 1.0
    copy = one.model_copy()
    copy.error = "boom"
    assert two.model_dump() == before
    assert one.error is None
    assert set(one.model_fields_set) == set(two.model_fields_set) == set(RunRecord.model_fields)


async def test_a_live_record_counts_every_field_as_set_like_a_stored_record() -> None:
    storage = InMemoryCheckpointer()
    live = RunRecord.live(**FIELDS)
    await storage.commit(run=live)
    stored = await storage.get_run("r1")
    assert stored is not None
    assert stored == live
    assert stored.model_fields_set == live.model_fields_set
    assert stored.model_dump(exclude_unset=True) == live.model_dump(exclude_unset=True)
