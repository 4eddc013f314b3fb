"""Leader election decisions (logic.leader): who takes the Lease, when, and what is written."""

from __future__ import annotations

import pytest

from finetune_operator.logic import leader
from finetune_operator.logic.leader import Action, LeaseRecord

ME, OTHER = "replica-a_1234", "replica-b_5678"
T0, T1 = "2026-12-06T14:00:00.000000Z", "2026-12-06T14:00:05.000000Z"


def record(holder: str = OTHER, duration: int = 15, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration_seconds=duration, acquire_time=T0, renew_time=T0, transitions=transitions)


@pytest.mark.parametrize(
    ("lease", "observed_at", "now", "expected"),
    [
        pytest.param(None, 0.0, 100.0, Action.CREATE, id="no-lease-yet"),
        pytest.param(record(holder=ME), 0.0, 100.0, Action.RENEW, id="ours-renew"),
        pytest.param(record(holder=""), 100.0, 100.0, Action.ACQUIRE, id="released-taken-at-once"),
        pytest.param(record(), 100.0, 100.0, Action.WAIT, id="other-holder-just-seen"),
        pytest.param(record(), 100.0, 114.9, Action.WAIT, id="other-holder-renewal-not-yet-overdue"),
        pytest.param(record(), 100.0, 115.0, Action.ACQUIRE, id="unchanged-for-a-lease-duration-expired"),
        pytest.param(record(duration=4), 100.0, 104.5, Action.ACQUIRE, id="the-lease-own-duration-counts"),
    ],
)
def test_decide(lease, observed_at, now, expected):
    assert leader.decide(ME, lease, observed_at, now).action is expected


def test_waiting_says_who_holds_it_and_when_it_expires():
    step = leader.decide(ME, record(), 100.0, 110.0)
    assert OTHER in step.reason and "5.0s" in step.reason


def test_acquiring_from_another_holder_counts_a_transition_and_resets_acquire_time():
    spec = leader.next_spec(ME, record(transitions=3), Action.ACQUIRE, T1, 15)
    assert spec == {"holderIdentity": ME, "leaseDurationSeconds": 15, "acquireTime": T1, "renewTime": T1,
                    "leaseTransitions": 4}


def test_creating_starts_at_zero_transitions():
    assert leader.next_spec(ME, None, Action.CREATE, T1, 15)["leaseTransitions"] == 0


def test_renewing_keeps_acquire_time_and_transitions():
    spec = leader.next_spec(ME, record(holder=ME, transitions=3), Action.RENEW, T1, 15)
    assert (spec["acquireTime"], spec["renewTime"], spec["leaseTransitions"]) == (T0, T1, 3)


def test_nothing_is_written_while_waiting():
    with pytest.raises(ValueError):
        leader.next_spec(ME, record(), Action.WAIT, T1, 15)


def test_release_leaves_no_holder_and_a_short_duration():
    spec = leader.released_spec(record(holder=ME), T1)
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert leader.decide(OTHER, LeaseRecord("", 1, T0, T1, 3), 50.0, 50.0).action is Action.ACQUIRE


@pytest.mark.parametrize(("last_renewed", "now", "lost"), [(100.0, 109.9, False), (100.0, 110.0, True)])
def test_a_leader_that_cannot_renew_gives_up_at_the_renew_deadline(last_renewed, now, lost):
    assert leader.lost(last_renewed, now, renew_deadline=10.0) is lost
