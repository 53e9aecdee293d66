from __future__ import annotations

import pytest

from tether import CorruptRecordError, Message, UserError
from tether.serde import dumps, loads


def test_values_round_trip_with_messages_and_dollar_keys() -> None:
    value = {
        "messages": [Message.user("héllo 🌍")],
        "$odd": {"$message": 1},
        "n": [1, 2.5, None, True],
    }
    assert loads(dumps(value), row="t") == value


def test_unstorable_values_are_refused_with_the_path() -> None:
    with pytest.raises(UserError, match=r"state\['x'\] holds .*object"):
        dumps({"x": object()})


def test_corrupt_rows_name_the_row_and_never_run_code() -> None:
    with pytest.raises(CorruptRecordError, match="checkpoints row 7"):
        loads('{"$message": {"role": "alien"}}', row="checkpoints row 7")
    with pytest.raises(CorruptRecordError):
        loads("cos\nsystem\n(S'echo hi'\ntR.", row="pickle attempt")
