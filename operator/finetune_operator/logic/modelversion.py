"""What a ModelVersion's status should be: its quality gates judged from its own spec.

A ModelVersion is immutable, and so is its evaluation record (metrics of the fine-tuned and the
base model, and the gates as set for it), so its verdict can always be recomputed from the
object itself: Approved when no blocking gate failed, Rejected otherwise, Candidate when it
was registered without an evaluation.

One writer per status field: this controller owns the phase, the gate verdicts and the
conditions Ready and GatesPassed; a Rollout owns `status.serving` and the `Serving` condition (what
it does with the version) and retention owns `ArtifactRetained`. Each writes its own fields with server-side
apply under its own field manager (k8s.status.apply), so no writer replaces another's
conditions. The artifact check at registration (a Job running the trainer's `verify-artifact`)
owns `ArtifactVerified`: False (the bytes are not the registered ones, or missing) makes the
version Rejected and not Ready whatever its gates say, so it is never Approved nor served.
The phase is derived here from the verdict and the Rollout's structured record
`status.serving` (the Rollout writes it beside its `Serving` condition, which says the same for
people): state Stable -> Production, Replaced -> Deprecated, Refused -> the verdict (a Rejected
verdict always wins). No decision here reads a condition's reason. A version with no record
keeps a Production/Deprecated phase written before the record existed.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.modelversion import PHASE_OF_SERVING, ModelVersionPhase, ModelVersionSpec, ModelVersionStatus
from finetune_operator.logic import conditions, gates
from finetune_operator.logic import spec as spec_problems
from finetune_operator.logic.events import Event, EventType
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
SERVING = "Serving"  # owned by the Rollout controller
# The status field the Rollout controller owns (with the Serving condition); never applied here.
SERVING_FIELD = "serving"
ARTIFACT_VERIFIED = "ArtifactVerified"  # owned by the artifact check at registration
REASON_DIGEST_MATCHES = "DigestMatches"
MSG_DIGEST_MATCHES = "the artifact's bytes match spec.artifact.digest {digest}"
REASON_DIGEST_MISMATCH = "ArtifactDigestMismatch"
MSG_DIGEST_MISMATCH = "the artifact check failed: {problem}"
REASON_NOT_CHECKED = "NotMountable"
MSG_NOT_CHECKED = (
    "{uri} cannot be mounted by the operator's check (object store, or a node path outside the allowed "
    "host paths); the serving Pods check the digest when they fetch it"
)
REASON_CHECK_FAILED = "CheckFailed"
MSG_CHECK_FAILED = "the artifact check could not run to the end: {problem}"
REASON_ARTIFACT_UNVERIFIED = "ArtifactUnverified"
MSG_ARTIFACT_UNVERIFIED = "Rejected: its artifact is not the registered one, it is never served: {problem}"
REASON_AWAITING_ARTIFACT_CHECK = "AwaitingArtifactCheck"
MSG_AWAITING_ARTIFACT_CHECK = "every blocking gate passed; Approved once its artifact's bytes match spec.artifact.digest"
# The conditions this controller owns (and sends, all of them, on every apply).
OWNED_CONDITIONS = (READY, GATES_PASSED)
# Phases a Rollout moves a version into; the gates' verdict does not undo them.
_SET_BY_ROLLOUTS = (ModelVersionPhase.PRODUCTION, ModelVersionPhase.DEPRECATED)
EVENT_INVALID_SPEC = REASON_INVALID_SPEC


@dataclass(frozen=True)
class Decision:
    status: ModelVersionStatus  # the whole status as it will read (others' conditions included)
    status_patch: dict[str, Any] = field(default_factory=dict)  # what changed in the fields owned here
    events: tuple[Event, ...] = ()
    owned_status: dict[str, Any] = field(default_factory=dict)  # the apply body: every field owned here

    @property
    def status_changed(self) -> bool:
        return bool(self.status_patch)


def owned(status: ModelVersionStatus) -> dict[str, Any]:
    """The status fields this controller owns, as JSON (the server-side apply configuration)."""
    dumped = _dump(status)
    dumped.pop(SERVING_FIELD, None)
    dumped["conditions"] = [c for c in dumped.get("conditions", []) if c["type"] in OWNED_CONDITIONS]
    if not dumped["conditions"]:
        dumped.pop("conditions")
    return dumped


def derive_phase(verdict: ModelVersionPhase, status: ModelVersionStatus) -> ModelVersionPhase:
    """The phase from the gates' verdict and what Rollouts say they do with the version."""
    if verdict == ModelVersionPhase.REJECTED:
        return verdict
    if status.serving is None:
        # Written before Rollouts kept their record: keep what they set then.
        return status.phase if status.phase in _SET_BY_ROLLOUTS else verdict
    return PHASE_OF_SERVING.get(status.serving.state, verdict)


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
    awaiting_artifact_check: bool = False,
) -> Decision:
    """The status a ModelVersion should have: its gates judged from the evaluation in its spec.

    Order: invalid spec -> Ready False; Production/Deprecated (set by a Rollout) are kept;
    no evaluation -> Candidate; else Approved when no blocking gate failed, Rejected otherwise.
    An artifact check that said no (ArtifactVerified=False) makes it Rejected; while the check
    runs (`awaiting_artifact_check`) an Approved verdict shows as Candidate.
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
        if before is None or before.message != message:  # the message names the problems: new ones, new Event
            events.append(Event("Warning", EVENT_INVALID_SPEC, message))
        new_status = status.model_copy(update=update)
        return _decision(status, new_status, events)

    if card_config_map:
        update["model_card_config_map"] = card_config_map
    if spec.evaluation is None:
        phase = derive_phase(ModelVersionPhase.CANDIDATE, status)
        conds = conditions.set_condition(
            conds, READY, ConditionStatus.UNKNOWN, REASON_AWAITING_EVALUATION, MSG_AWAITING_EVALUATION, generation, now
        )
        message = MSG_AWAITING_EVALUATION
    else:
        record = spec.evaluation
        results = gates.judge_all(record.gates, record.metrics, record.base_metrics, gates.parent_figures(record))
        failed = gates.blocking_failures(results)
        message = gates.summary(results)
        update["gates"] = results
        update["comparison"] = gates.comparison(record.metrics, record.base_metrics)
        update["evaluation_time"] = record.evaluated_at or status.evaluation_time or now
        verdict = ModelVersionPhase.REJECTED if failed else ModelVersionPhase.APPROVED
        phase = derive_phase(verdict, status)
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
    verified = conditions.find_condition(status.conditions, ARTIFACT_VERIFIED)
    if verified is not None and verified.status == ConditionStatus.FALSE:
        # Other bytes than the registered ones: never Approved, never served.
        phase = ModelVersionPhase.REJECTED
        message = MSG_ARTIFACT_UNVERIFIED.format(problem=verified.message or verified.reason)
        conds = conditions.set_condition(conds, READY, ConditionStatus.FALSE, REASON_ARTIFACT_UNVERIFIED, message, generation, now)
    elif awaiting_artifact_check and verified is None and phase == ModelVersionPhase.APPROVED:
        # Not Approved (so never tracked by a Rollout) before its bytes were checked.
        phase = ModelVersionPhase.CANDIDATE
        conds = conditions.set_condition(
            conds, READY, ConditionStatus.UNKNOWN, REASON_AWAITING_ARTIFACT_CHECK, MSG_AWAITING_ARTIFACT_CHECK, generation, now
        )
    update["phase"] = phase
    update["conditions"] = conds
    update["message"] = message
    new_status = status.model_copy(update=update)
    if status.phase is None:
        events.append(Event("Normal", EVENT_REGISTERED, MSG_EVENT_REGISTERED.format(version=_version(spec))))
    if new_status.phase != status.phase and new_status.phase in (ModelVersionPhase.APPROVED, ModelVersionPhase.REJECTED):
        kind: EventType = "Normal" if new_status.phase == ModelVersionPhase.APPROVED else "Warning"
        events.append(Event(kind, str(new_status.phase), message))
    return _decision(status, new_status, events)


@dataclass(frozen=True)
class VerifyOutcome:
    """What the artifact check's Job says, as the handler read it."""

    finished: bool = False
    succeeded: bool = False
    mismatch: bool = False  # the check itself said no (exit 3): not the registered bytes
    message: str = ""


def artifact_verified(
    outcome: VerifyOutcome | None, *, uri: str, digest: str
) -> tuple[ConditionStatus, str, str] | None:
    """The `ArtifactVerified` condition (status, reason, message) from the check's outcome.

    None while the check runs. `outcome` None: the operator cannot mount the artifact (no Job).
    A Job that failed without the check saying so (deadline, node lost twice) is Unknown, not a
    mismatch: it says nothing about the bytes, and the serving Pods check them again.
    """
    if outcome is None:
        return ConditionStatus.UNKNOWN, REASON_NOT_CHECKED, MSG_NOT_CHECKED.format(uri=uri)
    if not outcome.finished:
        return None
    if outcome.succeeded:
        return ConditionStatus.TRUE, REASON_DIGEST_MATCHES, MSG_DIGEST_MATCHES.format(digest=digest)
    if outcome.mismatch:
        return ConditionStatus.FALSE, REASON_DIGEST_MISMATCH, MSG_DIGEST_MISMATCH.format(problem=outcome.message or "digest mismatch")
    return ConditionStatus.UNKNOWN, REASON_CHECK_FAILED, MSG_CHECK_FAILED.format(problem=outcome.message or "the Job failed")


def _decision(old: ModelVersionStatus, new: ModelVersionStatus, events: list[Event]) -> Decision:
    body = owned(new)
    return Decision(status=new, status_patch=merge_patch(owned(old), body), events=tuple(events), owned_status=body)


def _version(spec: ModelVersionSpec) -> str:
    return f"{spec.model_name} {spec.version}"


def _dump(status: ModelVersionStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)
