"""What a Rollout should do now: which versions to serve, the canary weight, and its status.

Pure: the handler observes the model's ModelVersions, whether each version's serving
Deployment is ready, and the measurements it just took for the metrics that were due; this
module decides. The order of decisions, checked every reconcile:

1. An invalid spec: Degraded, nothing moves (what serves keeps serving).
2. Requests written to the status subresource by the CLI, each acted on once (by its
   requestedAt): abort (all traffic to stable now), promote (leave a pause, or with `full` skip
   to 100%), rollback (serve an earlier version now: the version that was stable before the
   current one, never a candidate that was aborted or rolled back by analysis).
3. The target version: the pinned spec.version, or the newest Approved version of the model
   (tracking skips versions this Rollout already rolled back or aborted).

Nothing refused is served: a rollback request or a pinned spec.version naming a version that
is Rejected (or not evaluated), or that this Rollout aborted or rolled back by analysis, is
refused with a condition and a Warning Event that name the version and why, unless the request
says `force` (or the annotation finetune.ai/force-version names the pinned version); a forced
one is recorded in history (`forced: true`) and as a Warning Event. History entries say what
caused them (`trigger`), so these decisions never read the reason text.

The traffic router is part of what is observed: a setWeight step is done only once the router's
objects carry the weight (a weight never applied is never analysed or promoted), and a router
that cannot apply weights makes the Rollout Degraded and holds the canary where it is.
4. First version ever: it becomes stable directly (there is nothing to compare a canary with).
   Pinning a version older than the stable one is a declarative rollback: it becomes stable at
   once, skipping analysis (like Argo Rollouts' rollback window). A new target while a canary
   runs replaces the candidate and restarts its steps and analysis.
5. The canary walks its steps: setWeight (once the candidate is ready), pause (timed, or until
   promoted), analysis (Prometheus; Failed rolls back at once, Inconclusive pauses). After the
   last step the candidate becomes stable: its ModelVersion goes to Production, the old one to
   Deprecated, and the old Pods stay for scaleDownDelaySeconds.

The phase is derived from that state, never stored as intent: Degraded (invalid, or rolled back
by analysis or abort), Paused, Progressing, Healthy, RolledBack (after a rollback).
"""

from __future__ import annotations

import datetime
import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.modelversion import PHASE_OF_SERVING, ServingState
from finetune_operator.api.rollout import (
    AnalysisMetric,
    AnalysisPhase,
    AnalysisStatus,
    CanaryStep,
    ExperimentOutcome,
    Judgement,
    REFUSING_TRIGGERS,
    HistoryAction,
    HistoryEntry,
    HistoryTrigger,
    RolloutPhase,
    RolloutSpec,
    RollbackRequest,
    RolloutStatus,
    Track,
)
from finetune_operator.logic import analysis, conditions
from finetune_operator.logic import spec as spec_problems
from finetune_operator.logic.events import Event
from finetune_operator.logic.spec import InvalidSpec
from finetune_operator.logic.status import merge_patch

KIND = "Rollout"
READY = "Ready"
PROGRESSING = "Progressing"
PAUSED = "Paused"
HISTORY_LIMIT = 100

REASON_INVALID_SPEC = "InvalidSpec"
REASON_HEALTHY = "Healthy"
REASON_PROGRESSING = "Progressing"
REASON_PAUSED = "Paused"
REASON_RESUMED = "Resumed"
MSG_RESUMED = "no step holds the Rollout"
REASON_ROLLED_BACK = "RolledBack"
REASON_ABORTED = "Aborted"
REASON_ANALYSIS_FAILED = "AnalysisFailed"
REASON_WAITING_FOR_VERSION = "WaitingForVersion"
REASON_VERSION_UNUSABLE = "VersionUnusable"
REASON_VERSION_REFUSED = "VersionRefused"
REASON_TRAFFIC_ROUTING_FAILED = "TrafficRoutingFailed"
REASON_FORCED = "ForcedVersion"
REASON_ROLLBACK_REFUSED = "RollbackRefused"
ROLLBACK_ACCEPTED = "RollbackAccepted"  # condition: the outcome of the last rollback request

MSG_INVALID_SPEC = "the spec is invalid; nothing changes until it is fixed: {problems}"
MSG_HEALTHY = "{version} serves 100% of traffic"
MSG_WAITING_READY = "waiting for {version} to be ready"
MSG_STEP = "step {index}/{total}: {what}"
MSG_PAUSED_UNTIL_PROMOTED = "paused at step {index}/{total} until promoted (kubectl finetune promote {name})"
MSG_PAUSED_FOR = "paused at step {index}/{total} until {until}"
MSG_INCONCLUSIVE = "analysis inconclusive, paused for a decision (promote or abort): {detail}"
MSG_EXPERIMENT_HOLD = "experiment: {weight}% on {candidate} until {until}, judged against {stable}: {detail}"
MSG_EXPERIMENT_NO_DATA = (
    "experiment ended without enough data to judge {candidate} against {stable} ({detail}); paused for a "
    "decision (promote or abort)"
)
DECISION_CONTINUE = "continue"
DECISION_PROMOTE = "promote"
DECISION_ROLLBACK = "rollback"
DECISION_PAUSE = "pause"
MSG_ANALYSIS_FAILED = "rolled back {candidate} to {stable}: {detail}"
MSG_ABORTED = "aborted {candidate}; all traffic on {stable}{why}"
MSG_ROLLED_BACK = "rolled back from {old} to {new}{why}"
MSG_WAITING_FOR_VERSION = "waiting for an Approved ModelVersion of model {model}"
MSG_VERSION_NOT_FOUND = "ModelVersion {version} of model {model} does not exist"
MSG_VERSION_UNUSABLE = "ModelVersion {version} of model {model} is {phase}; only Approved, Production or Deprecated versions are served"
MSG_REFUSED_ABORTED = "{version} was aborted at {time} ({reason})"
MSG_REFUSED_ANALYSIS = "{version} was rolled back by analysis at {time} ({reason})"
MSG_PIN_REFUSED = (
    "spec.version {version} is refused: {why}; {stable} keeps serving. To serve it anyway, annotate the "
    "Rollout with finetune.ai/force-version={version}"
)
MSG_ROLLBACK_REFUSED = (
    "rollback{who} to {version} refused: {why}; {stable} keeps serving. To serve it anyway: "
    "kubectl finetune rollback {name} --to {version} --force"
)
MSG_ROLLBACK_NO_TARGET = "rollback{who} refused: no earlier version that was stable and not refused; {stable} keeps serving"
MSG_ROLLBACK_NOT_FOUND = "rollback{who} refused: ModelVersion {version} of model {model} does not exist; {stable} keeps serving"
MSG_FORCED = "{version} served by force although {why}{who}"
MSG_ARTIFACT_REFUSED = "ModelVersion {version} of model {model} is not served: its artifact is not the registered bytes ({problem})"
MSG_VERSION_SERVING_REFUSED = "Rollout {name} refused to serve it: {message}"
ARTIFACT_VERIFIED = "ArtifactVerified"  # a ModelVersion condition, written by its artifact check
REASON_SERVING_REFUSED = "Refused"  # the version's Serving=False reason when a pin or rollback to it is refused
MSG_ROUTING_FAILED = (
    "the traffic router cannot apply weights ({error}); the canary of {candidate} is held at step {index}/{total} "
    "and does not go on until the router works"
)
MSG_ROUTING_FAILED_STABLE = "the traffic router cannot apply weights ({error}); fix it so that {stable} gets the traffic"
MSG_ROUTING_WAIT = "routing {weight}% of traffic to {version}"

_SERVABLE = {"Approved", "Production", "Deprecated"}
_VERSION_NUMBER = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class VersionInfo:
    """One ModelVersion of the model, as observed."""

    name: str
    version: str
    phase: str | None
    base_model_uri: str
    artifact_uri: str
    artifact_type: str = "adapter"
    number: int = 0
    created: str = ""
    artifact_digest: str = ""
    artifact_problem: str = ""  # its artifact check said no (ArtifactVerified=False): why
    artifact_credentials_secret: str | None = None  # an s3:// artifact's credentials Secret
    # The version's own answer format (spec.formatSchema) as canonical JSON; "" when it has none.
    format_schema: str = ""
    base_model_credentials_secret: str | None = None  # an s3:// base model's credentials Secret
    # The Rollout whose refusal the version's serving record (status.serving) states; None when none does.
    refused_by: str | None = None

    @classmethod
    def from_object(cls, mv: Mapping[str, Any]) -> VersionInfo:
        spec = mv.get("spec") or {}
        labels = mv["metadata"].get("labels") or {}
        version = spec.get("version", "")
        match = _VERSION_NUMBER.match(version)
        number = int(labels.get("finetune.ai/version-number") or (match.group(1) if match else 0))
        return cls(
            name=mv["metadata"]["name"],
            version=version,
            phase=(mv.get("status") or {}).get("phase"),
            base_model_uri=(spec.get("baseModel") or {}).get("uri", ""),
            artifact_uri=(spec.get("artifact") or {}).get("uri", ""),
            artifact_type=(spec.get("artifact") or {}).get("type", "adapter"),
            number=number,
            created=mv["metadata"].get("creationTimestamp") or "",
            artifact_digest=(spec.get("artifact") or {}).get("digest", ""),
            artifact_credentials_secret=((spec.get("artifact") or {}).get("credentialsSecretRef") or {}).get("name"),
            format_schema=json.dumps(spec["formatSchema"], sort_keys=True) if isinstance(spec.get("formatSchema"), dict) else "",
            base_model_credentials_secret=((spec.get("baseModel") or {}).get("credentialsSecretRef") or {}).get("name"),
            refused_by=_refused_by((mv.get("status") or {}).get("serving")),
            artifact_problem=next(
                (c.get("message") or c.get("reason") or "artifact check failed"
                 for c in (mv.get("status") or {}).get("conditions") or []
                 if c.get("type") == ARTIFACT_VERIFIED and c.get("status") == "False"),
                "",
            ),
        )


def _refused_by(record: Any) -> str | None:
    """The Rollout a version's serving record says refused it."""
    if isinstance(record, Mapping) and record.get("state") == ServingState.REFUSED:
        return record.get("rollout")
    return None


@dataclass(frozen=True)
class Routing:
    """What the traffic router's objects say now, as the handler read them.

    `weight`: the canary weight they carry (in the terms of status.canaryWeight; None when they
    do not say). `error`: why the router cannot apply weights (a missing object, RBAC, a
    conflict), or None.
    """

    weight: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observed:
    versions: tuple[VersionInfo, ...] = ()
    ready: Mapping[str, bool] = field(default_factory=dict)  # version -> serving ready
    # The router as read before deciding; None: it carries whatever was decided (no router to check).
    routing: Routing | None = None
    # version -> why its serving Pods refuse to start (e.g. the artifact digest does not match).
    serving_failures: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def get(self, version: str | None) -> VersionInfo | None:
        return next((v for v in self.versions if v.version == version), None)


@dataclass(frozen=True)
class VersionServing:
    """What this Rollout did with a ModelVersion: its record `status.serving` (the state the
    version's phase follows from) and its `Serving` condition (the same, for people)."""

    state: ServingState
    reason: str
    message: str

    @property
    def condition_status(self) -> str:
        return ConditionStatus.TRUE if self.state == ServingState.STABLE else ConditionStatus.FALSE


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus
    status_patch: dict[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    serve: tuple[str, ...] = ()  # versions that must have serving Pods
    stable: str | None = None  # version behind <rollout>-stable
    canary: str | None = None  # version behind <rollout>-canary
    weight: int = 0  # percent of traffic on the canary
    # ModelVersion name -> what this Rollout did with it (written to the version's status).
    version_serving: Mapping[str, VersionServing] = field(default_factory=dict)
    requeue_after: float | None = None

    @property
    def status_changed(self) -> bool:
        return bool(self.status_patch)

    @property
    def version_phases(self) -> dict[str, str]:
        """ModelVersion name -> the phase its controller derives from what this Rollout did."""
        return {name: str(PHASE_OF_SERVING[v.state]) for name, v in self.version_serving.items() if v.state in PHASE_OF_SERVING}


def parse_spec(raw: Mapping[str, Any] | None) -> RolloutSpec | InvalidSpec:
    try:
        spec = RolloutSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        return InvalidSpec(spec_problems.problems_from_validation_error(exc, KIND))
    problems = []
    for index, step in enumerate(spec.strategy.canary.steps):
        judged = step.analysis or step.experiment
        if judged is not None:
            try:
                analysis.effective_metrics(spec.analysis, judged.templates, has_format_schema=True)
            except ValueError as exc:
                field = "analysis" if step.analysis is not None else "experiment"
                problems.append(spec_problems.SpecProblem(f"spec.strategy.canary.steps[{index}].{field}.templates", str(exc), "name metrics from spec.analysis.metrics"))
    return InvalidSpec(tuple(problems)) if problems else spec


def parse_status(raw: Mapping[str, Any] | None) -> RolloutStatus:
    try:
        return RolloutStatus.model_validate(dict(raw or {}))
    except ValidationError:
        return RolloutStatus()


def analysing(spec: RolloutSpec, status: RolloutStatus) -> bool:
    """A candidate is at a step judged by analysis or an experiment."""
    step = _current_step(spec, status)
    return status.candidate_version is not None and step is not None and (step.analysis is not None or step.experiment is not None)


def due_metrics(
    spec: RolloutSpec, status: RolloutStatus, now: datetime.datetime, observed: Observed | None = None
) -> list[AnalysisMetric]:
    """The analysis metrics to measure before deciding (the handler queries them)."""
    step = _current_step(spec, status)
    if step is None or not analysing(spec, status):
        return []
    if analysis.prometheus_address(spec.analysis) is None:
        return []
    metrics = _metrics(spec, step, status, observed)
    run = status.analysis
    if run is None or run.step_index != status.current_step_index:
        return metrics  # a new run measures everything at once
    return analysis.due_metrics(metrics, run, now)


def _metrics(spec: RolloutSpec, step: CanaryStep, status: RolloutStatus, observed: Observed | None) -> list[AnalysisMetric]:
    judged = step.analysis or step.experiment
    assert judged is not None, "only a step with analysis or an experiment has metrics"
    return analysis.effective_metrics(
        spec.analysis, judged.templates, has_format_schema=format_checked(spec, status, observed)
    )


def format_checked(spec: RolloutSpec, status: RolloutStatus, observed: Observed | None) -> bool:
    """Whether both sides of the comparison check their answers' format: the Rollout's own format
    (spec.serving.formatSchema/formatRegex) for every version, else each version's formatSchema,
    which candidate and stable must both have (a side without the series is no comparison)."""
    if spec.serving.has_format_check:
        return True
    if observed is None:
        return False
    sides = [observed.get(status.candidate_version), observed.get(status.stable_version)]
    return all(v is not None and v.format_schema for v in sides)


def _current_step(spec: RolloutSpec, status: RolloutStatus) -> CanaryStep | None:
    steps = spec.strategy.canary.steps
    index = status.current_step_index
    if index is None or index >= len(steps):
        return None
    return steps[index]


class _Plan:
    def __init__(self, name: str, spec: RolloutSpec | None, old: RolloutStatus, generation: int, now: datetime.datetime):
        self.name = name
        self.spec = spec
        self.old = old
        self.generation = generation
        self.now = now
        self.s = old.model_copy(deep=True)
        self.events: list[Event] = []
        self.version_serving: dict[str, VersionServing] = {}
        self.requeue: float | None = None
        self.extra_serving: set[str] = set()
        self.announced = False

    def cond(self, type: str, value: ConditionStatus, reason: str, message: str) -> None:
        self.s.conditions = conditions.set_condition(self.s.conditions, type, value, reason, message, self.generation, self.now)

    def history(
        self, action: HistoryAction, old: str | None, new: str | None, reason: str, trigger: HistoryTrigger,
        *, forced: bool = False,
    ) -> None:
        entry = HistoryEntry(
            action=action, from_version=old, to_version=new, reason=reason, trigger=trigger, forced=forced or None,
            time=self.now
        )
        self.s.history = [*self.s.history, entry][-HISTORY_LIMIT:]

    def announce(self, event: Event) -> None:
        """An Event that tells the transition itself (aborted, rolled back, promoted): no
        phase-change Event is added for it."""
        self.events.append(event)
        self.announced = True

    def requeue_in(self, seconds: float) -> None:
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    # The Ready, Progressing and Paused conditions say where the Rollout stands; `phase_of`
    # derives the phase from them (and the history), nothing sets it.
    def ready(self, reason: str, message: str) -> None:
        """The stable version serves all traffic."""
        self._stand(ConditionStatus.TRUE, ConditionStatus.FALSE, False, reason, message)

    def progressing(self, reason: str, message: str) -> None:
        """On the way: a canary walks its steps, or a version is becoming ready."""
        self._stand(ConditionStatus.FALSE, ConditionStatus.TRUE, False, reason, message)

    def paused(self, reason: str, message: str) -> None:
        """On the way but held: a pause step, or an analysis that cannot conclude."""
        self._stand(ConditionStatus.FALSE, ConditionStatus.TRUE, True, reason, message)

    def degraded(self, reason: str, message: str) -> None:
        """Something is wrong that the Rollout does not get past by itself."""
        self._stand(ConditionStatus.FALSE, ConditionStatus.FALSE, False, reason, message)

    def _stand(self, ready: ConditionStatus, progressing: ConditionStatus, paused: bool, reason: str, message: str) -> None:
        self.s.message = message
        self.cond(READY, ready, reason, message)
        self.cond(PROGRESSING, progressing, reason, message)
        if paused:
            self.cond(PAUSED, ConditionStatus.TRUE, reason, message)
        elif conditions.find_condition(self.s.conditions, PAUSED) is not None:
            self.cond(PAUSED, ConditionStatus.FALSE, REASON_RESUMED, MSG_RESUMED)

    def end_canary(self) -> None:
        if self.s.candidate_version:
            self.extra_serving.add(self.s.candidate_version)
        self.s.candidate_version = None
        self.s.canary_weight = 0
        self.s.current_step_index = None
        self.s.step_start_time = None
        self.s.analysis = None

    def start_canary(self, version: str) -> None:
        self.s.candidate_version = version
        self.s.canary_weight = 0
        self.s.current_step_index = 0
        self.s.step_start_time = self.now
        self.s.analysis = None

    def make_stable(self, version: VersionInfo, observed: Observed) -> None:
        previous = observed.get(self.s.stable_version)
        self.version_serving[version.name] = VersionServing(ServingState.STABLE, "Stable", f"Rollout {self.name} serves it as the stable version")
        if previous is not None and previous.version != version.version:
            self.extra_serving.add(previous.version)
            self.version_serving[previous.name] = VersionServing(
                ServingState.REPLACED, "Replaced", f"Rollout {self.name} replaced it with {version.version}"
            )
        self.s.stable_version = version.version

    def refuse_version(self, version: VersionInfo, reason: str, message: str) -> None:
        """Say on the version that this Rollout refused to serve it."""
        self.version_serving[version.name] = VersionServing(ServingState.REFUSED, reason, message)


def decide(
    name: str,
    spec: RolloutSpec | InvalidSpec,
    status: RolloutStatus,
    observed: Observed,
    now: datetime.datetime,
    *,
    generation: int,
    measured: Mapping[str, analysis.Measured] | None = None,
    force_version: str | None = None,
) -> Decision:
    """`force_version`: the value of the finetune.ai/force-version annotation (serve that pinned
    version even if it was refused)."""
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    measured = measured or {}
    plan = _Plan(name, spec if isinstance(spec, RolloutSpec) else None, status, generation, now)
    s = plan.s
    s.observed_generation = generation

    if isinstance(spec, InvalidSpec):
        plan.degraded(REASON_INVALID_SPEC, MSG_INVALID_SPEC.format(problems=spec.message))
        return _finish(plan, observed)

    _handle_requests(plan, spec, observed)
    spec_changed = status.observed_generation != generation
    chosen = _target(spec, s, observed, spec_changed=spec_changed, force_version=force_version)
    target, problem = chosen.version, chosen.problem
    stable = observed.get(s.stable_version)

    unusable = None
    if target is None:
        if stable is None:
            waiting = problem or Problem(Refusal.WAITING, MSG_WAITING_FOR_VERSION.format(model=spec.model_name))
            plan.progressing(waiting.reason, waiting.message)
            return _finish(plan, observed)
        target = stable
        if problem and problem.kind in (Refusal.UNUSABLE, Refusal.REFUSED):
            unusable = problem
            pinned = observed.get(spec.version) if spec.version else None
            if pinned is not None and pinned.refused_by != plan.name:
                # The refused version says so too (once: its serving record then names this Rollout).
                plan.refuse_version(pinned, REASON_SERVING_REFUSED, MSG_VERSION_SERVING_REFUSED.format(name=plan.name, message=problem.message))
    if stable is not None and target.version == s.stable_version and s.candidate_version:
        cancelled = s.candidate_version
        plan.end_canary()
        plan.events.append(Event("Normal", "CanaryCancelled", f"canary of {cancelled} cancelled: the target is {s.stable_version} again"))

    if stable is None:
        # The first version: nothing to compare a canary with.
        plan.make_stable(target, observed)
        if not observed.ready.get(target.version):
            failure = observed.serving_failures.get(target.version)
            if failure is not None:
                plan.degraded(failure[0], failure[1])
            else:
                plan.progressing(REASON_PROGRESSING, MSG_WAITING_READY.format(version=target.version))
            return _finish(plan, observed)
    elif target.version != s.stable_version and target.version != s.candidate_version:
        if chosen.forced:
            message = MSG_FORCED.format(version=target.version, why=chosen.forced, who=" (annotation finetune.ai/force-version)")
            plan.events.append(Event("Warning", REASON_FORCED, message))
        if spec.version is not None and target.number and target.number < stable.number:
            # Declarative rollback: an earlier version pinned in Git goes live at once.
            old = s.stable_version
            plan.end_canary()
            plan.make_stable(target, observed)
            plan.history(HistoryAction.ROLLBACK, old, target.version, f"spec.version pinned to earlier version {target.version}",
                         HistoryTrigger.SPEC, forced=bool(chosen.forced))
            plan.announce(Event("Warning", REASON_ROLLED_BACK, MSG_ROLLED_BACK.format(old=old, new=target.version, why=" (spec.version)")))
        else:
            if s.candidate_version:
                plan.events.append(Event("Normal", "CandidateReplaced", f"{target.version} replaces candidate {s.candidate_version}; analysis restarts"))
                plan.extra_serving.add(s.candidate_version)
            plan.start_canary(target.version)
            plan.events.append(Event("Normal", "CanaryStarted", f"canary of {target.version} against stable {s.stable_version}"))

    if s.candidate_version:
        _walk(plan, spec, observed, measured)
        return _finish(plan, observed)

    # No canary: the stable version serves everything.
    last = s.history[-1] if s.history else None
    routing_error = observed.routing.error if observed.routing is not None else None
    failure = observed.serving_failures.get(s.stable_version or "")
    if unusable is not None:
        plan.degraded(unusable.reason, f"{unusable.message}; {s.stable_version} keeps serving" if unusable.kind is Refusal.UNUSABLE else unusable.message)
    elif failure is not None and not observed.ready.get(s.stable_version or ""):
        plan.degraded(failure[0], failure[1])
    elif not observed.ready.get(s.stable_version or ""):
        plan.progressing(REASON_PROGRESSING, MSG_WAITING_READY.format(version=s.stable_version))
    elif routing_error:
        plan.degraded(REASON_TRAFFIC_ROUTING_FAILED, MSG_ROUTING_FAILED_STABLE.format(error=routing_error, stable=s.stable_version))
    elif last is not None and _failed(last) and phase_of(s) == RolloutPhase.DEGRADED and (
        status.observed_generation == generation or last.time == now
    ):
        # Rolled back by analysis or aborted: Degraded until the spec or the target moves on.
        ready = conditions.find_condition(s.conditions, READY)
        plan.cond(READY, ConditionStatus.FALSE, ready.reason if ready is not None else REASON_ROLLED_BACK, s.message or "")
    elif last is not None and _rolled_back_to_stable(s):  # (narrows `last` for the message)
        message = MSG_ROLLED_BACK.format(old=last.from_version, new=last.to_version, why="")
        plan.ready(REASON_ROLLED_BACK, message)
    else:
        healthy = MSG_HEALTHY.format(version=s.stable_version)
        blind = analysis.analysis_disabled(spec.analysis)
        if blind and last is not None and last.action == HistoryAction.PROMOTE and last.trigger == HistoryTrigger.STEPS:
            healthy += f"; {analysis.MSG_PROMOTED_WITHOUT_ANALYSIS}"
        plan.ready(REASON_HEALTHY, healthy)
    return _finish(plan, observed)


def _trigger(entry: HistoryEntry) -> HistoryTrigger:
    """What caused a history entry. Entries written before `trigger` existed are read once here:
    an abort was an abort, an analysis rollback said so in its reason, and every other entry
    changed the stable version."""
    if entry.trigger is not None:
        return entry.trigger
    if entry.action == HistoryAction.ABORT:
        return HistoryTrigger.ABORT
    if entry.action == HistoryAction.ROLLBACK and (entry.reason or "").startswith("analysis failed"):
        return HistoryTrigger.ANALYSIS
    return HistoryTrigger.REQUEST if entry.action == HistoryAction.ROLLBACK else HistoryTrigger.STEPS


def _failed(entry: HistoryEntry) -> bool:
    """An abort, a rollback the analysis made, or serving that refused the artifact: the candidate was refused."""
    return _trigger(entry) in REFUSING_TRIGGERS


def phase_of(status: RolloutStatus) -> RolloutPhase | None:
    """The Rollout's phase, from its conditions and history (as argo-rollouts calculates its phase):

        Ready True    -> RolledBack when the last history entry rolled back to the stable version
                         (not a refused candidate's entry), else Healthy
        Ready False   -> Progressing True: Paused when the Paused condition is True, else Progressing;
                         Progressing False: Degraded
        no Ready yet  -> none

    No reason or message is read: they are for people.
    """
    ready = conditions.find_condition(status.conditions, READY)
    if ready is None:
        return None
    if ready.status == ConditionStatus.TRUE:
        return RolloutPhase.ROLLED_BACK if _rolled_back_to_stable(status) else RolloutPhase.HEALTHY
    progressing = conditions.find_condition(status.conditions, PROGRESSING)
    if progressing is None or progressing.status != ConditionStatus.TRUE:
        return RolloutPhase.DEGRADED
    paused = conditions.find_condition(status.conditions, PAUSED)
    return RolloutPhase.PAUSED if paused is not None and paused.status == ConditionStatus.TRUE else RolloutPhase.PROGRESSING


def _rolled_back_to_stable(status: RolloutStatus) -> bool:
    """Whether the last history entry rolled back to the version serving now (a refused
    candidate's entry moved nothing)."""
    last = status.history[-1] if status.history else None
    return last is not None and last.action == HistoryAction.ROLLBACK and not _failed(last) and last.to_version == status.stable_version


def _changed_stable(entry: HistoryEntry) -> bool:
    """Whether the entry moved the stable version (a refused candidate's entry did not)."""
    return not _failed(entry)


class Refusal(enum.Enum):
    """Why a version is not the target; each kind's value is the reason people read."""

    WAITING = REASON_WAITING_FOR_VERSION  # no version to serve (yet)
    UNUSABLE = REASON_VERSION_UNUSABLE  # not servable: not Approved, or not the registered bytes
    REFUSED = REASON_VERSION_REFUSED  # refused by this Rollout earlier (aborted, failed analysis)


@dataclass(frozen=True)
class Problem:
    kind: Refusal
    message: str

    @property
    def reason(self) -> str:
        return str(self.kind.value)


@dataclass(frozen=True)
class _Target:
    version: VersionInfo | None
    problem: Problem | None = None
    forced: str | None = None  # why it would have been refused, when it is served by force


def _target(spec: RolloutSpec, s: RolloutStatus, observed: Observed, *, spec_changed: bool, force_version: str | None) -> _Target:
    if spec.version is not None:
        found = observed.get(spec.version)
        if found is None:
            return _Target(None, Problem(Refusal.WAITING, MSG_VERSION_NOT_FOUND.format(version=spec.version, model=spec.model_name)))
        if found.version == s.stable_version or found.version == s.candidate_version:
            return _Target(found)
        if not spec_changed and found.version in _refused(s) and force_version != spec.version:
            # Rolled back from or aborted while pinned: stay as that left it until the spec changes.
            return _Target(None)
        why = _refusal(found, s, spec.model_name)
        if why is None:
            return _Target(found)
        if force_version == spec.version and not found.artifact_problem:
            return _Target(found, forced=why.message)
        if why.kind is Refusal.UNUSABLE:
            return _Target(None, why)
        stable = s.stable_version or "the stable version"
        return _Target(None, Problem(Refusal.REFUSED, MSG_PIN_REFUSED.format(version=found.version, why=why.message, stable=stable)))
    failed = _refused(s)
    candidates = [v for v in observed.versions if v.phase in ("Approved", "Production") and v.version not in failed and not v.artifact_problem]
    if spec.track == Track.LATEST_APPROVED and candidates:
        return _Target(max(candidates, key=lambda v: (v.number, v.created)))
    return _Target(None, Problem(Refusal.WAITING, MSG_WAITING_FOR_VERSION.format(model=spec.model_name)))


def _refused(s: RolloutStatus) -> set[str]:
    """Versions this Rollout aborted or rolled back from (never the one serving now)."""
    return {h.from_version for h in s.history if h.action in (HistoryAction.ABORT, HistoryAction.ROLLBACK) and h.from_version} - {s.stable_version}


def _refused_candidates(s: RolloutStatus) -> dict[str, HistoryEntry]:
    """Candidates this Rollout aborted or rolled back by analysis, with the entry that refused them.

    A later forced serving of the version clears it: that was a recorded human decision.
    """
    refused: dict[str, HistoryEntry] = {}
    for entry in s.history:
        if _failed(entry) and entry.from_version:
            refused[entry.from_version] = entry
        elif entry.forced and entry.to_version:
            refused.pop(entry.to_version, None)
    return refused


def _refusal(version: VersionInfo, s: RolloutStatus, model: str) -> Problem | None:
    """Why `version` must not be served without force (the message names it), or None."""
    if version.artifact_problem:
        return Problem(Refusal.UNUSABLE, MSG_ARTIFACT_REFUSED.format(version=version.version, model=model, problem=version.artifact_problem))
    if version.phase not in _SERVABLE:
        phase = version.phase or "not evaluated"
        return Problem(Refusal.UNUSABLE, MSG_VERSION_UNUSABLE.format(version=version.version, model=model, phase=phase))
    entry = _refused_candidates(s).get(version.version)
    if entry is None:
        return None
    when = entry.time.isoformat() if entry.time else "an earlier time"
    template = MSG_REFUSED_ABORTED if _trigger(entry) == HistoryTrigger.ABORT else MSG_REFUSED_ANALYSIS
    return Problem(Refusal.REFUSED, template.format(version=version.version, time=when, reason=entry.reason or "no reason given"))


def _handle_requests(plan: _Plan, spec: RolloutSpec, observed: Observed) -> None:
    s = plan.s
    handled = s.last_handled_request
    requests = [r for r in (s.abort_request, s.promote_request, s.rollback_request) if r is not None]
    pending = sorted((r for r in requests if handled is None or r.requested_at > handled), key=lambda r: r.requested_at)
    for request in pending:
        who = f" by {request.requested_by}" if request.requested_by else ""
        why = f": {request.reason}" if request.reason else ""
        if request is s.abort_request:
            if s.candidate_version:
                candidate = s.candidate_version
                plan.history(HistoryAction.ABORT, candidate, s.stable_version, f"aborted{who}{why}", HistoryTrigger.ABORT)
                plan.end_canary()
                message = MSG_ABORTED.format(candidate=candidate, stable=s.stable_version, why=f" (aborted{who}{why})")
                plan.degraded(REASON_ABORTED, message)
                plan.announce(Event("Warning", REASON_ABORTED, message))
                aborted = observed.get(candidate)
                if aborted is not None:
                    plan.refuse_version(aborted, REASON_ABORTED, f"Rollout {plan.name}: {message}")
        elif request is s.promote_request:
            if s.candidate_version:
                if request.full:
                    plan.history(HistoryAction.PROMOTE, s.stable_version, s.candidate_version, f"promoted to 100%{who}{why}", HistoryTrigger.REQUEST)
                    _promote(plan, observed, skip_history=True)
                else:
                    s.current_step_index = (s.current_step_index or 0) + 1
                    s.step_start_time = plan.now
                    s.analysis = None
                    plan.announce(Event("Normal", "Promoted", f"step skipped{who}{why}"))
        else:
            assert isinstance(request, RollbackRequest), "abort and promote are handled above"
            _rollback(plan, spec, observed, request, who, why)
        s.last_handled_request = request.requested_at


def _rollback(plan: _Plan, spec: RolloutSpec, observed: Observed, request: RollbackRequest, who: str, why: str) -> None:
    """A rollback request: to the named version, or to the version that was stable before."""
    s = plan.s
    stable = s.stable_version or "the stable version"
    if request.to_version:
        target = observed.get(request.to_version)
        if target is None:
            _refuse_rollback(plan, "VersionNotFound", MSG_ROLLBACK_NOT_FOUND.format(who=who, version=request.to_version, model=spec.model_name, stable=stable))
            return
    else:
        target = previous_stable(s, observed, spec.model_name)
        if target is None:
            _refuse_rollback(plan, "NoEarlierVersion", MSG_ROLLBACK_NO_TARGET.format(who=who, stable=stable))
            return
    if target.version == s.stable_version:
        if s.candidate_version:
            plan.end_canary()
        plan.cond(ROLLBACK_ACCEPTED, ConditionStatus.TRUE, REASON_ROLLED_BACK, f"{target.version} already serves as the stable version")
        return
    refusal = _refusal(target, s, spec.model_name)
    # Force overrides a refusal, never other bytes than the registered ones.
    if refusal is not None and (not request.force or target.artifact_problem):
        message = MSG_ROLLBACK_REFUSED.format(who=who, version=target.version, why=refusal.message, stable=stable, name=plan.name)
        _refuse_rollback(plan, refusal.reason, message)
        plan.refuse_version(target, REASON_SERVING_REFUSED, MSG_VERSION_SERVING_REFUSED.format(name=plan.name, message=message))
        return
    old = s.stable_version
    plan.end_canary()
    plan.make_stable(target, observed)
    forced = " (forced)" if refusal is not None else ""
    plan.history(HistoryAction.ROLLBACK, old, target.version, f"rollback{who}{why}{forced}", HistoryTrigger.REQUEST, forced=refusal is not None)
    message = MSG_ROLLED_BACK.format(old=old, new=target.version, why=f" ({who.strip() or 'requested'}{why})")
    plan.ready(REASON_ROLLED_BACK, message)
    plan.announce(Event("Warning", REASON_ROLLED_BACK, message))
    if refusal is not None:
        plan.events.append(Event("Warning", REASON_FORCED, MSG_FORCED.format(version=target.version, why=refusal.message, who=f" (rollback --force{who})")))
        plan.cond(ROLLBACK_ACCEPTED, ConditionStatus.TRUE, REASON_FORCED, message)
    else:
        plan.cond(ROLLBACK_ACCEPTED, ConditionStatus.TRUE, REASON_ROLLED_BACK, message)


def _refuse_rollback(plan: _Plan, reason: str, message: str) -> None:
    plan.cond(ROLLBACK_ACCEPTED, ConditionStatus.FALSE, reason, message)
    plan.events.append(Event("Warning", REASON_ROLLBACK_REFUSED, message))


def previous_stable(s: RolloutStatus, observed: Observed, model: str = "") -> VersionInfo | None:
    """The version that was stable before the current stable one, and may be served again.

    Walks the promotions back from the current stable version (the promotion that made it stable
    names the version it replaced); entries of refused candidates (an abort, an analysis
    rollback) never changed the stable version and are not followed. A version found that may
    not be served (refused, Rejected, gone) is skipped, going further back. Without a recorded
    promotion, the newest servable version older than the stable one.
    """
    current = s.stable_version
    seen = {current}
    stable_changes = [h for h in s.history if _changed_stable(h) and h.action == HistoryAction.PROMOTE]
    while True:
        entry = next((h for h in reversed(stable_changes) if h.to_version == current and h.from_version), None)
        if entry is None or entry.from_version in seen:
            break
        current = entry.from_version
        seen.add(current)
        found = observed.get(current)
        if found is not None and _refusal(found, s, model) is None:
            return found
    stable = observed.get(s.stable_version)
    older = [
        v for v in observed.versions
        if v.version not in seen and (stable is None or v.number < stable.number) and _refusal(v, s, model) is None
    ]
    return max(older, key=lambda v: v.number, default=None)


def _walk(plan: _Plan, spec: RolloutSpec, observed: Observed, measured: Mapping[str, analysis.Measured]) -> None:
    """Walk the canary steps as far as they go this reconcile."""
    s = plan.s
    # The handler measured for the step the Rollout was at: those values belong to that run only.
    measured_for = s.current_step_index
    steps = spec.strategy.canary.steps
    total = len(steps)
    candidate = s.candidate_version
    assert candidate is not None, "the canary steps are walked only with a candidate"
    failure = observed.serving_failures.get(candidate)
    if failure is not None and not observed.ready.get(candidate):
        # The candidate's Pods refuse to serve it (its bytes are not the registered ones).
        stable = s.stable_version
        plan.history(HistoryAction.ROLLBACK, candidate, stable, f"{failure[0]}: {failure[1]}", HistoryTrigger.SERVING)
        plan.end_canary()
        message = f"{candidate} cannot be served, all traffic on {stable}: {failure[1]}"
        plan.degraded(failure[0], message)
        plan.events.append(Event("Warning", failure[0], message))
        refused = observed.get(candidate)
        if refused is not None:
            plan.refuse_version(refused, failure[0], f"Rollout {plan.name}: {message}")
        return
    routing = observed.routing
    for _ in range(total + 1):
        index = s.current_step_index or 0
        where = dict(index=index + 1, total=total)
        if routing is not None and routing.error:
            # Never walk on (or analyse, or promote) on weights the router could not apply.
            message = MSG_ROUTING_FAILED.format(error=routing.error, candidate=candidate, **where)
            plan.degraded(REASON_TRAFFIC_ROUTING_FAILED, message)
            plan.requeue_in(10)
            return
        if index >= total:
            _promote(plan, observed)
            return
        step = steps[index]
        if step.set_weight is not None:
            s.canary_weight = step.set_weight
            if not _weight_applied(plan, observed, routing, candidate, where):
                return
            _next_step(plan)
            continue
        if step.pause is not None:
            if step.pause.duration is None:
                plan.paused(REASON_PAUSED, MSG_PAUSED_UNTIL_PROMOTED.format(**where, name=plan.name))
                return
            until = (s.step_start_time or plan.now) + analysis.parse_duration(step.pause.duration)
            if plan.now < until:
                plan.paused(REASON_PAUSED, MSG_PAUSED_FOR.format(**where, until=until.isoformat()))
                plan.requeue_in((until - plan.now).total_seconds())
                return
            _next_step(plan)
            continue
        experiment = step.experiment
        if experiment is not None:
            # A/B: the split is held first (applied like a setWeight), then judged.
            s.canary_weight = experiment.weight
            if not _weight_applied(plan, observed, routing, candidate, where):
                return
        # An analysis step, or the judgement of an experiment.
        metrics = _metrics(spec, step, s, observed)
        if metrics and analysis.prometheus_address(spec.analysis) is None:
            # Never promote blind: without a Prometheus the defaults cannot be measured.
            plan.paused(REASON_PAUSED, MSG_INCONCLUSIVE.format(detail=analysis.MSG_NO_PROMETHEUS))
            return
        run = s.analysis
        if run is None or run.step_index != index:
            run = analysis.start_run(metrics, index, plan.now)
        run = analysis.advance(metrics, run, measured if index == measured_for else {}, plan.now)
        s.analysis = run
        if run.phase == AnalysisPhase.FAILED:
            stable = s.stable_version
            detail = run.message or "analysis failed"
            _judge(plan, metrics, run, index, DECISION_ROLLBACK)
            plan.history(HistoryAction.ROLLBACK, candidate, stable, f"analysis failed: {detail}", HistoryTrigger.ANALYSIS)
            plan.end_canary()
            s.analysis = run  # keep the failing measurements visible
            message = MSG_ANALYSIS_FAILED.format(candidate=candidate, stable=stable, detail=detail)
            plan.degraded(REASON_ANALYSIS_FAILED, message)
            plan.announce(Event("Warning", REASON_ANALYSIS_FAILED, message))
            failed = observed.get(candidate)
            if failed is not None:
                plan.refuse_version(failed, REASON_ANALYSIS_FAILED, f"Rollout {plan.name}: {message}")
            return
        if run.phase == AnalysisPhase.INCONCLUSIVE:
            _judge(plan, metrics, run, index, DECISION_PAUSE)
            plan.paused(REASON_PAUSED, MSG_INCONCLUSIVE.format(detail=run.message))
            return
        if experiment is not None:
            until = (run.start_time or plan.now) + analysis.parse_duration(experiment.duration)
            if plan.now < until:
                what = MSG_EXPERIMENT_HOLD.format(weight=experiment.weight, candidate=candidate, until=until.isoformat(),
                                                  stable=s.stable_version, detail=run.message)
                plan.progressing(REASON_PROGRESSING, MSG_STEP.format(**where, what=what))
                due = analysis.next_due(metrics, run)
                plan.requeue_in(max(((min(due, until) if due else until) - plan.now).total_seconds(), 0.5))
                return
            if run.phase != AnalysisPhase.SUCCESSFUL:
                # The duration is over and the metrics have fewer conclusive measurements than needed.
                _judge(plan, metrics, run, index, DECISION_PAUSE, verdict=AnalysisPhase.INCONCLUSIVE)
                message = MSG_EXPERIMENT_NO_DATA.format(candidate=candidate, stable=s.stable_version, detail=run.message)
                plan.paused(REASON_PAUSED, message)
                return
            if experiment.on_success == ExperimentOutcome.PROMOTE:
                _judge(plan, metrics, run, index, DECISION_PROMOTE)
                _promote(plan, observed, why=f"experiment: not worse than {s.stable_version} ({run.message}); straight to 100%")
                return
        if run.phase == AnalysisPhase.SUCCESSFUL:
            _judge(plan, metrics, run, index, DECISION_CONTINUE)
            _next_step(plan)
            continue
        plan.progressing(REASON_PROGRESSING, MSG_STEP.format(**where, what=f"analysing {candidate} at {s.canary_weight}%: {run.message}"))
        due = analysis.next_due(metrics, run)
        if due is not None:
            plan.requeue_in(max((due - plan.now).total_seconds(), 0.5))
        return


def _judge(plan: _Plan, metrics: Sequence[AnalysisMetric], run: AnalysisStatus, index: int, decision: str,
           verdict: AnalysisPhase | None = None) -> None:
    """Records the canary's judgement against stable in status (and, for an experiment, an Event)."""
    s = plan.s
    if not metrics:
        return  # nothing was judged (analysis opted out)
    steps = plan.spec.strategy.canary.steps if plan.spec else []
    experiment = index < len(steps) and steps[index].experiment is not None
    by_name = {r.name: r for r in run.metrics}
    figures = []
    for metric in metrics:
        result = by_name.get(metric.name)
        last = result.measurements[-1] if result is not None and result.measurements else None
        if last is None:
            figures.append(f"{metric.name}: not measured")
            continue
        figures.append(f"{metric.name}: {last.phase}: {last.message}")
    verdict = verdict or run.phase
    before = plan.old.judgement
    if before is not None and (before.step_index, before.candidate, before.verdict, before.decision) == (
        index, s.candidate_version, verdict, decision
    ):
        return  # judged so already: no new status or Event when the same inputs are decided again
    s.judgement = Judgement(
        step_index=index, candidate=s.candidate_version, stable=s.stable_version, verdict=verdict,
        decision=decision, figures=figures, time=plan.now,
    )
    if not experiment:
        return  # an analysis step's rollback and pause Events already carry the failing figures
    summary = (f"experiment: canary {s.candidate_version} vs stable {s.stable_version}: {verdict} -> {decision}; "
               + "; ".join(figures))
    plan.events.append(Event("Warning" if decision == DECISION_ROLLBACK else "Normal", "CanaryJudged", summary[:1000]))


def _weight_applied(plan: _Plan, observed: Observed, routing: Routing | None, candidate: str, where: dict[str, int]) -> bool:
    """Whether `status.canaryWeight` is in force: the candidate is ready and the router's objects
    carry the weight (read back next reconcile). Otherwise says what is awaited and requeues."""
    if not observed.ready.get(candidate):
        what = MSG_WAITING_READY.format(version=candidate)
        plan.progressing(REASON_PROGRESSING, MSG_STEP.format(**where, what=what))
        plan.requeue_in(2)
        return False
    if routing is not None and routing.weight != plan.s.canary_weight:
        what = MSG_ROUTING_WAIT.format(weight=plan.s.canary_weight, version=candidate)
        plan.progressing(REASON_PROGRESSING, MSG_STEP.format(**where, what=what))
        plan.requeue_in(1)
        return False
    return True


def _next_step(plan: _Plan) -> None:
    plan.s.current_step_index = (plan.s.current_step_index or 0) + 1
    plan.s.step_start_time = plan.now
    plan.s.analysis = None


def _promote(plan: _Plan, observed: Observed, skip_history: bool = False, why: str | None = None) -> None:
    s = plan.s
    candidate = observed.get(s.candidate_version)
    old = s.stable_version
    if candidate is None:
        plan.end_canary()
        return
    blind = plan.spec is not None and analysis.analysis_disabled(plan.spec.analysis)
    if not skip_history:
        why = (why or "all canary steps passed") + (f"; {analysis.MSG_PROMOTED_WITHOUT_ANALYSIS}" if blind else "")
        plan.history(HistoryAction.PROMOTE, old, candidate.version, why, HistoryTrigger.STEPS)
    plan.make_stable(candidate, observed)
    plan.end_canary()
    plan.extra_serving.discard(candidate.version)
    healthy = MSG_HEALTHY.format(version=candidate.version) + (f"; {analysis.MSG_PROMOTED_WITHOUT_ANALYSIS}" if blind else "")
    plan.ready(REASON_HEALTHY, healthy)
    promoted = f"promoted {candidate.version} (was {old}); it serves 100% of traffic"
    plan.announce(Event("Normal", "Promoted", promoted + (f"; {analysis.MSG_PROMOTED_WITHOUT_ANALYSIS}" if blind else "")))


def _finish(plan: _Plan, observed: Observed) -> Decision:
    s = plan.s
    serve: list[str] = []
    if s.stable_version:
        serve.append(s.stable_version)
    if s.candidate_version and s.candidate_version not in serve:
        serve.append(s.candidate_version)
    # The version traffic just left keeps its Pods for scaleDownDelaySeconds.
    delay = plan.spec.scale_down_delay_seconds if plan.spec else 0
    for entry in reversed(s.history):
        remaining = delay - (plan.now - (entry.time or plan.now)).total_seconds()
        if remaining <= 0:
            break  # older entries left traffic even earlier
        version = entry.from_version
        if version and version not in serve and observed.get(version) is not None:
            serve.append(version)
            plan.requeue_in(remaining)
    for version in plan.extra_serving:
        if version not in serve and delay > 0 and observed.get(version) is not None:
            serve.append(version)
            plan.requeue_in(delay)
    if s.candidate_version and plan.requeue is None:
        plan.requeue_in(5)
    s.phase = phase_of(s)
    events = list(plan.events)
    if s.phase != plan.old.phase and s.phase is not None and not plan.announced:
        events.append(Event("Warning" if s.phase == RolloutPhase.DEGRADED else "Normal", str(s.phase), s.message or ""))
    new = s
    return Decision(
        status=new,
        status_patch=merge_patch(_dump(plan.old), _dump(new)),
        events=tuple(events),
        serve=tuple(serve),
        stable=s.stable_version,
        canary=s.candidate_version or s.stable_version,
        weight=s.canary_weight if s.candidate_version else 0,
        version_serving=dict(plan.version_serving),
        requeue_after=plan.requeue,
    )


def _dump(status: RolloutStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)
