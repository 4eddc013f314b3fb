"""The Rollout phase: one function of its conditions and history, never set directly."""

from __future__ import annotations

import datetime
import inspect

import pytest

from finetune_operator.api.common import Condition, ConditionStatus
from finetune_operator.api.rollout import HistoryAction, HistoryEntry, HistoryTrigger, RolloutPhase, RolloutStatus
from finetune_operator.logic import rollout as logic
from tests.unit.rollout_fixtures import Cluster, promote, spec

T = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


def status(history=(), stable="v2", **conditions: ConditionStatus) -> RolloutStatus:
    # Reasons and messages are nonsense on purpose: the phase must not read them.
    return RolloutStatus(
        stable_version=stable,
        history=list(history),
        conditions=[Condition(type=t, status=v, reason="Whatever", message="anything", last_transition_time=T)
                    for t, v in conditions.items()],
    )


def entry(action, to, trigger, frm="v9") -> HistoryEntry:
    return HistoryEntry(action=action, from_version=frm, to_version=to, reason="x", trigger=trigger, time=T)


ROLLED_BACK_TO_V2 = entry(HistoryAction.ROLLBACK, "v2", HistoryTrigger.REQUEST)
ANALYSIS_REFUSED_V3 = entry(HistoryAction.ROLLBACK, "v2", HistoryTrigger.ANALYSIS, frm="v3")
PROMOTED_V2 = entry(HistoryAction.PROMOTE, "v2", HistoryTrigger.STEPS, frm="v1")


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        (status(), None),
        (status(Ready=TRUE, Progressing=FALSE), RolloutPhase.HEALTHY),
        (status([PROMOTED_V2], Ready=TRUE, Progressing=FALSE), RolloutPhase.HEALTHY),
        (status([ROLLED_BACK_TO_V2], Ready=TRUE, Progressing=FALSE), RolloutPhase.ROLLED_BACK),
        (status([entry(HistoryAction.ROLLBACK, "v2", HistoryTrigger.SPEC)], Ready=TRUE, Progressing=FALSE), RolloutPhase.ROLLED_BACK),
        # A rollback to another version than the one serving now is history, not the state.
        (status([ROLLED_BACK_TO_V2], stable="v4", Ready=TRUE, Progressing=FALSE), RolloutPhase.HEALTHY),
        # A refused candidate's entry is not a rollback of the stable version.
        (status([ANALYSIS_REFUSED_V3], Ready=TRUE, Progressing=FALSE), RolloutPhase.HEALTHY),
        (status([ANALYSIS_REFUSED_V3], Ready=FALSE, Progressing=FALSE), RolloutPhase.DEGRADED),
        (status(Ready=FALSE, Progressing=TRUE), RolloutPhase.PROGRESSING),
        (status(Ready=FALSE, Progressing=TRUE, Paused=TRUE), RolloutPhase.PAUSED),
        (status(Ready=FALSE, Progressing=TRUE, Paused=FALSE), RolloutPhase.PROGRESSING),
        (status(Ready=FALSE, Progressing=FALSE, Paused=FALSE), RolloutPhase.DEGRADED),
        (status(Ready=FALSE), RolloutPhase.DEGRADED),
    ],
)
def test_phase_of(state, phase):
    assert logic.phase_of(state) == phase


def test_a_pause_step_sets_the_paused_condition_and_resuming_clears_it():
    c = Cluster(spec(strategy={"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]}}))
    c.approve(1, ready=True)
    c.reconcile(0)
    c.approve(2, ready=True)
    c.reconcile(10)
    paused = logic.conditions.find_condition(c.status.conditions, logic.PAUSED)
    assert c.status.phase == RolloutPhase.PAUSED and paused is not None and paused.status == TRUE
    c.request(**promote(20))
    c.reconcile(20)
    resumed = logic.conditions.find_condition(c.status.conditions, logic.PAUSED)
    assert c.status.phase == RolloutPhase.HEALTHY and resumed is not None and resumed.status == FALSE
    assert c.status.stable_version == "v2"


def test_decide_never_sets_a_phase_itself():
    source = inspect.getsource(logic)
    assert source.count("phase_of(s)") == 2  # the Degraded-after-a-refusal check, and the decision
    assert ".phase = phase_of(" in source and source.count(".phase = ") == 1
