"""What a FineTuneJob's status should be, decided from its spec, its status and its children.

`decide` is the whole brain of the FineTuneJob controller and is pure: the handler observes
(spec, status, child objects, the clock), `decide` returns the status the object should have
and the Events worth recording, and the handler acts (patches the status when it changed,
records the Events). Re-running it on the same inputs returns the same status and no Events,
which is what makes a restarted operator, a resync or a duplicate watch event harmless.

`decide` walks the pipeline in a fixed order (an invalid spec fails it before any child exists;
then data preparation, training, evaluation, registration) and writes conditions; it never sets
the phase. One function, `finetunejob_phase.phase_of`, derives the phase from the computed
conditions, the start time and whether something outside the job holds it.

Conditions:
- `Accepted`: whether the spec is usable. False with reason InvalidSpec names every problem with
  the field and the fix. This covers what the CRD schema and CEL rules cannot express (the shape
  of a model or dataset location per scheme, settings that make no sense together) and, as a
  second line, anything the API server let through that the pydantic model rejects.
- `Succeeded`: the summary condition of a bounded job (Unknown while it runs).

The module is the phase machine; its seams are modules of their own: the reason catalog
(`finetunejob_reasons`: condition types, reasons and the messages users read), reading the
children and the trainer's progress (`finetunejob_children`: states, root causes, GPU time,
untrusted progress, which child events matter), spec validation beyond the schema
(`finetunejob_spec`), and the budget (`budget`).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from finetune_operator.api import common as api_common
from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.finetunejob import (
    MSG_BUDGET_NO_GPUS,
    MSG_DPO_FORMAT,
    MSG_QLORA_GPUS,
    FineTuneJobPhase,
    FineTuneJobSpec,
    FineTuneJobStatus,
    ArtifactStatus,
    BudgetStatus,
    CheckpointStatus,
    DataReport,
    EvaluationProgress,
    Progress,
    SourceReport,
    SplitSizes,
    SyntheticReport,
)
from finetune_operator.api.modelversion import ModelVersionSpec
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.logic import advice, budget, conditions, gates
from finetune_operator.logic import spec as spec_problems
from finetune_operator.logic.events import Event, EventType
from finetune_operator.logic.spec import InvalidSpec, SpecProblem
from finetune_operator.logic.status import merge_patch
from finetune_operator.logic.finetunejob_reasons import *  # noqa: F403 - the reason catalog, re-exported
from finetune_operator.logic.finetunejob_children import (
    clamp_percent,
    creation_failure,
    job_condition,
    parse_time,
    pod_run_seconds,
    read_progress,
    root_cause,
    termination_json,
    waiting_cause,
)
from finetune_operator.logic.finetunejob_phase import Hold, phase_of
from finetune_operator.logic.finetunejob_spec import (
    semantic_problems,
)

KIND = "FineTuneJob"

# Cross-field rules of the model whose pydantic error has no field: where the CEL rule points.
_FIELD_OF_RULE = {
    MSG_QLORA_GPUS: "spec.resources.gpusPerNode",
    MSG_BUDGET_NO_GPUS: "spec.budget",
    MSG_DPO_FORMAT: "spec.dataset.format",
}


@dataclass(frozen=True)
class Children:
    """The FineTuneJob's child objects as observed: Jobs, their Pods, the progress ConfigMap."""

    jobs: tuple[Mapping[str, Any], ...] = ()
    pods: tuple[Mapping[str, Any], ...] = ()
    progress: Mapping[str, Any] | None = None
    config: Mapping[str, Any] | None = None
    model_version: Mapping[str, Any] | None = None
    # The Job controller's FailedCreate Events on these Jobs: the API refused to create a Pod.
    creation_failures: tuple[Mapping[str, Any], ...] = ()

    def job(self, name: str) -> Mapping[str, Any] | None:
        return next((j for j in self.jobs if j["metadata"]["name"] == name), None)

    def pods_of(self, job_name: str) -> list[Mapping[str, Any]]:
        pods = [p for p in self.pods if (p["metadata"].get("labels") or {}).get("job-name") == job_name]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    def of_run(self, uid: str) -> tuple[Children, bool]:
        """The children of the FineTuneJob with this uid, and whether children of an earlier
        FineTuneJob of the same name (deleted, not yet garbage-collected) are still there.

        Children are found by name and label, which a FineTuneJob re-created under the same name
        shares with its predecessor: only the owner's uid tells them apart. An object with no
        owner at all is taken as this run's.
        """
        if not uid:
            return self, False

        def stale(obj: Mapping[str, Any] | None, owners: set[str]) -> bool:
            refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
            return bool(refs) and not any(ref.get("uid") in owners for ref in refs)

        jobs = tuple(j for j in self.jobs if not stale(j, {uid}))
        own_jobs = {j["metadata"].get("uid") for j in jobs} | {uid}
        pods = tuple(p for p in self.pods if not stale(p, own_jobs))
        progress = None if stale(self.progress, {uid}) else self.progress
        config = None if stale(self.config, {uid}) else self.config
        left_over = (
            len(jobs) < len(self.jobs)
            or len(pods) < len(self.pods)
            or (progress is None) != (self.progress is None)
            or (config is None) != (self.config is None)
        )
        return Children(jobs=jobs, pods=pods, progress=progress, config=config, model_version=self.model_version,
                        creation_failures=self.creation_failures), left_over


@dataclass(frozen=True)
class Registration:
    """A ModelVersion to create: `version` is None when the next free v<N> is to be allocated."""

    model_name: str
    version: str | None
    spec: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """What to do: the status to have (and the patch to get there), Events, children to act on.

    `create` lists child objects to create when absent (deterministic names: creating one that
    exists is a no-op, never a duplicate); `suspend` maps a Job name to the spec.suspend value
    it must have.
    """

    status: FineTuneJobStatus
    status_patch: dict[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    create: tuple[dict[str, Any], ...] = ()
    suspend: tuple[tuple[str, bool], ...] = ()
    register: Registration | None = None

    @property
    def status_changed(self) -> bool:
        return bool(self.status_patch)

def parse_spec(raw: Mapping[str, Any] | None) -> FineTuneJobSpec | InvalidSpec:
    """The typed spec, or every problem with it (schema errors first, then semantic ones)."""
    try:
        spec = FineTuneJobSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        return InvalidSpec(spec_problems.problems_from_validation_error(exc, KIND, _FIELD_OF_RULE))
    problems = semantic_problems(spec)
    return InvalidSpec(problems) if problems else spec


def parse_status(raw: Mapping[str, Any] | None) -> FineTuneJobStatus:
    """The status as last written; an unreadable one counts as empty and gets rewritten."""
    try:
        return FineTuneJobStatus.model_validate(dict(raw or {}))
    except ValidationError:
        return FineTuneJobStatus()


def decide(
    spec: FineTuneJobSpec | InvalidSpec,
    status: FineTuneJobStatus,
    children: Children,
    now: datetime.datetime,
    *,
    generation: int,
    owner: builders.Owner | None = None,
    settings: builders.Settings | None = None,
    gpu_hour_price: float = 0.0,
) -> Decision:
    """The status a FineTuneJob should have now, the children to create, the Events to record.

    The status is derived in a fixed order from what is observed, never stored as intent:
    invalid spec -> Failed; finished before -> unchanged; then the data-preparation Job, then the
    training Job, each of which may be missing (create it), suspended, waiting (unschedulable,
    image pull, queue), running, failed (with its root cause) or complete. The phase follows
    from the result (`phase_of`).
    """
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    owner = owner or builders.Owner(name="unknown", namespace="default", uid="")
    settings = settings or builders.Settings()
    plan = _Plan(status, generation, now, children.creation_failures)

    if _finished(status):
        # A finished job is history: later edits of its spec start nothing.
        plan.message = status.message
        return plan.decision(status)
    limit: budget.Limit | None = None
    price = gpu_hour_price
    if not isinstance(spec, InvalidSpec):
        try:
            setup = builders.setup_objects(owner, spec, settings)
        except builders.RenderError as exc:
            field_path, _, problem = str(exc).partition(": ")
            problem, _, fix = problem.partition("; ")
            spec = InvalidSpec((SpecProblem(field_path, problem, fix or "fix the field named"),))
    if not isinstance(spec, InvalidSpec):
        price = spec.resources.cost_per_gpu_hour if spec.resources.cost_per_gpu_hour is not None else gpu_hour_price
        found = budget.limit_of(spec.budget, price)
        if isinstance(found, tuple):
            spec = InvalidSpec((SpecProblem(*found),))
        else:
            limit = found
    if isinstance(spec, InvalidSpec):
        message = MSG_INVALID_SPEC.format(problems=spec.message)
        plan.set(ACCEPTED, ConditionStatus.FALSE, REASON_INVALID_SPEC, message)
        plan.fail(REASON_INVALID_SPEC, message, completed=False)
        return plan.decision(status)

    plan.set(ACCEPTED, ConditionStatus.TRUE, REASON_SPEC_VALID, MSG_SPEC_VALID)
    plan.set(advice.ADVICE, *advice.condition(spec, plan.status.data_report))
    if plan.status.output_uri is None:
        plan.status.output_uri = builders.output_uri(owner, spec, settings)
    children, left_over = children.of_run(owner.uid)
    if left_over and not children.jobs:
        # Starting now would share ConfigMaps (and so the output location) with the old run.
        plan.hold(Hold.WAITING, REASON_PREVIOUS_RUN, MSG_PREVIOUS_RUN)
        return plan.decision(status)
    prepare_name = builders.prepare_job_name(owner.name)
    train_name = builders.train_job_name(owner.name)
    prepare, train = children.job(prepare_name), children.job(train_name)
    queue = spec.resources.queue_name

    # --- data preparation -------------------------------------------------------------------
    if prepare is None:
        if spec.suspend:
            plan.hold(Hold.SUSPENDED, REASON_SUSPENDED, MSG_SUSPENDED)
            return plan.decision(status)
        store = builders.artifact_store_pvc(owner.namespace, settings) if not spec.output.uri else None
        plan.create = [*([store] if store else []), *setup, builders.prepare_job(owner, spec, settings)]
        plan.started()
        plan.running(REASON_PREPARING, MSG_PREPARING)
        return plan.decision(status)

    plan.started(prepare)
    plan.spec_applied(children.config, setup[0])
    prepare_pods = children.pods_of(prepare_name)
    if job_condition(prepare, "Failed"):
        cause = root_cause(prepare, prepare_pods, "data preparation")
        plan.set(DATA_READY, ConditionStatus.FALSE, REASON_DATA_FAILED, cause)
        plan.fail(REASON_DATA_FAILED, cause)
        return plan.decision(status)
    if not job_condition(prepare, "Complete"):
        plan.suspend_to(prepare, spec.suspend, queue=None)
        plan.wait_or(prepare, prepare_pods, spec.suspend, None, REASON_PREPARING, MSG_PREPARING)
        return plan.decision(status)

    report = termination_json(prepare_pods, succeeded=True) or {}
    plan.data_report(report.get("dataset") or {})
    plan.set(advice.ADVICE, *advice.condition(spec, plan.status.data_report))  # now with the prepared count
    plan.set(DATA_READY, ConditionStatus.TRUE, REASON_DATA_READY, MSG_DATA_READY.format(summary=_data_summary(plan.status.data_report)))

    # --- training ------------------------------------------------------------------------------
    if train is None:
        plan.budget(limit, spec, price, settings.gpu_sustained_flops)  # the estimate from the data, before any step
        if spec.suspend:
            plan.hold(Hold.SUSPENDED, REASON_SUSPENDED, MSG_SUSPENDED)
            return plan.decision(status)
        plan.create = [builders.train_job(owner, spec, settings)]
        plan.running(REASON_TRAINING, MSG_TRAINING_STARTING)
        return plan.decision(status)

    train_pods = children.pods_of(train_name)
    plan.progress(children.progress)
    plan.restarts(train, failed=bool(job_condition(train, "Failed")))
    plan.gpu_usage(train_pods, spec.resources.gpus_per_node, price)
    if job_condition(train, "Failed"):
        cause = root_cause(train, train_pods, "training")
        plan.set(TRAINED, ConditionStatus.FALSE, REASON_TRAINING_FAILED, cause)
        plan.fail(REASON_TRAINING_FAILED, cause)
        return plan.decision(status)
    if job_condition(train, "Complete"):
        result = termination_json(train_pods, succeeded=True) or {}
        plan.trained(result)
        uri = plan.status.artifact.uri if plan.status.artifact else "(unknown)"
        message = MSG_TRAINED.format(uri=uri) + _base_model_note(plan.status.artifact)
        plan.set(TRAINED, ConditionStatus.TRUE, REASON_TRAINED, message)
        return _evaluate_and_register(plan, status, spec, children, owner, settings)
    stop = plan.budget(limit, spec, price, settings.gpu_sustained_flops)
    if plan.suspend_to(train, spec.suspend or stop, queue=queue) is False:
        plan.resumed()  # the Pods from before are gone: what they used is kept, new ones count on top
    if stop and not spec.suspend:
        condition = conditions.find_condition(plan.conditions, budget.WITHIN_BUDGET)
        assert condition is not None, "plan.budget set the condition it stopped on"
        plan.fail(budget.REASON_BUDGET_EXCEEDED, condition.message, completed=False, tell_reason=True)
        return plan.decision(status)
    plan.wait_or(train, train_pods, spec.suspend, queue, REASON_TRAINING, _training_message(plan.status.progress))
    return plan.decision(status)


def _evaluate_and_register(
    plan: _Plan,
    status: FineTuneJobStatus,
    spec: FineTuneJobSpec,
    children: Children,
    owner: builders.Owner,
    settings: builders.Settings,
) -> Decision:
    """After training: the evaluation Job, then the ModelVersion, then the verdict."""
    record = None
    if spec.evaluation.enabled:
        eval_name = builders.eval_job_name(owner.name)
        evaluation = children.job(eval_name)
        if evaluation is None:
            plan.create = [builders.eval_job(owner, spec, settings)]
            plan.running(REASON_EVALUATING, MSG_EVALUATING)
            return plan.decision(status)
        eval_pods = children.pods_of(eval_name)
        if job_condition(evaluation, "Failed"):
            cause = root_cause(evaluation, eval_pods, "evaluation")
            plan.set(EVALUATED, ConditionStatus.FALSE, REASON_EVALUATION_FAILED, cause)
            plan.fail(REASON_EVALUATION_FAILED, cause)
            return plan.decision(status)
        if not job_condition(evaluation, "Complete"):
            plan.suspend_to(evaluation, spec.suspend, queue=None)
            message = _evaluation_message(plan.status.evaluation_progress)
            plan.wait_or(evaluation, eval_pods, spec.suspend, None, REASON_EVALUATING, message)
            return plan.decision(status)
        record = evaluation_record(termination_json(eval_pods, succeeded=True) or {}, spec)
        plan.set(EVALUATED, ConditionStatus.TRUE, REASON_EVALUATED, MSG_EVALUATED)

    mv = children.model_version
    if mv is None:
        artifact = plan.status.artifact
        problem = artifact_problem(artifact, builders.output_location(owner, spec, settings))
        if problem:
            plan.fail(REASON_REGISTRATION_FAILED, problem)
            return plan.decision(status)
        assert artifact is not None, "artifact_problem reports a missing artifact"
        report = plan.status.data_report
        plan.register = Registration(
            model_name=mv_builders.model_name(owner.name, spec),
            version=spec.output.version,
            spec=mv_builders.model_version_spec(
                job_name=owner.name,
                spec=spec,
                version=spec.output.version or "v0",
                artifact={
                    "uri": str(api_common.parse_location(artifact.uri)),
                    "digest": artifact.digest,
                    "type": artifact.type,
                },
                dataset_digest=report.digest if report else None,
                base_model_commit=artifact.base_model_commit,
                data_summary=_data_card(report),
                trainer_image=spec.image or settings.trainer_image,
                prepared_data_uri=builders.prepared_data_uri(owner, spec, settings),
                evaluation=record,
                cost=mv_builders.TrainingCost(
                    gpu_hours=plan.status.gpu_hours, cost=plan.status.estimated_cost,
                    tokens=plan.status.tokens_trained,
                ),
            ),
        )
        plan.running(REASON_EVALUATING, MSG_REGISTERING)
        return plan.decision(status)

    mv_name = mv["metadata"]["name"]
    plan.status.model_version = mv_name
    mv_spec = mv.get("spec") or {}
    if record is None and mv_spec.get("evaluation") is None:
        message = MSG_REGISTERED_UNEVALUATED.format(mv=mv_name)
        plan.succeed(REASON_SUCCEEDED, message)
        return plan.decision(status)
    registered = ModelVersionSpec.model_validate(mv_spec).evaluation
    assert registered is not None, f"ModelVersion {mv_name} of an evaluated run has no spec.evaluation"
    results = gates.judge_all(registered.gates, registered.metrics, registered.base_metrics, gates.parent_figures(registered))
    verdict = gates.summary(results)
    if gates.blocking_failures(results):
        plan.set(GATES_PASSED, ConditionStatus.FALSE, REASON_GATES_FAILED, verdict)
        message = MSG_REJECTED.format(mv=mv_name, verdict=verdict)
    else:
        plan.set(GATES_PASSED, ConditionStatus.TRUE, REASON_GATES_PASSED, verdict)
        message = MSG_APPROVED.format(mv=mv_name, verdict=verdict)
    # A rejection is an outcome of a successful run, not a failure of the job.
    plan.succeed(REASON_SUCCEEDED, message)
    return plan.decision(status)


_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_COMMIT = re.compile(r"^[a-f0-9]{40}$|^[a-f0-9]{64}$")


def _base_model_note(artifact: ArtifactStatus | None) -> str:
    """How an hf:// base model was loaded, for the Trained condition; empty for other models."""
    if artifact is None or not artifact.base_model_commit:
        return ""
    source = "from the model cache" if artifact.base_model_from_cache else "downloaded from the Hub"
    return f"; base model commit {artifact.base_model_commit[:12]} {source}"


def artifact_problem(artifact: ArtifactStatus | None, run: api_common.Location) -> str | None:
    """Why the artifact the trainer reported must not be registered; None when it may be.

    The trainer's report is untrusted: a ModelVersion may only point inside this run's own
    location (never at another run's adapter, a claim's root or a node path elsewhere), with a
    well-formed digest.
    """
    if artifact is None or not artifact.digest:
        return "training reported no artifact digest; nothing to register"
    if not _DIGEST.match(artifact.digest):
        return f"training reported a malformed artifact digest {artifact.digest[:80]!r}; nothing registered"
    try:
        location = api_common.parse_location(artifact.uri, allow_root=False)
    except api_common.LocationError as exc:
        return f"training reported an unusable artifact location: {exc}; nothing registered"
    if location == run or not run.contains(location):
        return (
            f"training reported the artifact at {artifact.uri[:256]}, outside this run's location {run}; "
            "nothing registered"
        )
    return None


def evaluation_record(result: Mapping[str, Any], spec: FineTuneJobSpec) -> dict[str, Any]:
    """The evaluation as registered on the ModelVersion: metrics, base metrics and the gates."""
    def numbers(values: Any) -> dict[str, float]:
        return {str(k): float(v) for k, v in (values or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    record: dict[str, Any] = {
        "metrics": numbers(result.get("metrics")),
        "baseMetrics": numbers(result.get("base")),
        "standardErrors": numbers(result.get("stderr")),
        "gates": [g.model_dump(mode="json", by_alias=True) for g in spec.evaluation.effective_gates(parent=builders.continues(spec))],
    }
    if isinstance(result.get("parent"), Mapping):
        record["parentMetrics"] = numbers(result.get("parent"))
        record["metricsOnParentSplit"] = numbers(result.get("on_parent_split"))
    if result.get("results"):
        record["resultsUri"] = str(result["results"])
    if isinstance(result.get("base_reused"), list) and result["base_reused"]:
        record["baseReusedSuites"] = [str(s)[:64] for s in result["base_reused"][:16]]
    return record


def _synthetic_report(teacher: Any) -> SyntheticReport | None:
    if not isinstance(teacher, Mapping):
        return None
    return SyntheticReport(
        requested=int(teacher.get("requested", 0)),
        generated=int(teacher.get("generated", 0)),
        rejected=int(teacher.get("rejected_total", 0)),
        requests=int(teacher.get("requests", 0)),
        retries=int(teacher.get("retries", 0)),
    )


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _source_reports(sources: Any) -> list[SourceReport] | None:
    if not isinstance(sources, list):
        return None
    reports = []
    for entry in sources[:8]:
        if not isinstance(entry, Mapping):
            continue
        raw_splits = entry.get("splits")
        splits: Mapping[str, Any] = raw_splits if isinstance(raw_splits, Mapping) else {}
        reports.append(SourceReport(
            name=str(entry.get("name", "?"))[:63],
            kind=str(entry["kind"])[:16] if entry.get("kind") else None,
            task=str(entry["task"])[:63] if entry.get("task") else None,
            read=max(0, int(entry.get("read", 0))),
            mixed=max(0, int(entry.get("mixed", 0))),
            final=max(0, int(entry.get("final", 0))),
            splits=SplitSizes(**{k: max(0, int(splits.get(k, 0))) for k in ("train", "validation", "test")}),
        ))
    return reports or None


def _data_card(report: DataReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "records": report.total_records,
        "duplicatesDropped": report.duplicates_dropped,
        "piiFindings": dict(report.pii_findings),
        "splits": report.splits.model_dump(mode="json"),
        "digest": report.digest,
        **({"sources": {s.name: {"kind": s.kind, "records": s.final, **({"task": s.task} if s.task else {})} for s in report.sources}}
           if report.sources else {}),
    }


class _Plan:
    """The status under construction, plus the children to create and Jobs to (un)suspend."""

    def __init__(
        self, old: FineTuneJobStatus, generation: int, now: datetime.datetime,
        creation_failures: Sequence[Mapping[str, Any]] = (),
    ):
        self.old = old
        self.creation_failures = creation_failures
        self.generation = generation
        self.now = now
        self.status = old.model_copy(deep=True)
        self.conditions = list(old.conditions)
        self.held = Hold.NONE
        self.tell_reason = False  # the phase Event names the Succeeded condition's reason
        self.message: str | None = old.message
        self.create: list[dict[str, Any]] = []
        self.suspend: list[tuple[str, bool]] = []
        self.register: Registration | None = None

    def set(self, type: str, value: ConditionStatus, reason: str, message: str) -> None:
        self.conditions = conditions.set_condition(self.conditions, type, value, reason, message, self.generation, self.now)

    def running(self, reason: str, message: str) -> None:
        """The pipeline is at work (its stage, and so the phase, follows from the conditions)."""
        self.held, self.message = Hold.NONE, message
        self.set(SUCCEEDED, ConditionStatus.UNKNOWN, reason, message)

    def hold(self, hold: Hold, reason: str, message: str) -> None:
        """Something outside the pipeline keeps it from going on: spec.suspend, or a wait."""
        self.held, self.message = hold, message
        self.set(SUCCEEDED, ConditionStatus.UNKNOWN, reason, message)

    def succeed(self, reason: str, message: str) -> None:
        self._finish(ConditionStatus.TRUE, reason, message, completed=True)

    def fail(self, reason: str, message: str, *, completed: bool = True, tell_reason: bool = False) -> None:
        """Failed; `completed=False` for a failure that a spec change can lift (no completion time);
        `tell_reason`: the Event carries this reason instead of the generic Failed."""
        self._finish(ConditionStatus.FALSE, reason, message, completed=completed)
        self.tell_reason = tell_reason

    def _finish(self, outcome: ConditionStatus, reason: str, message: str, *, completed: bool) -> None:
        self.held, self.message = Hold.NONE, message
        self.set(SUCCEEDED, outcome, reason, message)
        if completed and self.status.completion_time is None:
            self.status.completion_time = self.now

    def started(self, job: Mapping[str, Any] | None = None) -> None:
        if self.status.start_time is None:
            created = (job or {}).get("metadata", {}).get("creationTimestamp")
            self.status.start_time = parse_time(created) or self.now

    def suspend_to(self, job: Mapping[str, Any], suspend: bool, queue: str | None) -> bool | None:
        """Have the Job suspended or not; returns the value it is changed to, None if unchanged."""
        current = bool(job.get("spec", {}).get("suspend"))
        if suspend and not current:
            self.suspend.append((job["metadata"]["name"], True))
            return True
        if not suspend and current and not queue:
            # With a queue, Kueue decides when a suspended Job starts.
            self.suspend.append((job["metadata"]["name"], False))
            return False
        return None

    def resumed(self) -> None:
        self.status.gpu_hours_before_resume = self.status.gpu_hours
        self.status.resumed_at = self.now

    def budget(self, limit: budget.Limit | None, spec: FineTuneJobSpec, price: float, gpu_flops: float = 0.0) -> bool:
        """Status and condition against spec.budget; True when the training must stop now."""
        if limit is None:
            self.status.budget = None
            self.conditions = [c for c in self.conditions if c.type != budget.WITHIN_BUDGET]
            return False
        previous = self.old.budget
        if previous is not None and previous.exceeded and round(limit.gpu_hours, 4) <= (previous.limit_gpu_hours or 0.0):
            # Stopped at this limit (or a higher one), it stays stopped until the budget is raised:
            # the stopped trainer's last reports (no ETA any more) must not start it again.
            self.status.budget = previous.model_copy(update={"limit_gpu_hours": round(limit.gpu_hours, 4)})
            return True
        gpus = spec.resources.gpus_per_node * spec.resources.nodes
        prior = budget.prior_estimate(spec, self.status.data_report, gpu_flops, gpus)
        verdict = budget.assess(limit, self.status.gpu_hours or 0.0, self.status.progress, gpus=gpus,
                                checkpoint_every=builders.checkpoint_interval(spec), prior=prior)
        self.set(budget.WITHIN_BUDGET, *verdict.condition)
        estimate = round(verdict.estimate, 4) if verdict.estimate is not None else None
        self.status.budget = BudgetStatus(
            limit_gpu_hours=round(limit.gpu_hours, 4),
            estimated_gpu_hours=estimate,
            estimated_cost=round(estimate * price, 2) if estimate is not None and price else None,
            estimated_from=verdict.source,
            exceeded=verdict.stop,
        )
        return verdict.stop

    def wait_or(
        self,
        job: Mapping[str, Any],
        pods: Sequence[Mapping[str, Any]],
        suspend: bool,
        queue: str | None,
        reason: str,
        message: str,
    ) -> None:
        """Running, or waiting for something outside the job: say which, with the cause."""
        if suspend:
            self.hold(Hold.SUSPENDED, REASON_SUSPENDED, MSG_SUSPENDED)
            return
        if job.get("spec", {}).get("suspend") and queue:
            self.hold(Hold.QUEUED, REASON_QUEUED, MSG_QUEUED.format(queue=queue))
            return
        waiting = waiting_cause(pods) or creation_failure(job, pods, self.creation_failures)
        if waiting:
            self.hold(Hold.BLOCKED, waiting[0], waiting[1])
            return
        self.running(reason, message)

    def spec_applied(self, observed: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> None:
        """Training fields are fixed once work starts: say so when the spec moved on."""
        if observed is None:
            return
        if (observed.get("data") or {}) == desired.get("data"):
            self.set(SPEC_APPLIED, ConditionStatus.TRUE, REASON_SPEC_APPLIED, MSG_SPEC_APPLIED)
        else:
            self.set(SPEC_APPLIED, ConditionStatus.FALSE, REASON_SPEC_NOT_APPLIED, MSG_SPEC_NOT_APPLIED)

    def data_report(self, summary: Mapping[str, Any]) -> None:
        if not summary:
            return
        counts = summary.get("counts") or {}
        dropped = summary.get("dropped") or {}
        splits = summary.get("splits") or {}
        pii = summary.get("pii") or {}
        self.status.data_report = DataReport(
            format=summary.get("format"),
            total_records=int(counts.get("read", 0)),
            valid_records=int(counts.get("after_quality", counts.get("final", 0))),
            invalid_records=int(sum(v for k, v in dropped.items() if k not in _NOT_INVALID)),
            duplicates_dropped=int(dropped.get("exact_duplicate", 0) + dropped.get("near_duplicate", 0)),
            pii_findings={str(k): int(v) for k, v in pii.items()} if isinstance(pii, Mapping) else {},
            balanced_dropped=int(dropped.get("balance", 0)),
            splits=SplitSizes(**{k: int(splits.get(k, 0)) for k in ("train", "validation", "test")}),
            digest=summary.get("sha256"),
            synthetic=_synthetic_report(summary.get("synthetic")),
            sources=_source_reports(summary.get("sources")),
            tasks={str(k)[:63]: int(v) for k, v in list(summary["tasks"].items())[:16]} if isinstance(summary.get("tasks"), Mapping) else None,
            train_tokens=_count(summary.get("train_tokens")),
            model_parameters=_count(summary.get("model_parameters")),
        )

    def progress(self, progress_map: Mapping[str, Any] | None) -> None:
        """The trainer's latest progress line, if it is one we can trust (see `read_progress`)."""
        line, problem = read_progress(progress_map)
        if problem is not None:
            name = ((progress_map or {}).get("metadata") or {}).get("name", "?")
            message = MSG_PROGRESS_IGNORED.format(configmap=name, problem=problem)
            self.set(PROGRESS_REPORTED, ConditionStatus.FALSE, REASON_PROGRESS_IGNORED, message)
            return
        if line is None:
            return
        self.set(PROGRESS_REPORTED, ConditionStatus.TRUE, REASON_PROGRESS_VALID, MSG_PROGRESS_VALID)
        if line.get("stage") == "evaluate":
            # The evaluator's lines replace the training line in the ConfigMap; the training
            # progress in status stays as training left it.
            self.status.evaluation_progress = EvaluationProgress(
                suite=line.get("suite"),
                model=line.get("model"),
                prompts_done=line.get("prompts_done"),
                prompts_total=line.get("prompts_total"),
                percent=clamp_percent(line.get("percent")),
                eta_seconds=int(line["eta_seconds"]) if line.get("eta_seconds") is not None else None,
                base_reused=[str(s)[:64] for s in line["base_reused"][:16]] if isinstance(line.get("base_reused"), list) else None,
            )
            return
        previous = self.status.progress or Progress()
        self.status.progress = Progress(
            step=line.get("step"),
            total_steps=line.get("total_steps"),
            epoch=line.get("epoch"),
            percent=clamp_percent(line.get("percent")),
            eta_seconds=int(line["eta_seconds"]) if line.get("eta_seconds") is not None else None,
            train_loss=line.get("loss", previous.train_loss),
            eval_loss=line.get("eval_loss", previous.eval_loss),
            best_eval_loss=line.get("best_eval_loss", previous.best_eval_loss),
        )
        checkpoint = line.get("checkpoint")
        if checkpoint:
            self.status.latest_checkpoint = CheckpointStatus(
                uri=checkpoint["uri"], step=checkpoint.get("step"), time=parse_time(checkpoint.get("time"))
            )

    def restarts(self, job: Mapping[str, Any], *, failed: bool) -> None:
        # Every failed Pod but the last one of a failed Job was followed by another attempt.
        attempts_failed = int(job.get("status", {}).get("failed") or 0)
        self.status.restarts = max(self.status.restarts, attempts_failed - (1 if failed and attempts_failed else 0))

    def gpu_usage(self, pods: Sequence[Mapping[str, Any]], gpus_per_node: int, price: float) -> None:
        """GPU-hours of the training Pods: those since the last resume, on top of what the Pods
        before it used (a suspended Job's Pods are deleted, and what they used must not be lost)."""
        if gpus_per_node <= 0:
            return
        since = self.status.resumed_at
        counted = [p for p in pods if since is None or (parse_time(p["metadata"].get("creationTimestamp")) or since) >= since]
        seconds = sum(pod_run_seconds(pod, self.now) for pod in counted)
        before = self.status.gpu_hours_before_resume or 0.0
        hours = max(self.status.gpu_hours or 0.0, round(before + seconds * gpus_per_node / 3600.0, 4))
        self.status.gpu_hours = hours
        self.status.estimated_cost = round(hours * price, 2) if price else None

    def trained(self, result: Mapping[str, Any]) -> None:
        artifact = result.get("artifact")
        # The termination message is the trainer's word: only strings are taken from it.
        if isinstance(artifact, Mapping) and isinstance(artifact.get("uri"), str) and artifact["uri"]:
            digest = artifact.get("sha256") if isinstance(artifact.get("sha256"), str) else None
            if digest and not digest.startswith("sha256:"):
                digest = f"sha256:{digest}"
            kind = artifact.get("kind") if isinstance(artifact.get("kind"), str) else None
            commit = artifact.get("base_model_commit")
            commit = commit if isinstance(commit, str) and _COMMIT.match(commit) else None
            cached = artifact.get("base_model_from_cache")
            self.status.artifact = ArtifactStatus(
                uri=artifact["uri"], digest=digest, type=kind, base_model_commit=commit,
                base_model_from_cache=cached if isinstance(cached, bool) else None,
            )
        metrics = result.get("metrics") or {}
        tokens = metrics.get("num_input_tokens_seen")
        if isinstance(tokens, int | float) and not isinstance(tokens, bool) and tokens > 0:
            self.status.tokens_trained = int(tokens)
        progress = self.status.progress or Progress()
        self.status.progress = progress.model_copy(
            update={
                "percent": 100.0,
                "eta_seconds": 0,
                "step": metrics.get("global_step", progress.step),
                "total_steps": progress.total_steps or metrics.get("global_step"),
                # The last logged loss, not the run's mean (metrics' train_loss) the trainer reports.
                "train_loss": progress.train_loss if progress.train_loss is not None else metrics.get("train_loss"),
                "eval_loss": metrics.get("eval_loss", progress.eval_loss),
                "best_eval_loss": metrics.get("best_eval_loss", progress.best_eval_loss),
            }
        )

    def decision(self, old: FineTuneJobStatus) -> Decision:
        new = self.status.model_copy(
            update={
                "observed_generation": self.generation,
                "phase": self.old.phase if _finished(self.old) else phase_of(self.conditions, self.status.start_time, self.held),
                "conditions": self.conditions,
                "message": self.message,
            }
        )
        return Decision(
            status=new,
            status_patch=merge_patch(_dump(old), _dump(new)),
            events=_events(old, new, self.held, self.tell_reason),
            create=tuple(self.create),
            suspend=tuple(self.suspend),
            register=self.register,
        )


_NOT_INVALID = {"exact_duplicate", "near_duplicate", "balance"}


def _dump(status: FineTuneJobStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)


def _finished(status: FineTuneJobStatus) -> bool:
    return status.phase in (FineTuneJobPhase.SUCCEEDED, FineTuneJobPhase.FAILED) and status.completion_time is not None


def _data_summary(report: DataReport | None) -> str:
    if report is None:
        return "no data report"
    s = report.splits
    return f"{report.total_records} records read, {s.train}/{s.validation}/{s.test} train/validation/test"


def _evaluation_message(progress: EvaluationProgress | None) -> str:
    if not progress or progress.prompts_done is None or not progress.suite:
        return MSG_EVALUATING
    eta = f", ETA {progress.eta_seconds}s" if progress.eta_seconds is not None else ""
    return MSG_EVALUATION_PROGRESS.format(
        suite=progress.suite, model=progress.model or "?", done=progress.prompts_done,
        total=progress.prompts_total if progress.prompts_total is not None else "?", eta=eta,
    )


def _training_message(progress: Progress | None) -> str:
    if not progress or progress.step is None:
        return MSG_TRAINING_STARTING
    loss = f", loss {progress.train_loss:.4f}" if progress.train_loss is not None else ""
    return MSG_TRAINING.format(step=progress.step, total=progress.total_steps or "?", loss=loss)


_PHASE_EVENTS: dict[FineTuneJobPhase, tuple[EventType, str]] = {
    FineTuneJobPhase.PREPARING: ("Normal", "Preparing"),
    FineTuneJobPhase.TRAINING: ("Normal", "Training"),
    FineTuneJobPhase.SUCCEEDED: ("Normal", "Succeeded"),
    FineTuneJobPhase.EVALUATING: ("Normal", "Evaluating"),
    FineTuneJobPhase.FAILED: ("Warning", "Failed"),
    FineTuneJobPhase.SUSPENDED: ("Normal", "Suspended"),
    FineTuneJobPhase.PENDING: ("Normal", "Pending"),
}


def _events(old: FineTuneJobStatus, new: FineTuneJobStatus, hold: Hold, tell_reason: bool) -> tuple[Event, ...]:
    events: list[Event] = []
    before = conditions.find_condition(old.conditions, ACCEPTED)
    after = conditions.find_condition(new.conditions, ACCEPTED)
    if after is not None and after.status == ConditionStatus.TRUE and conditions.transitioned(before, after):
        events.append(Event("Normal", EVENT_ACCEPTED, MSG_EVENT_ACCEPTED))
    if after is not None and after.status == ConditionStatus.FALSE:
        if before is None or conditions.transitioned(before, after) or before.message != after.message:
            events.append(Event("Warning", EVENT_INVALID_SPEC, after.message))
        return tuple(events)
    old_summary = conditions.find_condition(old.conditions, SUCCEEDED)
    new_summary = conditions.find_condition(new.conditions, SUCCEEDED)
    if new.phase is not None and (new.phase != old.phase or conditions.transitioned(old_summary, new_summary)):
        kind, reason = _PHASE_EVENTS.get(new.phase, ("Normal", str(new.phase)))
        if new_summary is not None and (hold in (Hold.QUEUED, Hold.BLOCKED) or tell_reason):
            # A wait or a stop worth its own name: the Event says which (Normal for a queue).
            kind, reason = ("Normal" if hold is Hold.QUEUED else "Warning"), new_summary.reason
        events.append(Event(kind, reason, new.message or ""))
    before_budget = conditions.find_condition(old.conditions, budget.WITHIN_BUDGET)
    after_budget = conditions.find_condition(new.conditions, budget.WITHIN_BUDGET)
    if (after_budget is not None and after_budget.status == ConditionStatus.FALSE and new.phase != FineTuneJobPhase.FAILED
            and conditions.transitioned(before_budget, after_budget)):
        events.append(Event("Warning", after_budget.reason, after_budget.message))  # over budget, still training
    before_applied = conditions.find_condition(old.conditions, SPEC_APPLIED)
    after_applied = conditions.find_condition(new.conditions, SPEC_APPLIED)
    if after_applied is not None and after_applied.status == ConditionStatus.FALSE and conditions.transitioned(before_applied, after_applied):
        events.append(Event("Warning", "SpecChangeNotApplied", after_applied.message))
    before_progress = conditions.find_condition(old.conditions, PROGRESS_REPORTED)
    after_progress = conditions.find_condition(new.conditions, PROGRESS_REPORTED)
    if after_progress is not None and after_progress.status == ConditionStatus.FALSE and (
        before_progress is None
        or conditions.transitioned(before_progress, after_progress)
        or before_progress.message != after_progress.message
    ):
        events.append(Event("Warning", "ProgressIgnored", after_progress.message))
    if new.restarts > old.restarts and new.phase != FineTuneJobPhase.FAILED:
        events.append(Event("Warning", "TrainerRestarted", MSG_RESTARTED.format(n=new.restarts)))
    return tuple(events)
