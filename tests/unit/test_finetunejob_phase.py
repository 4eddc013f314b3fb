"""The FineTuneJob phase: one function of the computed status (conditions, start time, hold)."""

from __future__ import annotations

import datetime
import inspect

import pytest

from finetune_operator.api.common import Condition, ConditionStatus
from finetune_operator.api.finetunejob import FineTuneJobPhase
from finetune_operator.logic import finetunejob
from finetune_operator.logic.finetunejob_phase import Hold, phase_of

T = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


def conds(**statuses: ConditionStatus) -> list[Condition]:
    # Reasons and messages are deliberately nonsense: the phase must not read them.
    return [Condition(type=t, status=v, reason="Whatever", message="anything", last_transition_time=T)
            for t, v in statuses.items()]


@pytest.mark.parametrize(
    ("conditions", "started", "hold", "phase"),
    [
        (conds(), False, Hold.NONE, FineTuneJobPhase.PENDING),
        (conds(Accepted=FALSE, Succeeded=FALSE), False, Hold.NONE, FineTuneJobPhase.FAILED),
        (conds(Succeeded=UNKNOWN), False, Hold.WAITING, FineTuneJobPhase.PENDING),
        (conds(Succeeded=UNKNOWN), False, Hold.SUSPENDED, FineTuneJobPhase.SUSPENDED),
        (conds(Succeeded=UNKNOWN), True, Hold.NONE, FineTuneJobPhase.PREPARING),
        (conds(Succeeded=UNKNOWN), True, Hold.WAITING, FineTuneJobPhase.PENDING),
        (conds(DataReady=FALSE, Succeeded=FALSE), True, Hold.NONE, FineTuneJobPhase.FAILED),
        (conds(DataReady=TRUE, Succeeded=UNKNOWN), True, Hold.NONE, FineTuneJobPhase.TRAINING),
        (conds(DataReady=TRUE, Succeeded=UNKNOWN), True, Hold.SUSPENDED, FineTuneJobPhase.SUSPENDED),
        (conds(DataReady=TRUE, Succeeded=UNKNOWN), True, Hold.WAITING, FineTuneJobPhase.PENDING),
        (conds(DataReady=TRUE, Trained=TRUE, Succeeded=UNKNOWN), True, Hold.NONE, FineTuneJobPhase.EVALUATING),
        (conds(DataReady=TRUE, Trained=TRUE, Succeeded=TRUE), True, Hold.NONE, FineTuneJobPhase.SUCCEEDED),
        # Finished wins over a hold: a suspended job whose budget ran out has failed.
        (conds(DataReady=TRUE, Succeeded=FALSE), True, Hold.SUSPENDED, FineTuneJobPhase.FAILED),
    ],
)
def test_phase_of(conditions, started, hold, phase):
    assert phase_of(conditions, T if started else None, hold) is phase


def test_the_phase_machine_never_sets_a_phase_itself():
    # `decide` writes conditions and holds; only phase_of (called once, when the decision is
    # made) says which phase that is.
    source = inspect.getsource(finetunejob)
    assert source.count("phase_of(") == 1
    assert "FineTuneJobPhase." not in inspect.getsource(finetunejob.decide)
    assert "FineTuneJobPhase." not in inspect.getsource(finetunejob._evaluate_and_register)
    assert ".phase =" not in inspect.getsource(finetunejob._Plan)
