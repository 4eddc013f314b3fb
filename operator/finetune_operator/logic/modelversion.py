"""What a ModelVersion's status should be: its quality gates judged from its own spec.

A ModelVersion is immutable, and so is its evaluation record (metrics of the fine-tuned and the
base model, and the gates as set for it), so its verdict can always be recomputed from the
object itself: Approved when no blocking gate failed, Rejected otherwise, Candidate when it
was registered without an evaluation. Production and Deprecated are set by Rollouts and kept.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.modelversion import ModelVersionPhase, ModelVersionSpec, ModelVersionStatus
from finetune_operator.logic import conditions, gates
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
MSG_EVENT_REGISTERED = "registered {version}"
GATES_PASSED = "GatesPassed"
REASON_GATES_PASSED = "GatesPassed"
REASON_GATES_FAILED = "GatesFailed"
MSG_READY = "{phase}: every blocking quality gate passed"
# Phases a Rollout moves a version into; the gates' verdict does not undo them.
_SET_BY_ROLLOUTS = (ModelVersionPhase.PRODUCTION, ModelVersionPhase.DEPRECATED)
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
    card_config_map: str | None = None,
) -> Decision:
    """The status a ModelVersion should have: its gates judged from the evaluation in its spec.

    Order: invalid spec -> Ready False; Production/Deprecated (set by a Rollout) are kept;
    no evaluation -> Candidate; else Approved when no blocking gate failed, Rejected otherwise.
    """
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    update: dict[str, Any] = {"observed_generation": generation}
    events: list[Event] = []
    before = conditions.find_condition(status.conditions, READY)
    conds = list(status.conditions)
    if isinstance(spec, InvalidSpec):
        message = MSG_INVALID_SPEC.format(problems=spec.message)
        update["conditions"] = conditions.set_condition(
            conds, READY, ConditionStatus.FALSE, REASON_INVALID_SPEC, message, generation, now
        )
        update["message"] = message
        if before is None or before.reason != REASON_INVALID_SPEC or before.message != message:
            events.append(Event("Warning", EVENT_INVALID_SPEC, message))
        new_status = status.model_copy(update=update)
        return Decision(new_status, merge_patch(_dump(status), _dump(new_status)), tuple(events))

    if card_config_map:
        update["model_card_config_map"] = card_config_map
    if spec.evaluation is None:
        phase = status.phase if status.phase in _SET_BY_ROLLOUTS else ModelVersionPhase.CANDIDATE
        conds = conditions.set_condition(
            conds, READY, ConditionStatus.UNKNOWN, REASON_AWAITING_EVALUATION, MSG_AWAITING_EVALUATION, generation, now
        )
        message = MSG_AWAITING_EVALUATION
    else:
        record = spec.evaluation
        results = gates.judge_all(record.gates, record.metrics, record.base_metrics)
        failed = gates.blocking_failures(results)
        message = gates.summary(results)
        update["gates"] = results
        update["comparison"] = gates.comparison(record.metrics, record.base_metrics)
        update["evaluation_time"] = record.evaluated_at or status.evaluation_time or now
        verdict = ModelVersionPhase.REJECTED if failed else ModelVersionPhase.APPROVED
        phase = status.phase if status.phase in _SET_BY_ROLLOUTS and not failed else verdict
        conds = conditions.set_condition(
            conds,
            GATES_PASSED,
            ConditionStatus.FALSE if failed else ConditionStatus.TRUE,
            REASON_GATES_FAILED if failed else REASON_GATES_PASSED,
            message,
            generation,
            now,
        )
        if failed:
            conds = conditions.set_condition(conds, READY, ConditionStatus.FALSE, REASON_GATES_FAILED, message, generation, now)
        else:
            conds = conditions.set_condition(conds, READY, ConditionStatus.TRUE, str(phase), MSG_READY.format(phase=phase), generation, now)
    update["phase"] = phase
    update["conditions"] = conds
    update["message"] = message
    new_status = status.model_copy(update=update)
    if status.phase is None:
        events.append(Event("Normal", EVENT_REGISTERED, MSG_EVENT_REGISTERED.format(version=_version(spec))))
    if new_status.phase != status.phase and new_status.phase in (ModelVersionPhase.APPROVED, ModelVersionPhase.REJECTED):
        kind = "Normal" if new_status.phase == ModelVersionPhase.APPROVED else "Warning"
        events.append(Event(kind, str(new_status.phase), message))
    return Decision(
        status=new_status,
        status_patch=merge_patch(_dump(status), _dump(new_status)),
        events=tuple(events),
    )


def _version(spec: ModelVersionSpec) -> str:
    return f"{spec.model_name} {spec.version}"


def _dump(status: ModelVersionStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)
