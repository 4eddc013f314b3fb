"""Prometheus metrics of the operator itself (not of the models it trains or serves).

What a platform team wants on a dashboard: how often reconciles run and how they end, how long
they take, how many FineTuneJobs sit in each phase, and which build is running. The metrics
live in prometheus-client's default registry (so the process and platform collectors come
along) and are served on `/metrics` by prometheus-client's own HTTP server.

Phase counts are derived, not counted up and down: a small in-memory table maps each
FineTuneJob to its last decided phase (every reconcile updates it, a deletion removes it), and
the gauge is recomputed from the table, so it can never drift below zero or double-count.
"""

from __future__ import annotations

import importlib.metadata
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from finetune_operator import __version__

NAMESPACE = "finetune_operator"

RECONCILES = Counter(
    "reconcile",
    "Reconciles of custom resources, by kind and result (success, error).",
    ["kind", "result"],
    namespace=NAMESPACE,
)
RECONCILE_DURATION = Histogram(
    "reconcile_duration_seconds",
    "Wall time of one reconcile (parse, observe, decide, act), by kind.",
    ["kind"],
    namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FINETUNEJOBS = Gauge(
    "finetunejobs",
    "FineTuneJobs known to this operator, by status.phase ('' until a phase is written).",
    ["phase"],
    namespace=NAMESPACE,
)
BUILD = Info("build", "Version of the running operator.", namespace=NAMESPACE)
LEADER = Gauge(
    "leader",
    "1 while this replica runs the controllers (it holds the leader-election Lease, or leader "
    "election is off), 0 while it is the standby.",
    namespace=NAMESPACE,
)

# Phases shown as 0 rather than missing, so dashboards and alerts see every series from the start.
FINETUNEJOB_PHASES = (
    "Pending", "Preparing", "Training", "Evaluating", "Succeeded", "Failed", "Suspended",
)


class PhaseTable:
    """Last seen phase of each object; publishes the count per phase to a gauge.

    Counts are kept incrementally: an observation costs the same with 10 objects or 10,000
    (it is called on every reconcile).
    """

    def __init__(self, gauge: Gauge, phases: Iterable[str]) -> None:
        self._gauge = gauge
        self._phases = tuple(phases)
        self._by_object: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = dict.fromkeys(self._phases, 0)
        self._lock = threading.Lock()
        for phase in self._phases:
            self._set(phase)

    def observe(self, namespace: str, name: str, phase: str | None) -> None:
        with self._lock:
            previous = self._by_object.get((namespace, name))
            phase = phase or ""
            if previous == phase:
                return
            self._by_object[(namespace, name)] = phase
            self._move(previous, phase)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._move(self._by_object.pop((namespace, name), None), None)

    def _move(self, previous: str | None, phase: str | None) -> None:
        if previous is not None:
            self._counts[previous] -= 1
            self._set(previous)
        if phase is not None:
            self._counts[phase] = self._counts.get(phase, 0) + 1
            self._set(phase)

    def _set(self, phase: str) -> None:
        count = self._counts[phase]
        # Phases nobody is in any more (and that are not well-known) are dropped, not kept at 0.
        if count == 0 and phase not in self._phases:
            del self._counts[phase]
            self._gauge.remove(phase)
        else:
            self._gauge.labels(phase=phase).set(count)


finetunejob_phases = PhaseTable(FINETUNEJOBS, FINETUNEJOB_PHASES)


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    """Time one reconcile of `kind` and count it as success or error (the exception propagates)."""
    started = time.perf_counter()
    result = "error"
    try:
        yield
        result = "success"
    finally:
        RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - started)
        RECONCILES.labels(kind=kind, result=result).inc()


# --- Requests to the Kubernetes API ---------------------------------------------------------------
#
# Every request the operator sends (its own client in `k8s.client` and kopf's watches and patches)
# is counted once, by verb, resource and HTTP status: what the operator costs the API server.

API_REQUESTS = Counter(
    "api_requests",
    "Requests of this operator to the Kubernetes API, by verb (get, list, watch, create, update, patch, "
    "delete, deletecollection), resource (the plural of the path) and HTTP status code ('error' when no answer came).",
    ["verb", "resource", "code"],
    namespace=NAMESPACE,
)

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def api_request_kind(method: str, path: str, query: Iterable[tuple[str, Any]] | dict | None = None) -> tuple[str, str]:
    """(verb, resource) of one API request, named as the API server's audit log names them.

    `path` is the URL path (a full URL's scheme, host and query are ignored). Resource is the
    plural of the path (`/apis/batch/v1/namespaces/x/jobs/y/status` -> `jobs`); paths that name no
    resource (discovery, /version, /healthz) are `''`.
    """
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path = path.partition("?")[0]
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]  # /api/v1/...
    elif parts[:1] == ["apis"]:
        rest = parts[3:]  # /apis/<group>/<version>/...
    else:
        rest = []
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        rest = rest[2:]  # /namespaces/<ns>/<resource>/...; /namespaces/<name> is the namespace itself
    resource = rest[0] if rest else ""
    named = len(rest) >= 2
    items = query.items() if isinstance(query, dict) else (query or ())
    watching = any(k == "watch" and str(v).lower() in ("true", "1") for k, v in items)
    method = method.upper()
    if method == "GET":
        verb = "watch" if watching else ("get" if named else "list")
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = _VERBS.get(method, method.lower())
    return verb, resource


def count_api_request(method: str, path: str, query: Iterable[tuple[str, Any]] | dict | None, code: int | str | None) -> None:
    verb, resource = api_request_kind(method, path, query)
    API_REQUESTS.labels(verb=verb, resource=resource, code=str(code) if code else "error").inc()


def publish_build_info() -> None:
    try:
        kopf_version = importlib.metadata.version("kopf")
    except importlib.metadata.PackageNotFoundError:
        kopf_version = "unknown"
    BUILD.info(
        {
            "version": __version__,
            "kopf_version": kopf_version,
            "python_version": platform.python_version(),
        }
    )


def serve(host: str, port: int) -> None:
    """Serve /metrics on host:port in a daemon thread; port 0 disables the server."""
    if not port:
        return
    prometheus_client.start_http_server(port, addr=host)


# --- What the custom resources say about themselves -----------------------------------------------
#
# The state of each FineTuneJob, ModelVersion and Rollout, as its status reads, for dashboards and
# alerts. `handlers/monitoring.py` hands every watch event's body to `resource_metrics` (no extra
# API reads); the collector keeps one small summary per object and renders the series at scrape
# time, so a deleted object's series vanish with its summary (bounded cardinality: labels are
# object names, phases, gate/metric names from the spec and reasons from the operator's own
# constants, never free text). Objects are deleted after their TTL, which drops their series too.


MODELVERSION_PHASES = ("Candidate", "Approved", "Rejected", "Production", "Deprecated")
ROLLOUT_PHASES = ("Progressing", "Paused", "Healthy", "Degraded", "RolledBack")
MEASUREMENT_VERDICTS = ("Successful", "Failed", "Inconclusive", "Error")
# History triggers of a rollback (api.rollout.HistoryTrigger values), the `cause` label.
ROLLBACK_CAUSES = ("Analysis", "Abort", "Request", "Spec", "ServingFailed", "Steps")

FINETUNEJOB_FAILURES = Counter(
    "finetunejob_failures",
    "FineTuneJobs seen turning Failed by this operator process, by root cause (the Succeeded condition's reason).",
    ["reason"],
    namespace=NAMESPACE,
)


def _time(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _condition(status: dict, type_: str) -> dict:
    for condition in status.get("conditions") or []:
        if condition.get("type") == type_:
            return condition
    return {}


@dataclass
class FineTuneJobSummary:
    namespace: str
    name: str
    phase: str
    created: float | None
    started: float | None
    finished: float | None
    failure_reason: str | None
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class ModelVersionSummary:
    namespace: str
    name: str
    model: str
    version: str
    phase: str
    # (gate, metric) -> {"value", "threshold", "base_value", "passed", "blocking"}
    gates: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)


@dataclass
class RolloutSummary:
    namespace: str
    name: str
    model: str
    phase: str
    stable: str
    candidate: str
    canary_weight: float
    current_step: float | None
    canary_since: float | None
    # metric -> (latest value or None, latest verdict)
    measurements: dict[str, tuple[float | None, str]] = field(default_factory=dict)
    # (metric, bound) -> absolute threshold from spec.analysis.metrics[].thresholds (min, max)
    thresholds: dict[tuple[str, str], float] = field(default_factory=dict)
    history: list[tuple[str, str, str]] = field(default_factory=list)  # (action, trigger, key)


def summarise_finetunejob(body: dict) -> FineTuneJobSummary:
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    progress = status.get("progress") or {}
    phase = status.get("phase") or ""
    succeeded = _condition(status, "Succeeded")
    values = {
        "progress_step": _number(progress.get("step")),
        "progress_total_steps": _number(progress.get("totalSteps")),
        "progress_epoch": _number(progress.get("epoch")),
        "progress_percent": _number(progress.get("percent")),
        "train_loss": _number(progress.get("trainLoss")),
        "validation_loss": _number(progress.get("evalLoss")),
        "gpu_hours": _number(status.get("gpuHours")),
        "estimated_cost": _number(status.get("estimatedCost")),
        "restarts": _number(status.get("restarts")) or 0.0,
    }
    return FineTuneJobSummary(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        phase=phase,
        created=_time(meta.get("creationTimestamp")),
        started=_time(status.get("startTime")),
        finished=_time(status.get("completionTime")),
        failure_reason=(succeeded.get("reason") or "Unknown") if phase == "Failed" else None,
        values={k: v for k, v in values.items() if v is not None},
    )


def summarise_modelversion(body: dict) -> ModelVersionSummary:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    gates: dict[tuple[str, str], dict[str, float]] = {}
    for gate in status.get("gates") or []:
        numbers = {
            "value": _number(gate.get("value")),
            "threshold": _number(gate.get("threshold")),
            "base_value": _number(gate.get("baseValue")),
            "passed": 1.0 if gate.get("passed") else 0.0,
            "blocking": 1.0 if gate.get("blocking", True) else 0.0,
        }
        gates[(str(gate.get("name", "")), str(gate.get("metric", "")))] = {k: v for k, v in numbers.items() if v is not None}
    return ModelVersionSummary(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        model=str(spec.get("modelName", "")),
        version=str(spec.get("version", "")),
        phase=status.get("phase") or "",
        gates=gates,
    )


def summarise_rollout(body: dict, previous: RolloutSummary | None, now: float) -> RolloutSummary:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    candidate = str(status.get("candidateVersion") or "")
    if not candidate:
        canary_since = None
    elif previous is not None and previous.candidate == candidate and previous.canary_since is not None:
        canary_since = previous.canary_since
    else:
        # First sight of this candidate: the current step's start is the best lower bound an
        # operator that restarted mid-canary has.
        canary_since = _time(status.get("stepStartTime")) if previous is None else None
        canary_since = canary_since or now
    measurements: dict[str, tuple[float | None, str]] = {}
    for metric in (status.get("analysis") or {}).get("metrics") or []:
        latest = (metric.get("measurements") or [{}])[-1]
        measurements[str(metric.get("name", ""))] = (_number(latest.get("value")), str(latest.get("phase") or ""))
    thresholds: dict[tuple[str, str], float] = {}
    for metric in (spec.get("analysis") or {}).get("metrics") or []:
        for bound in ("min", "max"):
            limit = _number((metric.get("thresholds") or {}).get(bound))
            if limit is not None:
                thresholds[(str(metric.get("name", "")), bound)] = limit
    history = [
        (str(entry.get("action", "")), str(entry.get("trigger") or ""),
         f"{entry.get('time')}|{entry.get('action')}|{entry.get('from')}|{entry.get('to')}")
        for entry in status.get("history") or []
    ]
    return RolloutSummary(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        model=str(spec.get("modelName", "")),
        phase=status.get("phase") or "",
        stable=str(status.get("stableVersion") or ""),
        candidate=candidate,
        canary_weight=_number(status.get("canaryWeight")) or 0.0,
        current_step=_number(status.get("currentStepIndex")),
        canary_since=canary_since,
        measurements=measurements,
        thresholds=thresholds,
        history=history,
    )


class ResourceMetrics(Collector):
    """Series of every FineTuneJob, ModelVersion and Rollout this process has seen and not seen deleted."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], FineTuneJobSummary] = {}
        self._versions: dict[tuple[str, str], ModelVersionSummary] = {}
        self._rollouts: dict[tuple[str, str], RolloutSummary] = {}
        # Training throughput from the trainer's progress ConfigMap (status has no tokens/s).
        self._throughput: dict[tuple[str, str], float] = {}
        # Rollout history entries already counted, and the counts: counters never go down when
        # the status keeps only the last entries.
        self._counted: dict[tuple[str, str], set[str]] = {}
        self._counts: dict[tuple[str, str], dict[tuple[str, str], int]] = {}

    # Observing -----------------------------------------------------------------------------------

    def observe_finetunejob(self, body: dict) -> None:
        summary = summarise_finetunejob(body)
        key = (summary.namespace, summary.name)
        with self._lock:
            previous = self._jobs.get(key)
            self._jobs[key] = summary
        if summary.failure_reason and previous is not None and previous.phase != "Failed":
            FINETUNEJOB_FAILURES.labels(reason=summary.failure_reason).inc()

    def observe_throughput(self, namespace: str, finetunejob: str, tokens_per_second: float | None) -> None:
        with self._lock:
            if tokens_per_second is None:
                self._throughput.pop((namespace, finetunejob), None)
            else:
                self._throughput[(namespace, finetunejob)] = float(tokens_per_second)

    def observe_modelversion(self, body: dict) -> None:
        summary = summarise_modelversion(body)
        with self._lock:
            self._versions[(summary.namespace, summary.name)] = summary

    def observe_rollout(self, body: dict) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self._lock:
            summary = summarise_rollout(body, self._rollouts.get(key), self._clock())
            self._rollouts[key] = summary
            counted = self._counted.setdefault(key, set())
            counts = self._counts.setdefault(key, {})
            for action, trigger, entry_key in summary.history:
                if entry_key not in counted:
                    counts[(action, trigger)] = counts.get((action, trigger), 0) + 1
            # Entries that fell out of the status never come back: remember only the present ones.
            self._counted[key] = {entry_key for _, _, entry_key in summary.history}

    def forget(self, kind: str, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._lock:
            if kind == "FineTuneJob":
                self._jobs.pop(key, None)
                self._throughput.pop(key, None)
            elif kind == "ModelVersion":
                self._versions.pop(key, None)
            elif kind == "Rollout":
                self._rollouts.pop(key, None)
                self._counted.pop(key, None)
                self._counts.pop(key, None)

    def objects(self) -> int:
        with self._lock:
            return len(self._jobs) + len(self._versions) + len(self._rollouts)

    # Rendering -----------------------------------------------------------------------------------

    def describe(self) -> Iterable:
        return []  # rendered at scrape time only; no fixed set to describe

    def collect(self) -> Iterable:
        now = self._clock()
        with self._lock:
            jobs = list(self._jobs.values())
            throughput = {key: value for key, value in self._throughput.items() if key in self._jobs}
            versions = list(self._versions.values())
            rollouts = list(self._rollouts.values())
            counts = {key: dict(value) for key, value in self._counts.items()}
        yield from self._collect_jobs(jobs, throughput, now)
        yield from self._collect_versions(versions)
        yield from self._collect_rollouts(rollouts, counts, now)

    @staticmethod
    def _collect_jobs(jobs: list[FineTuneJobSummary], throughput: dict[tuple[str, str], float], now: float) -> Iterator:
        labels = ["namespace", "finetunejob"]
        phase = GaugeMetricFamily(f"{NAMESPACE}_finetunejob_phase",
                                  "1 for the FineTuneJob's current status.phase, 0 for the others.", labels=[*labels, "phase"])
        gauges = {
            "progress_step": "Optimizer steps done (status.progress.step).",
            "progress_total_steps": "Optimizer steps planned (status.progress.totalSteps).",
            "progress_epoch": "Epochs done, fractional (status.progress.epoch).",
            "progress_percent": "Training progress in percent (status.progress.percent).",
            "train_loss": "Latest training loss (status.progress.trainLoss).",
            "validation_loss": "Latest validation loss (status.progress.evalLoss).",
            "gpu_hours": "GPU-hours consumed so far (status.gpuHours).",
            "estimated_cost": "Estimated cost so far, GPU-hours x cost per GPU-hour (status.estimatedCost).",
            "restarts": "Times the training Job was restarted (status.restarts).",
        }
        families = {key: GaugeMetricFamily(f"{NAMESPACE}_finetunejob_{key}", text, labels=labels) for key, text in gauges.items()}
        queue_wait = GaugeMetricFamily(
            f"{NAMESPACE}_finetunejob_queue_wait_seconds",
            "Seconds from creation until work started (status.startTime), still growing while the job waits.",
            labels=labels)
        tokens = GaugeMetricFamily(f"{NAMESPACE}_finetunejob_tokens_per_second",
                                   "Training throughput in tokens per second (the trainer's latest progress report).",
                                   labels=labels)
        failed = GaugeMetricFamily(f"{NAMESPACE}_finetunejob_failed",
                                   "1 for a Failed FineTuneJob, labelled with its root cause (the Succeeded condition's reason).",
                                   labels=[*labels, "reason"])
        for job in jobs:
            values = [job.namespace, job.name]
            for known in (*FINETUNEJOB_PHASES, *([job.phase] if job.phase not in FINETUNEJOB_PHASES else [])):
                phase.add_metric([*values, known], 1.0 if known == job.phase else 0.0)
            for key, value in job.values.items():
                families[key].add_metric(values, value)
            if job.created is not None and (job.started is not None or job.phase in ("", "Pending")):
                queue_wait.add_metric(values, max(0.0, (job.started or now) - job.created))
            if (job.namespace, job.name) in throughput and job.phase == "Training":
                tokens.add_metric(values, throughput[(job.namespace, job.name)])
            if job.failure_reason:
                failed.add_metric([*values, job.failure_reason], 1.0)
        yield phase
        yield from families.values()
        yield queue_wait
        yield tokens
        yield failed

    @staticmethod
    def _collect_versions(versions: list[ModelVersionSummary]) -> Iterator:
        labels = ["namespace", "modelversion", "model", "version"]
        gate_labels = [*labels, "gate", "metric"]
        phase = GaugeMetricFamily(f"{NAMESPACE}_modelversion_phase",
                                  "1 for the ModelVersion's current status.phase, 0 for the others.", labels=[*labels, "phase"])
        texts = {
            "value": "Measured value of the fine-tuned model for the gate (status.gates[].value).",
            "threshold": "Threshold of the gate (status.gates[].threshold).",
            "base_value": "Measured value of the base model for the gate (status.gates[].baseValue).",
            "passed": "1 when the gate passed, 0 when it failed (status.gates[].passed).",
            "blocking": "1 when a failure of the gate rejects the version (status.gates[].blocking).",
        }
        gates = {key: GaugeMetricFamily(f"{NAMESPACE}_modelversion_gate_{key}", text, labels=gate_labels)
                 for key, text in texts.items()}
        for version in versions:
            values = [version.namespace, version.name, version.model, version.version]
            for known in (*MODELVERSION_PHASES, *([version.phase] if version.phase not in MODELVERSION_PHASES else [])):
                phase.add_metric([*values, known], 1.0 if known == version.phase else 0.0)
            for (gate, metric), numbers in version.gates.items():
                for key, value in numbers.items():
                    gates[key].add_metric([*values, gate, metric], value)
        yield phase
        yield from gates.values()

    @staticmethod
    def _collect_rollouts(rollouts: list[RolloutSummary], counts: dict, now: float) -> Iterator:
        labels = ["namespace", "rollout", "model"]
        phase = GaugeMetricFamily(f"{NAMESPACE}_rollout_phase",
                                  "1 for the Rollout's current status.phase, 0 for the others.", labels=[*labels, "phase"])
        info = GaugeMetricFamily(f"{NAMESPACE}_rollout_info",
                                 "1, labelled with the stable and candidate versions ('' when none).",
                                 labels=[*labels, "stable_version", "candidate_version"])
        weight = GaugeMetricFamily(f"{NAMESPACE}_rollout_canary_weight",
                                   "Percentage of traffic on the candidate (status.canaryWeight).", labels=labels)
        version_weight = GaugeMetricFamily(f"{NAMESPACE}_rollout_version_weight",
                                           "Percentage of traffic on each served version, by track (stable, canary).",
                                           labels=[*labels, "version", "track"])
        step = GaugeMetricFamily(f"{NAMESPACE}_rollout_current_step",
                                 "Index of the current canary step (status.currentStepIndex).", labels=labels)
        canary_seconds = GaugeMetricFamily(f"{NAMESPACE}_rollout_canary_seconds",
                                           "Seconds the current candidate has been in canary.", labels=[*labels, "candidate_version"])
        measurement = GaugeMetricFamily(f"{NAMESPACE}_rollout_analysis_value",
                                        "Latest measured value of each analysis metric of the current step.",
                                        labels=[*labels, "metric"])
        threshold = GaugeMetricFamily(f"{NAMESPACE}_rollout_analysis_threshold",
                                      "Absolute threshold of each analysis metric (spec.analysis.metrics[].thresholds), by bound (min, max).",
                                      labels=[*labels, "metric", "bound"])
        verdict = GaugeMetricFamily(f"{NAMESPACE}_rollout_analysis_verdict",
                                    "1 for the latest measurement's verdict of each analysis metric, 0 for the others.",
                                    labels=[*labels, "metric", "verdict"])
        promotions = CounterMetricFamily(f"{NAMESPACE}_rollout_promotions",
                                         "Promotions of a candidate to stable (history entries, action promote).", labels=labels)
        aborts = CounterMetricFamily(f"{NAMESPACE}_rollout_aborts",
                                     "Aborts: candidate traffic sent back to stable on request (action abort).", labels=labels)
        rollbacks = CounterMetricFamily(f"{NAMESPACE}_rollout_rollbacks",
                                        "Rollbacks, by cause: the history entry's trigger (Analysis, Request, Spec, ServingFailed).",
                                        labels=[*labels, "cause"])
        for rollout in rollouts:
            values = [rollout.namespace, rollout.name, rollout.model]
            for known in (*ROLLOUT_PHASES, *([rollout.phase] if rollout.phase not in ROLLOUT_PHASES else [])):
                phase.add_metric([*values, known], 1.0 if known == rollout.phase else 0.0)
            info.add_metric([*values, rollout.stable, rollout.candidate], 1.0)
            weight.add_metric(values, rollout.canary_weight)
            if rollout.stable:
                version_weight.add_metric([*values, rollout.stable, "stable"],
                                          100.0 - rollout.canary_weight if rollout.candidate else 100.0)
            if rollout.candidate:
                version_weight.add_metric([*values, rollout.candidate, "canary"], rollout.canary_weight)
            if rollout.current_step is not None:
                step.add_metric(values, rollout.current_step)
            if rollout.candidate and rollout.canary_since is not None:
                canary_seconds.add_metric([*values, rollout.candidate], max(0.0, now - rollout.canary_since))
            for metric, (value, latest) in rollout.measurements.items():
                if value is not None:
                    measurement.add_metric([*values, metric], value)
                for known in MEASUREMENT_VERDICTS:
                    verdict.add_metric([*values, metric, known], 1.0 if known == latest else 0.0)
            for (metric, bound), limit in rollout.thresholds.items():
                threshold.add_metric([*values, metric, bound], limit)
            by_kind = counts.get((rollout.namespace, rollout.name), {})
            promotions.add_metric(values, float(sum(n for (action, _), n in by_kind.items() if action == "promote")))
            aborts.add_metric(values, float(sum(n for (action, _), n in by_kind.items() if action == "abort")))
            causes: dict[str, int] = {}
            for (action, trigger), n in by_kind.items():
                if action == "rollback":
                    causes[trigger or "Unknown"] = causes.get(trigger or "Unknown", 0) + n
            for cause, n in sorted(causes.items()):
                rollbacks.add_metric([*values, cause], float(n))
        yield from (phase, info, weight, version_weight, step, canary_seconds, measurement, threshold, verdict, promotions, aborts, rollbacks)


resource_metrics = ResourceMetrics()
prometheus_client.REGISTRY.register(resource_metrics)
