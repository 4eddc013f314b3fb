"""set_condition keeps lastTransitionTime unless the status flips; it never mutates its input."""

from __future__ import annotations

import datetime

import pytest

from finetune_operator.api.common import Condition
from finetune_operator.logic.conditions import find_condition, set_condition, transitioned

T0 = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def condition(type="Accepted", status="True", reason="SpecValid", message="ok", since=T0, generation=1):
    return Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


@pytest.mark.parametrize(
    ("existing", "new_status", "new_reason", "expected_since"),
    [
        pytest.param([], "True", "SpecValid", T1, id="new-condition-starts-now"),
        pytest.param([condition()], "True", "SpecValid", T0, id="same-status-same-reason-keeps-time"),
        pytest.param([condition()], "True", "OtherReason", T0, id="reason-change-alone-keeps-time"),
        pytest.param([condition()], "False", "InvalidSpec", T1, id="status-flip-resets-time"),
        pytest.param([condition(status="Unknown")], "True", "SpecValid", T1, id="unknown-to-true-resets-time"),
        pytest.param([condition(since=None)], "True", "SpecValid", T1, id="missing-time-is-filled-in"),
    ],
)
def test_last_transition_time(existing, new_status, new_reason, expected_since):
    result = set_condition(existing, "Accepted", new_status, new_reason, "msg", 2, T1)
    updated = find_condition(result, "Accepted")
    assert updated.last_transition_time == expected_since
    assert (updated.status, updated.reason, updated.message, updated.observed_generation) == (
        new_status,
        new_reason,
        "msg",
        2,
    )


@pytest.mark.parametrize(
    ("existing", "expected_types"),
    [
        pytest.param([], ["Accepted"], id="appended-to-empty"),
        pytest.param([condition(type="Succeeded")], ["Succeeded", "Accepted"], id="appended-after-others"),
        pytest.param(
            [condition(type="Accepted"), condition(type="Succeeded")],
            ["Accepted", "Succeeded"],
            id="replaced-in-place",
        ),
    ],
)
def test_order_of_conditions(existing, expected_types):
    result = set_condition(existing, "Accepted", "True", "SpecValid", "ok", 1, T1)
    assert [c.type for c in result] == expected_types


def test_input_is_not_mutated():
    existing = [condition()]
    snapshot = [c.model_copy() for c in existing]
    set_condition(existing, "Accepted", "False", "InvalidSpec", "bad", 2, T1)
    assert existing == snapshot


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(None, condition(), True, id="new-condition"),
        pytest.param(condition(), condition(message="other words"), False, id="message-only"),
        pytest.param(condition(), condition(reason="Other"), True, id="reason-changed"),
        pytest.param(condition(), condition(status="False"), True, id="status-flipped"),
        pytest.param(condition(), None, False, id="no-condition-after"),
    ],
)
def test_transitioned(before, after, expected):
    assert transitioned(before, after) is expected
