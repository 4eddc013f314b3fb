"""The series each FineTuneJob, ModelVersion and Rollout status turns into, and their removal."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from finetune_operator import metrics
from finetune_operator.handlers import monitoring

NOW = 1_800_000_000.0


def samples(collector: metrics.ResourceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float | None:
    for (sample_name, sample_labels), sample_value in found.items():
        if sample_name == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()):
            return sample_value
    return None


def job(name: str = "j1", **status) -> dict:
    return {"metadata": {"namespace": "team", "name": name, "creationTimestamp": "2027-01-15T08:00:00Z"}, "status": status}


def version(name: str = "support-v2", **status) -> dict:
    return {"metadata": {"namespace": "team", "name": name},
            "spec": {"modelName": "support", "version": "v2"}, "status": status}


def rollout(**status) -> dict:
    spec = {"modelName": "support", "analysis": {"metrics": [{"name": "error-rate", "query": "q", "thresholds": {"max": 0.05}}]}}
    return {"metadata": {"namespace": "team", "name": "support"}, "spec": spec, "status": status}


TRAINING = {
    "phase": "Training", "startTime": "2027-01-15T08:05:00Z", "restarts": 1, "gpuHours": 0.5, "estimatedCost": 1.25,
    "progress": {"step": 40, "totalSteps": 120, "epoch": 1.0, "percent": 33.3, "trainLoss": 1.93, "evalLoss": 2.01},
}


@pytest.mark.parametrize(
    ("status", "name", "labels", "expected"),
    [
        pytest.param(TRAINING, "finetune_operator_finetunejob_phase", {"phase": "Training"}, 1.0, id="current-phase-is-1"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_phase", {"phase": "Pending"}, 0.0, id="other-phases-are-0"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_progress_step", {}, 40.0, id="step"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_progress_total_steps", {}, 120.0, id="total-steps"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_progress_epoch", {}, 1.0, id="epoch"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_train_loss", {}, 1.93, id="train-loss"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_validation_loss", {}, 2.01, id="validation-loss"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_gpu_hours", {}, 0.5, id="gpu-hours"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_estimated_cost", {}, 1.25, id="cost"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_restarts", {}, 1.0, id="restarts"),
        pytest.param(TRAINING, "finetune_operator_finetunejob_queue_wait_seconds", {}, 300.0, id="queue-wait-until-start"),
        pytest.param({"phase": "Failed", "conditions": [{"type": "Succeeded", "status": "False", "reason": "TrainingFailed"}]},
                     "finetune_operator_finetunejob_failed", {"reason": "TrainingFailed"}, 1.0, id="failure-root-cause"),
        pytest.param({"phase": "Failed"}, "finetune_operator_finetunejob_failed", {"reason": "Unknown"}, 1.0,
                     id="failure-without-condition"),
        pytest.param({"phase": "Training"}, "finetune_operator_finetunejob_train_loss", {}, None, id="no-loss-no-series"),
    ],
)
def test_finetunejob_series(status, name, labels, expected):
    collector = metrics.ResourceMetrics(clock=lambda: NOW)
    collector.observe_finetunejob(job(**status))
    assert value(samples(collector), name, namespace="team", finetunejob="j1", **labels) == expected


def test_pending_job_queue_wait_grows_with_the_clock():
    now = [metrics._time("2027-01-15T08:10:00Z")]
    collector = metrics.ResourceMetrics(clock=lambda: now[0])
    collector.observe_finetunejob(job(phase="Pending"))
    assert value(samples(collector), "finetune_operator_finetunejob_queue_wait_seconds") == 600.0
    now[0] += 60
    assert value(samples(collector), "finetune_operator_finetunejob_queue_wait_seconds") == 660.0


def test_failures_counter_counts_transitions_by_reason():
    collector = metrics.ResourceMetrics(clock=lambda: NOW)
    before = metrics.FINETUNEJOB_FAILURES.labels(reason="DataPreparationFailed")._value.get()
    failed = {"phase": "Failed", "conditions": [{"type": "Succeeded", "status": "False", "reason": "DataPreparationFailed"}]}
    collector.observe_finetunejob(job(phase="Preparing"))
    collector.observe_finetunejob(job(**failed))
    collector.observe_finetunejob(job(**failed))  # a later event of the same failed job is no new failure
    assert metrics.FINETUNEJOB_FAILURES.labels(reason="DataPreparationFailed")._value.get() == before + 1


GATES = [
    {"name": "accuracy", "metric": "taskAccuracy", "comparator": "GreaterThan", "threshold": 0.85,
     "value": 0.91, "baseValue": 0.62, "passed": True, "blocking": True},
    {"name": "latency", "metric": "latencySeconds", "comparator": "LessThan", "threshold": 2.0, "baseline": "RatioToBase",
     "value": 0.4, "baseValue": 0.3, "passed": False, "blocking": False},
]


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    [
        pytest.param("finetune_operator_modelversion_phase", {"phase": "Approved"}, 1.0, id="phase"),
        pytest.param("finetune_operator_modelversion_phase", {"phase": "Rejected"}, 0.0, id="other-phase"),
        pytest.param("finetune_operator_modelversion_gate_value", {"gate": "accuracy", "metric": "taskAccuracy"}, 0.91, id="value"),
        pytest.param("finetune_operator_modelversion_gate_threshold", {"gate": "accuracy"}, 0.85, id="threshold"),
        pytest.param("finetune_operator_modelversion_gate_base_value", {"gate": "accuracy"}, 0.62, id="base-value"),
        pytest.param("finetune_operator_modelversion_gate_passed", {"gate": "accuracy"}, 1.0, id="passed"),
        pytest.param("finetune_operator_modelversion_gate_passed", {"gate": "latency"}, 0.0, id="failed"),
        pytest.param("finetune_operator_modelversion_gate_blocking", {"gate": "latency"}, 0.0, id="warning-only"),
    ],
)
def test_modelversion_series(name, labels, expected):
    collector = metrics.ResourceMetrics(clock=lambda: NOW)
    collector.observe_modelversion(version(phase="Approved", gates=GATES))
    assert value(samples(collector), name, modelversion="support-v2", model="support", version="v2", **labels) == expected


CANARY = {
    "phase": "Progressing", "stableVersion": "v1", "candidateVersion": "v2", "canaryWeight": 25, "currentStepIndex": 2,
    "stepStartTime": "2027-01-15T08:00:00Z",
    "analysis": {"phase": "Running", "metrics": [
        {"name": "error-rate", "phase": "Running", "measurements": [{"value": 0.01, "phase": "Successful"}, {"value": 0.2, "phase": "Failed"}]},
    ]},
    "history": [{"action": "promote", "from": "v0", "to": "v1", "trigger": "Steps", "time": "2027-01-14T08:00:00Z"}],
}


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    [
        pytest.param("finetune_operator_rollout_phase", {"phase": "Progressing"}, 1.0, id="phase"),
        pytest.param("finetune_operator_rollout_info", {"stable_version": "v1", "candidate_version": "v2"}, 1.0, id="versions"),
        pytest.param("finetune_operator_rollout_canary_weight", {}, 25.0, id="weight"),
        pytest.param("finetune_operator_rollout_version_weight", {"version": "v1", "track": "stable"}, 75.0, id="stable-weight"),
        pytest.param("finetune_operator_rollout_version_weight", {"version": "v2", "track": "canary"}, 25.0, id="canary-weight"),
        pytest.param("finetune_operator_rollout_current_step", {}, 2.0, id="step"),
        pytest.param("finetune_operator_rollout_analysis_value", {"metric": "error-rate"}, 0.2, id="latest-measurement"),
        pytest.param("finetune_operator_rollout_analysis_verdict", {"metric": "error-rate", "verdict": "Failed"}, 1.0, id="verdict"),
        pytest.param("finetune_operator_rollout_analysis_threshold", {"metric": "error-rate", "bound": "max"}, 0.05, id="threshold"),
        pytest.param("finetune_operator_rollout_analysis_verdict", {"metric": "error-rate", "verdict": "Successful"}, 0.0,
                     id="earlier-verdict-is-0"),
        pytest.param("finetune_operator_rollout_promotions_total", {}, 1.0, id="promotions"),
        pytest.param("finetune_operator_rollout_aborts_total", {}, 0.0, id="aborts"),
        pytest.param("finetune_operator_rollout_canary_seconds", {"candidate_version": "v2"},
                     NOW - metrics._time("2027-01-15T08:00:00Z"), id="canary-time-from-step-start-after-restart"),
    ],
)
def test_rollout_series(name, labels, expected):
    collector = metrics.ResourceMetrics(clock=lambda: NOW)
    collector.observe_rollout(rollout(**CANARY))
    assert value(samples(collector), name, namespace="team", rollout="support", model="support", **labels) == expected


def test_rollbacks_count_by_cause_and_survive_history_truncation():
    collector = metrics.ResourceMetrics(clock=lambda: NOW)
    entries = [
        {"action": "rollback", "from": "v2", "to": "v1", "trigger": "Analysis", "time": "2027-01-15T08:00:00Z"},
        {"action": "rollback", "from": "v3", "to": "v1", "trigger": "Request", "time": "2027-01-15T09:00:00Z"},
        {"action": "abort", "from": "v4", "to": "v1", "trigger": "Abort", "time": "2027-01-15T10:00:00Z"},
    ]
    collector.observe_rollout(rollout(phase="RolledBack", stableVersion="v1", history=entries[:2]))
    collector.observe_rollout(rollout(phase="RolledBack", stableVersion="v1", history=entries[1:]))  # first entry trimmed
    found = samples(collector)
    assert value(found, "finetune_operator_rollout_rollbacks_total", cause="Analysis") == 1.0
    assert value(found, "finetune_operator_rollout_rollbacks_total", cause="Request") == 1.0
    assert value(found, "finetune_operator_rollout_aborts_total") == 1.0


def test_canary_time_starts_when_a_new_candidate_appears():
    now = [NOW]
    collector = metrics.ResourceMetrics(clock=lambda: now[0])
    collector.observe_rollout(rollout(phase="Healthy", stableVersion="v1"))
    now[0] += 10
    collector.observe_rollout(rollout(phase="Progressing", stableVersion="v1", candidateVersion="v2", canaryWeight=10))
    now[0] += 30
    assert value(samples(collector), "finetune_operator_rollout_canary_seconds") == 30.0


def test_module_collector_drops_series_of_deleted_objects():
    collector = metrics.resource_metrics
    before = len(samples(collector))
    bodies = [("FineTuneJob", job(f"gone-{i}", **TRAINING)) for i in range(5)]
    bodies += [("ModelVersion", version(f"gone-v{i}", phase="Approved", gates=GATES)) for i in range(5)]
    bodies += [("Rollout", {**rollout(**CANARY), "metadata": {"namespace": "gone", "name": "r"}})]
    for kind, body in bodies:
        monitoring.record(kind, "ADDED", body)
    during = len(samples(collector))
    assert during > before + 100
    for kind, body in bodies:
        monitoring.record(kind, "DELETED", body)
    assert len(samples(collector)) == before


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        pytest.param('{"event": "progress", "step": 4, "total_steps": 8, "tokens_per_second": 5120.4}', 5120.4, id="training"),
        pytest.param('{"event": "progress", "stage": "evaluate", "tokens_per_second": 9.0}', None, id="evaluation-is-not-training"),
        pytest.param('{"event": "progress", "step": 4}', None, id="not-reported"),
        pytest.param("not json", None, id="untrusted"),
    ],
)
def test_tokens_per_second_from_the_progress_configmap(progress, expected):
    assert monitoring.tokens_per_second({"data": {"progress": progress}}) == expected


def test_throughput_series_only_while_training():
    collector = metrics.ResourceMetrics(clock=lambda: NOW)
    collector.observe_finetunejob(job(**TRAINING))
    collector.observe_throughput("team", "j1", 812.5)
    assert value(samples(collector), "finetune_operator_finetunejob_tokens_per_second") == 812.5
    collector.observe_finetunejob(job(**{**TRAINING, "phase": "Succeeded"}))
    assert value(samples(collector), "finetune_operator_finetunejob_tokens_per_second") is None
