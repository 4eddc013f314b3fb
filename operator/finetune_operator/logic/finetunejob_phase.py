"""A FineTuneJob's phase, derived by one function from its computed status.

`decide` never sets the phase: it writes the conditions (the `Succeeded` summary, and the stage
conditions `DataReady` and `Trained`), the start time, and says whether something outside the
job holds it (`Hold`); `phase_of` turns that into the phase, as argo-rollouts' phase calculation
does. The phase is the stage the pipeline has reached, unless the job has finished or is held:

    Succeeded condition True                -> Succeeded
    Succeeded condition False               -> Failed
    held by spec.suspend                    -> Suspended
    held by something else (queue, node, Pod admission, an earlier run's leftovers) -> Pending
    not started (no start time)             -> Pending
    started, DataReady not True             -> Preparing
    DataReady True, Trained not True        -> Training
    Trained True                            -> Evaluating (evaluation and registration)

Nothing here reads a condition's reason or message: they are for people.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Sequence

from finetune_operator.api.common import Condition, ConditionStatus
from finetune_operator.api.finetunejob import FineTuneJobPhase
from finetune_operator.logic.conditions import find_condition
from finetune_operator.logic.finetunejob_reasons import DATA_READY, SUCCEEDED, TRAINED


class Hold(enum.Enum):
    """What outside the pipeline keeps a running job from going on; NONE when nothing does."""

    NONE = "none"
    SUSPENDED = "suspended"  # spec.suspend
    QUEUED = "queued"  # a Kueue queue has not admitted the Job yet: a normal wait
    BLOCKED = "blocked"  # its Pods cannot start (unschedulable, image pull, Pod admission): a warning
    WAITING = "waiting"  # an earlier FineTuneJob of this name is still being deleted


def _is_true(conditions: Sequence[Condition], type: str) -> bool:
    found = find_condition(conditions, type)
    return found is not None and found.status == ConditionStatus.TRUE


def phase_of(conditions: Sequence[Condition], start_time: datetime.datetime | None, hold: Hold) -> FineTuneJobPhase:
    """The phase of a FineTuneJob whose status has these conditions and start time."""
    summary = find_condition(conditions, SUCCEEDED)
    if summary is not None and summary.status == ConditionStatus.TRUE:
        return FineTuneJobPhase.SUCCEEDED
    if summary is not None and summary.status == ConditionStatus.FALSE:
        return FineTuneJobPhase.FAILED
    if hold is Hold.SUSPENDED:
        return FineTuneJobPhase.SUSPENDED
    if hold is not Hold.NONE or start_time is None:
        return FineTuneJobPhase.PENDING
    if _is_true(conditions, TRAINED):
        return FineTuneJobPhase.EVALUATING
    if _is_true(conditions, DATA_READY):
        return FineTuneJobPhase.TRAINING
    return FineTuneJobPhase.PREPARING
