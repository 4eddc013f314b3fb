"""What a ModelVersion's status should be. For now: the first honest status of a new version.

A ModelVersion is registered as a Candidate: it exists, but no quality gate has judged it, so
its summary condition `Ready` is Unknown. Approval or rejection by the gates, promotion to
Production by a Rollout and deprecation come with the evaluation and rollout controllers; once
one of them has moved the phase on, this decision only records the observed generation and
leaves their verdict alone.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.modelversion import ModelVersionPhase, ModelVersionSpec, ModelVersionStatus
from finetune_operator.logic import conditions
from finetune_operator.logic import spec as spec_problems
from finetune_operator.logic.events import Event
from finetune_operator.logic.spec import InvalidSpec
from finetune_operator.logic.status import merge_patch

KIND = "ModelVersion"
READY = "Ready"

REASON_AWAITING_EVALUATION = "AwaitingEvaluation"
MSG_AWAITING_EVALUATION = "registered as a Candidate; not judged by the quality gates yet"
REASON_INVALID_SPEC = "InvalidSpec"
MSG_INVALID_SPEC = "the spec is invalid and this version cannot be used: {problems}"

EVENT_REGISTERED = "Registered"
MSG_EVENT_REGISTERED = MSG_AWAITING_EVALUATION
EVENT_INVALID_SPEC = REASON_INVALID_SPEC


@dataclass(frozen=True)
class Decision:
    status: ModelVersionStatus
    status_patch: dict[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()

    @property
    def status_changed(self) -> bool:
        return bool(self.status_patch)


def parse_spec(raw: Mapping[str, Any] | None) -> ModelVersionSpec | InvalidSpec:
    try:
        return ModelVersionSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        return InvalidSpec(spec_problems.problems_from_validation_error(exc, KIND))


def parse_status(raw: Mapping[str, Any] | None) -> ModelVersionStatus:
    try:
        return ModelVersionStatus.model_validate(dict(raw or {}))
    except ValidationError:
        return ModelVersionStatus()


def decide(
    spec: ModelVersionSpec | InvalidSpec,
    status: ModelVersionStatus,
    now: datetime.datetime,
    *,
    generation: int,
) -> Decision:
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    update: dict[str, Any] = {"observed_generation": generation}
    events: tuple[Event, ...] = ()
    before = conditions.find_condition(status.conditions, READY)
    if isinstance(spec, InvalidSpec):
        message = MSG_INVALID_SPEC.format(problems=spec.message)
        update["conditions"] = conditions.set_condition(
            status.conditions, READY, ConditionStatus.FALSE, REASON_INVALID_SPEC, message, generation, now
        )
        update["message"] = message
        if before is None or before.reason != REASON_INVALID_SPEC or before.message != message:
            events = (Event("Warning", EVENT_INVALID_SPEC, message),)
    elif status.phase in (None, ModelVersionPhase.CANDIDATE):
        update["phase"] = ModelVersionPhase.CANDIDATE
        update["conditions"] = conditions.set_condition(
            status.conditions,
            READY,
            ConditionStatus.UNKNOWN,
            REASON_AWAITING_EVALUATION,
            MSG_AWAITING_EVALUATION,
            generation,
            now,
        )
        update["message"] = MSG_AWAITING_EVALUATION
        if status.phase is None:
            events = (Event("Normal", EVENT_REGISTERED, MSG_EVENT_REGISTERED),)
    new_status = status.model_copy(update=update)
    return Decision(
        status=new_status,
        status_patch=merge_patch(_dump(status), _dump(new_status)),
        events=events,
    )


def _dump(status: ModelVersionStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)
