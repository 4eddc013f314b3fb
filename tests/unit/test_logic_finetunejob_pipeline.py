"""decide() for FineTuneJob through the pipeline: prepare Job, train Job, progress, results.

Each row is a situation of the child objects, written as the Kubernetes API would return them
(see pipeline_fixtures), and what the FineTuneJob's status, Events and actions must then be.
"""

from __future__ import annotations

import copy
import datetime
import json

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from finetune_operator.builders.finetunejob import Owner, Settings
from finetune_operator.logic import finetunejob
from finetune_operator.logic.finetunejob import Children, decide, parse_status
from finetune_operator.logic.finetunejob_children import root_cause
from finetune_operator.logic.spec import InvalidSpec, SpecProblem
from tests.unit.pipeline_fixtures import job, pod, progress_map, termination

NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
EARLIER = NOW - datetime.timedelta(minutes=10)
OWNER = Owner(name="ft", namespace="team", uid="uid-1")
PREPARE, TRAIN, PROGRESS = "ft-prepare", "ft-train", "ft-progress"
DIGEST = "ab" * 32

MINIMAL = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "dataset": {"uri": "s3://data/tickets.jsonl"},
}


def spec(**changes) -> FineTuneJobSpec:
    raw = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return FineTuneJobSpec.model_validate(raw)


SPEC = spec()
QUEUED_SPEC = spec(resources={"queueName": "ml-research"})
SUSPENDED = spec(suspend=True)
QUEUED_SUSPENDED = spec(suspend=True, resources={"queueName": "ml-research"})


def run(ftj, children, status=None, *, now=NOW, generation=1, price=0.0, settings=None):
    return decide(ftj, status or FineTuneJobStatus(), children, now, generation=generation, owner=OWNER,
                  settings=settings, gpu_hour_price=price)


def status_after(*steps):
    """The status after reconciling each (spec, children) step in turn, the last one at EARLIER,
    read back from its wire form as the next reconcile would."""
    status = FineTuneJobStatus()
    for ftj, children in steps:
        written = run(ftj, children, status, now=EARLIER).status
        status = parse_status(written.model_dump(mode="json", exclude_none=True))
    return status


def condition(status, type):
    return next((c for c in status.conditions if c.type == type), None)


# --- situations --------------------------------------------------------------------------------

DATA_ERROR = termination(
    status="Failed", stage="prepare", reason="DataError", exit_code=3,
    message="dataset /etc/finetune/dataset.jsonl:17: is not JSON (expected an object with instruction/output)",
)
PREPARED_MESSAGE = termination(
    status="Prepared", stage="prepare",
    dataset={
        "format": "instruction",
        "counts": {"read": 120, "after_quality": 110, "after_length": 108, "after_dedup": 100, "final": 90},
        "dropped": {"invalid_json": 6, "missing_field": 4, "too_long": 2, "exact_duplicate": 5,
                    "near_duplicate": 3, "balance": 10},
        "pii": {"EMAIL": 2},
        "splits": {"train": 63, "validation": 18, "test": 9},
        "sha256": DIGEST,
    },
)
PROGRESS_LINE = dict(
    step=40, total_steps=120, percent=33.3, epoch=1.0, loss=1.93, eval_loss=2.01, best_eval_loss=1.98,
    eta_seconds=96.0, checkpoint={"uri": "/mnt/pvc/finetune-artifacts/ft-uid-1/checkpoints/checkpoint-40", "step": 40,
                                 "time": "2025-01-01T11:50:00Z"},
)
TRAINED_MESSAGE = termination(
    status="Succeeded", stage="train",
    artifact={"kind": "lora-adapter", "uri": "pvc://finetune-artifacts/ft-uid-1/adapter", "sha256": DIGEST},
    metrics={"train_loss": 1.2, "eval_loss": 1.4, "best_eval_loss": 1.35, "global_step": 120, "total_steps": 120},
)

PREPARE_RUNNING = job(PREPARE, active=1)
PREPARE_POD_RUNNING = pod(PREPARE, started="2025-01-01T11:01:00Z")
PREPARE_COMPLETE = job(PREPARE, conditions=["Complete"], succeeded=1)
PREPARE_POD_DONE = pod(PREPARE, terminated=dict(exitCode=0, reason="Completed", message=PREPARED_MESSAGE))
TRAIN_RUNNING = job(TRAIN, active=1)
TRAIN_POD_RUNNING = pod(TRAIN, started="2025-01-01T11:30:00Z")

S = {
    "nothing-yet": Children(),
    "prepare-running": Children(jobs=(PREPARE_RUNNING,), pods=(PREPARE_POD_RUNNING,)),
    "prepare-pod-unschedulable": Children(
        jobs=(PREPARE_RUNNING,),
        pods=(pod(PREPARE, unschedulable="0/3 nodes are available: 3 Insufficient memory."),),
    ),
    "prepare-image-pull-error": Children(
        jobs=(PREPARE_RUNNING,),
        pods=(pod(PREPARE, waiting=dict(reason="ErrImagePull", message='pull access denied for "trainer:typo"')),),
    ),
    "prepare-suspended": Children(jobs=(job(PREPARE, suspend=True),)),
    "prepare-failed-data-error": Children(
        jobs=(job(PREPARE, conditions=[("Failed", "PodFailurePolicy")], failed=1),),
        pods=(pod(PREPARE, terminated=dict(exitCode=3, reason="Error", message=DATA_ERROR)),),
    ),
    "prepared": Children(jobs=(PREPARE_COMPLETE,), pods=(PREPARE_POD_DONE,)),
    "training": Children(
        jobs=(PREPARE_COMPLETE, TRAIN_RUNNING), pods=(PREPARE_POD_DONE, TRAIN_POD_RUNNING),
        progress=progress_map(PROGRESS, **PROGRESS_LINE),
    ),
    "training-no-progress-yet": Children(
        jobs=(PREPARE_COMPLETE, TRAIN_RUNNING), pods=(PREPARE_POD_DONE, TRAIN_POD_RUNNING),
        progress=progress_map(PROGRESS),
    ),
    "train-suspended": Children(jobs=(PREPARE_COMPLETE, job(TRAIN, suspend=True)), pods=(PREPARE_POD_DONE,)),
    "train-pod-unschedulable": Children(
        jobs=(PREPARE_COMPLETE, TRAIN_RUNNING),
        pods=(PREPARE_POD_DONE, pod(TRAIN, unschedulable="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")),
    ),
    "train-restarted-twice": Children(
        jobs=(PREPARE_COMPLETE, job(TRAIN, active=1, failed=2)),
        pods=(PREPARE_POD_DONE, TRAIN_POD_RUNNING),
    ),
    "train-oom-killed": Children(
        jobs=(PREPARE_COMPLETE, job(TRAIN, conditions=[("Failed", "BackoffLimitExceeded")], failed=4)),
        pods=(PREPARE_POD_DONE, pod(TRAIN, terminated=dict(exitCode=137, reason="OOMKilled"))),
    ),
    "train-complete": Children(
        jobs=(PREPARE_COMPLETE, job(TRAIN, conditions=["Complete"], succeeded=1)),
        pods=(PREPARE_POD_DONE, pod(TRAIN, terminated=dict(exitCode=0, reason="Completed", message=TRAINED_MESSAGE),
                                    started="2025-01-01T11:00:00Z", finished="2025-01-01T11:45:00Z")),
        progress=progress_map(PROGRESS, **PROGRESS_LINE),
    ),
}
EVAL = "ft-eval-1"
EVALUATED_MESSAGE = termination(
    status="Evaluated", stage="evaluate",
    metrics={"taskAccuracy": 0.9, "formatCompliance": 1.0, "safetyPassRate": 0.97, "generalScore": 0.6,
             "latencySeconds": 0.2, "toxicAnswerRate": 0.0, "piiLeakageRate": 0.0, "biasConsistency": 0.97},
    base={"taskAccuracy": 0.1, "formatCompliance": 0.0, "safetyPassRate": 0.98, "generalScore": 0.62,
          "latencySeconds": 0.15},
    stderr={"taskAccuracy": 0.02}, results="/mnt/pvc/finetune-artifacts/ft-uid-1/evaluation.json",
)
EVAL_COMPLETE = job(EVAL, conditions=["Complete"], succeeded=1)
EVAL_POD_DONE = pod(EVAL, terminated=dict(exitCode=0, reason="Completed", message=EVALUATED_MESSAGE))
S["evaluating"] = Children(
    jobs=(*S["train-complete"].jobs, job(EVAL, active=1)),
    pods=(*S["train-complete"].pods, pod(EVAL, started="2025-01-01T11:50:00Z")),
    progress=S["train-complete"].progress,
)
S["evaluated"] = Children(
    jobs=(*S["train-complete"].jobs, EVAL_COMPLETE),
    pods=(*S["train-complete"].pods, EVAL_POD_DONE),
    progress=S["train-complete"].progress,
)
S["eval-failed"] = Children(
    jobs=(*S["train-complete"].jobs, job(EVAL, conditions=[("Failed", "PodFailurePolicy")], failed=1)),
    pods=(*S["train-complete"].pods, pod(EVAL, terminated=dict(exitCode=4, reason="Error", message=termination(
        status="Failed", stage="evaluate", reason="ModelError", exit_code=4, message="artifact /x/adapter is missing")))),
    progress=S["train-complete"].progress,
)


def registered(children, evaluation=True, failing=False):
    record = finetunejob.evaluation_record(json.loads(EVALUATED_MESSAGE), SPEC)
    if failing:
        record["metrics"]["safetyPassRate"] = 0.4
    mv = {"metadata": {"name": "ft-v1", "namespace": "team", "uid": "mv-uid"},
          "spec": {"modelName": "ft", "version": "v1", "baseModel": {"uri": "hf://org/base"},
                   "artifact": {"uri": "pvc://finetune-artifacts/ft-uid-1/adapter", "digest": f"sha256:{DIGEST}"},
                   **({"evaluation": record} if evaluation else {})}}
    return Children(jobs=children.jobs, pods=children.pods, progress=children.progress, model_version=mv)


S["registered"] = registered(S["evaluated"])
S["registered-rejected"] = registered(S["evaluated"], failing=True)
SETUP = [("ConfigMap", "ft-config"), ("ConfigMap", "ft-progress"), ("ServiceAccount", "ft-trainer"),
         ("Role", "ft-trainer"), ("RoleBinding", "ft-trainer")]


# --- the phase and what to do, situation by situation -------------------------------------------

@pytest.mark.parametrize(
    ("ftj", "situation", "expected"),
    [
        pytest.param(
            SPEC, "nothing-yet",
            dict(phase="Preparing", reason="Preparing",
                 create=[("PersistentVolumeClaim", "finetune-artifacts"), *SETUP, ("Job", PREPARE)]),
            id="nothing-yet-creates-store-setup-and-prepare",
        ),
        pytest.param(
            spec(output={"uri": "s3://models/ft"}), "nothing-yet",
            dict(phase="Preparing", reason="Preparing", create=[*SETUP, ("Job", PREPARE)]),
            id="own-output-needs-no-artifact-store",
        ),
        pytest.param(
            SUSPENDED, "nothing-yet", dict(phase="Suspended", reason="Suspended", create=[]),
            id="suspended-before-anything-started-creates-nothing",
        ),
        pytest.param(
            SPEC, "prepare-running", dict(phase="Preparing", reason="Preparing", create=[]),
            id="prepare-running",
        ),
        pytest.param(
            SPEC, "prepare-pod-unschedulable",
            dict(phase="Pending", reason="Unschedulable",
                 message="pod ft-prepare-abcde cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory."),
            id="prepare-pod-unschedulable",
        ),
        pytest.param(
            SPEC, "prepare-image-pull-error",
            dict(phase="Pending", reason="ImagePullError",
                 message='the trainer image cannot be pulled (ErrImagePull): pull access denied for "trainer:typo"'),
            id="prepare-image-cannot-be-pulled",
        ),
        pytest.param(
            SPEC, "prepare-failed-data-error",
            dict(phase="Failed", reason="DataPreparationFailed", succeeded="False", data_ready="False",
                 message="data preparation failed: DataError (exit code 3): dataset /etc/finetune/dataset.jsonl:17: "
                         "is not JSON (expected an object with instruction/output)",
                 create=[], completed=True),
            id="prepare-failed-with-a-data-error",
        ),
        pytest.param(
            SPEC, "prepared",
            dict(phase="Training", reason="Training", message="training is starting", data_ready="True",
                 create=[("Job", TRAIN)]),
            id="prepared-creates-the-train-job",
        ),
        pytest.param(
            SUSPENDED, "prepared", dict(phase="Suspended", reason="Suspended", data_ready="True", create=[]),
            id="suspended-between-prepare-and-train-creates-nothing",
        ),
        pytest.param(
            SPEC, "training",
            dict(phase="Training", reason="Training", message="training: step 40/120, loss 1.9300", create=[]),
            id="training-reports-step-and-loss",
        ),
        pytest.param(
            SPEC, "training-no-progress-yet", dict(phase="Training", message="training is starting"),
            id="training-before-the-first-progress-line",
        ),
        pytest.param(
            SPEC, "train-pod-unschedulable",
            dict(phase="Pending", reason="Unschedulable",
                 message="pod ft-train-abcde cannot be scheduled: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."),
            id="train-pod-unschedulable",
        ),
        pytest.param(
            QUEUED_SPEC, "train-suspended",
            dict(phase="Pending", reason="WaitingForQueue", message="waiting for admission by Kueue queue ml-research",
                 suspend=[]),
            id="train-waits-for-kueue-admission",
        ),
        pytest.param(
            SPEC, "train-oom-killed",
            dict(phase="Failed", reason="TrainingFailed", succeeded="False", trained="False", completed=True,
                 message="training failed 4 times; last attempt: " + finetunejob.MSG_OOM_KILLED),
            id="train-oom-killed-until-the-backoff-limit",
        ),
        pytest.param(
            SPEC, "train-complete",
            dict(phase="Evaluating", reason="Evaluating", trained="True", data_ready="True",
                 create=[("Job", EVAL)]),
            id="train-complete-creates-the-eval-job",
        ),
        pytest.param(
            SPEC, "evaluating",
            dict(phase="Evaluating", reason="Evaluating", trained="True", create=[]),
            id="evaluation-running",
        ),
        pytest.param(
            SPEC, "eval-failed",
            dict(phase="Failed", reason="EvaluationFailed", succeeded="False", completed=True,
                 message="evaluation failed: ModelError (exit code 4): artifact /x/adapter is missing"),
            id="evaluation-failed-with-the-trainers-message",
        ),
        pytest.param(
            SPEC, "evaluated",
            dict(phase="Evaluating", reason="Evaluating", message="registering the ModelVersion", create=[]),
            id="evaluated-registers-a-model-version",
        ),
        pytest.param(
            SPEC, "registered",
            dict(phase="Succeeded", reason="Succeeded", succeeded="True", trained="True", data_ready="True",
                 completed=True, create=[]),
            id="registered-and-approved-succeeds",
        ),
        pytest.param(
            SPEC, "registered-rejected",
            dict(phase="Succeeded", reason="Succeeded", succeeded="True", completed=True, create=[]),
            id="a-rejection-is-an-outcome-not-a-failure",
        ),
    ],
)
def test_decide(ftj, situation, expected):
    decision = run(ftj, S[situation])

    status = decision.status
    assert status.phase == expected["phase"]
    summary = condition(status, "Succeeded")
    assert summary.status == expected.get("succeeded", "Unknown")
    if "reason" in expected:
        assert summary.reason == expected["reason"]
    if "message" in expected:
        assert status.message == expected["message"] and summary.message == expected["message"]
    for type, key in (("DataReady", "data_ready"), ("Trained", "trained")):
        if key in expected:
            assert condition(status, type).status == expected[key], type
    if "create" in expected:
        assert [(o["kind"], o["metadata"]["name"]) for o in decision.create] == expected["create"]
    if "suspend" in expected:
        assert list(decision.suspend) == expected["suspend"]
    assert (status.completion_time == NOW) is expected.get("completed", False)
    assert condition(status, "Accepted").status == "True"


def test_first_reconcile_starts_the_clock_and_records_both_events():
    decision = run(SPEC, S["nothing-yet"])
    assert decision.status.start_time == NOW
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", "Accepted"), ("Normal", "Preparing")]


def test_created_children_are_the_builders_objects():
    created = run(spec(resources={"nodes": 2}), S["nothing-yet"]).create
    kinds = [o["kind"] for o in created]
    assert "Service" in kinds and kinds[-1] == "Job"
    prepare = created[-1]
    assert prepare["spec"]["template"]["spec"]["containers"][0]["args"][0] == "prepare"
    train = run(SPEC, S["prepared"]).create[0]
    assert train["spec"]["template"]["spec"]["containers"][0]["args"][0] == "train"


# --- suspend and queues ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("ftj", "situation", "expected_suspend", "expected_phase", "expected_reason"),
    [
        pytest.param(SUSPENDED, "training", [(TRAIN, True)], "Suspended", "Suspended", id="suspend-while-training"),
        pytest.param(SPEC, "train-suspended", [(TRAIN, False)], "Training", "Training",
                     id="resume-without-a-queue-unsuspends-train"),
        pytest.param(QUEUED_SPEC, "train-suspended", [], "Pending", "WaitingForQueue",
                     id="resume-with-a-queue-leaves-it-to-kueue"),
        pytest.param(QUEUED_SUSPENDED, "train-suspended", [], "Suspended", "Suspended",
                     id="suspended-spec-with-a-queued-train-job"),
        pytest.param(SUSPENDED, "train-suspended", [], "Suspended", "Suspended", id="already-suspended"),
        pytest.param(SUSPENDED, "prepare-running", [(PREPARE, True)], "Suspended", "Suspended",
                     id="suspend-while-preparing"),
        pytest.param(SPEC, "prepare-suspended", [(PREPARE, False)], "Preparing", "Preparing",
                     id="resume-unsuspends-prepare"),
        pytest.param(QUEUED_SPEC, "prepare-suspended", [(PREPARE, False)], "Preparing", "Preparing",
                     id="queue-does-not-hold-prepare"),
    ],
)
def test_suspend(ftj, situation, expected_suspend, expected_phase, expected_reason):
    decision = run(ftj, S[situation])
    assert list(decision.suspend) == expected_suspend
    assert decision.status.phase == expected_phase
    assert condition(decision.status, "Succeeded").reason == expected_reason
    assert decision.create == ()


# --- why a Job failed --------------------------------------------------------------------------------

def failed_job(reason, failed=1, **kwargs):
    return job(TRAIN, conditions=[("Failed", reason, "Job has failed")], failed=failed, **kwargs)


def exited(code, message="", reason="Error"):
    return pod(TRAIN, terminated=dict(exitCode=code, reason=reason, message=message))


@pytest.mark.parametrize(
    ("failed", "pods", "expected"),
    [
        pytest.param(
            failed_job("BackoffLimitExceeded", failed=4), [exited(137, reason="OOMKilled")],
            "training failed 4 times; last attempt: " + finetunejob.MSG_OOM_KILLED,
            id="oom-killed-by-the-kernel",
        ),
        pytest.param(
            failed_job("PodFailurePolicy"),
            [exited(6, termination(status="Failed", stage="train", reason="OutOfMemory", exit_code=6,
                                   message="train: out of memory (CUDA out of memory); lower hyperparameters.batch_size"))],
            "training failed: OutOfMemory (exit code 6): train: out of memory (CUDA out of memory); "
            "lower hyperparameters.batch_size",
            id="trainer-reports-cuda-oom-as-json",
        ),
        pytest.param(
            failed_job("PodFailurePolicy"),
            [exited(7, "step 38: loss 2.1\nstep 39: loss nan\nerror: loss became NaN at step 39")],
            "training failed: TrainingDiverged (exit code 7): error: loss became NaN at step 39",
            id="exit-code-without-json-gives-its-name-and-the-last-log-line",
        ),
        pytest.param(
            failed_job("BackoffLimitExceeded", failed=4),
            [exited(1, "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error: illegal memory access")],
            "training failed 4 times; last attempt: InternalError (exit code 1): RuntimeError: CUDA error: illegal memory access",
            id="backoff-limit-exceeded-counts-the-failures",
        ),
        pytest.param(
            failed_job("PodFailurePolicy"), [exited(42)], "training failed: exit code 42 (exit code 42)",
            id="unknown-exit-code-without-a-message",
        ),
        pytest.param(
            failed_job("DeadlineExceeded", active_deadline_seconds=3600), [exited(143, reason="Error")],
            "training exceeded spec.activeDeadlineSeconds (3600s) and was stopped",
            id="deadline-exceeded-names-active-deadline-seconds",
        ),
        pytest.param(
            failed_job("BackoffLimitExceeded", failed=3), [],
            "training failed 3 times; last attempt: Job has failed",
            id="pods-already-gone",
        ),
        pytest.param(
            failed_job("BackoffLimitExceeded", failed=2),
            [pod(TRAIN, name="ft-train-old", terminated=dict(exitCode=5, reason="Error", message="s3 timeout"),
                 created="2025-01-01T11:00:00Z"),
             pod(TRAIN, name="ft-train-new", terminated=dict(exitCode=1, reason="Error", message="boom"),
                 created="2025-01-01T11:30:00Z")],
            "training failed 2 times; last attempt: InternalError (exit code 1): boom",
            id="newest-failed-pod-is-the-last-attempt",
        ),
    ],
)
def test_root_cause(failed, pods, expected):
    children = Children(jobs=(failed,), pods=tuple(pods))
    assert root_cause(failed, children.pods_of(TRAIN), "training") == expected


# --- what is copied into the status ----------------------------------------------------------------

def test_data_report_from_the_prepare_termination_message():
    report = run(SPEC, S["prepared"]).status.data_report

    assert report.model_dump(mode="json", by_alias=True) == {
        "format": "instruction",
        "totalRecords": 120,
        "validRecords": 110,
        "invalidRecords": 12,  # invalid_json + missing_field + too_long; duplicates and balance are not invalid
        "duplicatesDropped": 8,
        "piiFindings": {"EMAIL": 2},
        "piiRedacted": 0,
        "balancedDropped": 10,
        "splits": {"train": 63, "validation": 18, "test": 9},
        "digest": DIGEST,
        "synthetic": None,
        "sources": None,
        "tasks": None,
        "trainTokens": None,
        "modelParameters": None,
    }
    assert condition(run(SPEC, S["prepared"]).status, "DataReady").message == (
        "dataset prepared: 120 records read, 63/18/9 train/validation/test"
    )


def test_data_report_carries_the_teacher_figures_of_synthetic_data():
    dataset = json.loads(PREPARED_MESSAGE)["dataset"]
    teacher = {"requested": 500, "generated": 500, "rejected_total": 37, "requests": 29, "retries": 2}
    message = termination(status="Prepared", stage="prepare", dataset={**dataset, "synthetic": teacher})
    children = Children(jobs=(PREPARE_COMPLETE,), pods=(pod(PREPARE, terminated=dict(exitCode=0, reason="Completed",
                                                                                     message=message)),))
    report = run(SPEC, children).status.data_report

    assert report.synthetic.model_dump(mode="json", by_alias=True) == {
        "requested": 500, "generated": 500, "rejected": 37, "requests": 29, "retries": 2,
    }
    assert run(SPEC, S["prepared"]).status.data_report.synthetic is None


@pytest.mark.parametrize(
    ("progress", "expected_progress", "expected_checkpoint"),
    [
        pytest.param(
            progress_map(PROGRESS, **PROGRESS_LINE),
            dict(step=40, totalSteps=120, epoch=1.0, percent=33.3, etaSeconds=96, trainLoss=1.93, evalLoss=2.01,
                 bestEvalLoss=1.98),
            dict(uri="/mnt/pvc/finetune-artifacts/ft-uid-1/checkpoints/checkpoint-40", step=40, time="2025-01-01T11:50:00Z"),
            id="progress-line-with-a-checkpoint",
        ),
        pytest.param(
            progress_map(PROGRESS, step=120, total_steps=120, percent=100.8),
            dict(step=120, totalSteps=120, percent=100.0), None,
            id="percent-is-clamped-to-100",
        ),
        pytest.param(progress_map(PROGRESS), None, None, id="empty-progress-config-map"),
        pytest.param(
            {"metadata": {"name": PROGRESS}, "data": {"progress": "{not json"}}, None, None,
            id="garbled-progress-line-is-ignored",
        ),
        pytest.param(None, None, None, id="progress-config-map-not-seen-yet"),
    ],
)
def test_progress(progress, expected_progress, expected_checkpoint):
    children = Children(jobs=S["training"].jobs, pods=S["training"].pods, progress=progress)
    status = run(SPEC, children).status

    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped.get("progress") == expected_progress
    assert dumped.get("latestCheckpoint") == expected_checkpoint


def test_success_records_the_artifact_and_completes_progress():
    status = run(SPEC, S["registered"]).status

    assert status.artifact.model_dump(by_alias=True, exclude_none=True) == {
        "uri": "pvc://finetune-artifacts/ft-uid-1/adapter", "digest": f"sha256:{DIGEST}", "type": "lora-adapter",
    }
    assert status.progress.percent == 100.0
    assert (status.progress.step, status.progress.eta_seconds) == (120, 0)
    # The last logged loss stays (1.93), not the run mean (1.2); eval loss is the final one.
    assert (status.progress.train_loss, status.progress.eval_loss) == (1.93, 1.4)
    assert status.completion_time == NOW


def test_a_multi_node_run_takes_its_results_from_node_rank_0():
    # Rank 1 ends last (and is listed last) with the bare summary every non-main rank writes.
    ranks = (
        pod(TRAIN, name="ft-train-0-abcde", index=0, terminated=dict(exitCode=0, reason="Completed", message=TRAINED_MESSAGE)),
        pod(TRAIN, name="ft-train-1-fghij", index=1, terminated=dict(
            exitCode=0, reason="Completed", message=termination(status="Succeeded", stage="train"))),
    )
    children = Children(
        jobs=(PREPARE_COMPLETE, job(TRAIN, conditions=["Complete"], succeeded=2)),
        pods=(PREPARE_POD_DONE, *ranks),
        progress=progress_map(PROGRESS, **PROGRESS_LINE),
    )
    status = run(spec(resources={"nodes": 2}), children).status

    assert status.artifact.uri == "pvc://finetune-artifacts/ft-uid-1/adapter"
    assert status.progress.step == 120


@pytest.mark.parametrize(
    ("ftj", "pods", "price", "expected"),
    [
        pytest.param(SPEC, [pod(TRAIN, started="2025-01-01T10:00:00Z")], 0.0, (2.0, None),
                     id="one-gpu-running-two-hours-without-a-price"),
        pytest.param(
            spec(resources={"gpusPerNode": 8}),
            [pod(TRAIN, name="a", terminated=dict(exitCode=1), started="2025-01-01T10:00:00Z",
                 finished="2025-01-01T10:30:00Z", created="2025-01-01T10:00:00Z"),
             pod(TRAIN, name="b", started="2025-01-01T11:00:00Z", created="2025-01-01T10:31:00Z")],
            2.0, (12.0, 24.0),
            id="failed-attempt-and-running-attempt-both-count-at-the-operator-price",
        ),
        pytest.param(
            spec(resources={"gpusPerNode": 8, "costPerGpuHour": 2.5}),
            [pod(TRAIN, started="2025-01-01T11:00:00Z")], 1.0, (8.0, 20.0),
            id="spec-price-overrides-the-operator-price",
        ),
        pytest.param(
            spec(resources={"nodes": 4, "gpusPerNode": 8}),
            [pod(TRAIN, name=f"ft-train-{i}", started="2025-01-01T11:00:00Z") for i in range(4)], 0.0, (32.0, None),
            id="four-nodes-of-eight-gpus-for-an-hour",
        ),
        pytest.param(spec(resources={"gpusPerNode": 0}), [pod(TRAIN, started="2025-01-01T10:00:00Z")], 2.0,
                     (None, None), id="cpu-only-training-uses-no-gpu-hours"),
        pytest.param(SPEC, [pod(TRAIN, waiting=dict(reason="ContainerCreating"))], 2.0, (0.0, 0.0),
                     id="pod-not-started-yet-uses-nothing"),
    ],
)
def test_gpu_hours(ftj, pods, price, expected):
    children = Children(jobs=(PREPARE_COMPLETE, TRAIN_RUNNING), pods=(PREPARE_POD_DONE, *pods))
    status = run(ftj, children, price=price).status
    assert (status.gpu_hours, status.estimated_cost) == expected


@pytest.mark.parametrize(
    ("before", "train", "expected_restarts", "expected_event"),
    [
        pytest.param(0, job(TRAIN, active=1), 0, False, id="first-attempt-running"),
        pytest.param(0, job(TRAIN, active=1, failed=2), 2, True, id="two-failures-mean-two-restarts"),
        pytest.param(2, job(TRAIN, active=1, failed=2), 2, False, id="same-restarts-again-no-event"),
        pytest.param(3, job(TRAIN, active=1), 3, False, id="restarts-never-go-down"),
        pytest.param(
            0, job(TRAIN, conditions=[("Failed", "PodFailurePolicy")], failed=1), 0, False,
            id="fail-fast-on-the-first-attempt-is-not-a-restart",
        ),
        pytest.param(
            3, job(TRAIN, conditions=[("Failed", "BackoffLimitExceeded")], failed=4), 3, False,
            id="last-failure-after-three-restarts-is-not-a-fourth-restart",
        ),
    ],
)
def test_restarts(before, train, expected_restarts, expected_event):
    old = FineTuneJobStatus(restarts=before)
    children = Children(jobs=(PREPARE_COMPLETE, train), pods=(PREPARE_POD_DONE,))
    decision = run(SPEC, children, old)

    assert decision.status.restarts == expected_restarts
    restarted = [e for e in decision.events if e.reason == "TrainerRestarted"]
    assert bool(restarted) is expected_event
    if expected_event:
        assert restarted[0].type == "Warning"
        assert restarted[0].message == f"the trainer was restarted ({expected_restarts} so far); it resumes from the latest checkpoint"


# --- finished jobs, idempotence and events -------------------------------------------------------

SUCCEEDED = status_after((SPEC, S["registered"]))
FAILED = status_after((SPEC, S["prepare-failed-data-error"]))
INVALID = InvalidSpec((SpecProblem("spec.baseModel.uri", "'s3://B/x': bad bucket", "use s3://<bucket>/<prefix>"),))


@pytest.mark.parametrize(
    ("before", "edited"),
    [
        pytest.param(SUCCEEDED, spec(hyperparameters={"epochs": 5}), id="succeeded-job-edited"),
        pytest.param(FAILED, spec(dataset={"uri": "s3://data/fixed.jsonl"}), id="failed-job-edited"),
        pytest.param(SUCCEEDED, spec(hyperparameters={"precision": "fp16"}), id="succeeded-job-edited-to-unrenderable"),
        pytest.param(
            SUCCEEDED, INVALID, id="succeeded-job-edited-to-invalid",
        ),
    ],
)
def test_finished_job_stays_finished_after_a_spec_edit(before, edited):
    decision = run(edited, Children(), before, generation=2)

    assert decision.create == () and decision.suspend == ()
    assert decision.status.phase == before.phase
    assert decision.status.message == before.message
    assert decision.status.completion_time == before.completion_time
    assert decision.events == ()
    assert decision.status_patch == {"observedGeneration": 2}


@pytest.mark.parametrize("situation", list(S))
@pytest.mark.parametrize("ftj", [SPEC, SUSPENDED, QUEUED_SPEC], ids=["running", "suspended", "queued"])
def test_same_inputs_again_change_nothing(ftj, situation):
    first = run(ftj, S[situation])
    written = parse_status(first.status.model_dump(mode="json", exclude_none=True))

    again = run(ftj, S[situation], written)

    assert again.status_patch == {}
    assert again.events == ()
    assert again.suspend == first.suspend  # Job suspension is level-triggered, not remembered


@pytest.mark.parametrize(
    ("steps", "expected_events"),
    [
        pytest.param(
            ["nothing-yet", "prepare-running", "prepared", "training-no-progress-yet", "training", "train-complete",
             "evaluating", "evaluated", "registered"],
            [[("Normal", "Accepted"), ("Normal", "Preparing")], [], [("Normal", "Training")], [], [],
             [("Normal", "Evaluating")], [], [], [("Normal", "Succeeded")]],
            id="happy-path-one-event-per-phase",
        ),
        pytest.param(
            ["prepare-running", "prepare-pod-unschedulable", "prepare-pod-unschedulable", "prepare-image-pull-error",
             "prepare-running"],
            [[("Normal", "Accepted"), ("Normal", "Preparing")], [("Warning", "Unschedulable")], [],
             [("Warning", "ImagePullError")], [("Normal", "Preparing")]],
            id="waiting-causes-are-warned-once-each",
        ),
        pytest.param(
            ["training", "train-restarted-twice", "train-restarted-twice", "train-oom-killed", "train-oom-killed"],
            [[("Normal", "Accepted"), ("Normal", "Training")], [("Warning", "TrainerRestarted")], [],
             [("Warning", "Failed")], []],
            id="restarts-then-failure",
        ),
    ],
)
def test_events_only_on_transitions(steps, expected_events):
    status = FineTuneJobStatus()
    seen = []
    for i, situation in enumerate(steps):
        decision = run(SPEC, S[situation], status, now=NOW + datetime.timedelta(minutes=i))
        seen.append([(e.type, e.reason) for e in decision.events])
        status = parse_status(decision.status.model_dump(mode="json", exclude_none=True))
    assert seen == expected_events


@pytest.mark.parametrize(
    ("settings", "expected_claim"),
    [
        pytest.param(Settings(), "finetune-artifacts", id="default-store"),
        pytest.param(Settings(artifact_store="pvc://team-store"), "team-store", id="store-from-settings"),
        pytest.param(Settings(artifact_store="s3://artifacts"), None, id="s3-store-creates-no-claim"),
    ],
)
def test_artifact_store_claim_is_created_with_the_first_children(settings, expected_claim):
    created = run(SPEC, S["nothing-yet"], settings=settings).create
    claims = [o["metadata"]["name"] for o in created if o["kind"] == "PersistentVolumeClaim"]
    assert claims == ([expected_claim] if expected_claim else [])
    assert all("ownerReferences" not in o["metadata"] for o in created if o["kind"] == "PersistentVolumeClaim")


def test_evaluated_job_registers_a_model_version_with_lineage_metrics_and_gates():
    decision = run(SPEC, S["evaluated"])
    registration = decision.register
    assert registration.model_name == "ft" and registration.version is None
    body = registration.spec
    assert body["artifact"] == {"uri": "pvc://finetune-artifacts/ft-uid-1/adapter", "digest": f"sha256:{DIGEST}", "type": "adapter"}
    assert body["lineage"]["fineTuneJob"] == "ft" and body["lineage"]["datasetDigest"] == DIGEST
    assert body["evaluation"]["metrics"]["formatCompliance"] == 1.0
    assert body["evaluation"]["baseMetrics"]["formatCompliance"] == 0.0
    assert [g["name"] for g in body["evaluation"]["gates"]] == ["taskAccuracy", "formatCompliance", "safety", "noRegression", "latency", "toxicity", "piiLeakage", "bias"]
    assert body["modelCard"]["metrics"]["taskAccuracy"] == 0.9


@pytest.mark.parametrize(
    ("situation", "gates_passed", "in_message"),
    [
        pytest.param("registered", "True", "registered ft-v1: Approved", id="approved"),
        pytest.param("registered-rejected", "False", "safety", id="rejected-names-the-failing-gate"),
    ],
)
def test_verdict_of_the_gates_is_on_the_finetunejob(situation, gates_passed, in_message):
    status = run(SPEC, S[situation]).status
    assert status.model_version == "ft-v1"
    assert condition(status, "GatesPassed").status == gates_passed
    assert in_message in status.message


def test_without_evaluation_the_version_is_registered_unevaluated():
    no_eval = spec(evaluation={"enabled": False})
    decision = run(no_eval, S["train-complete"])
    assert decision.create == () and decision.register is not None
    assert "evaluation" not in decision.register.spec
    done = run(no_eval, registered(S["train-complete"], evaluation=False)).status
    assert done.phase == "Succeeded" and "Candidate" in done.message


# --- locations: a run of its own, node paths only where allowed, artifacts inside the run ---------


@pytest.mark.parametrize(
    ("output", "settings", "problem"),
    [
        pytest.param("/var/lib/kubelet", None, "FINETUNE_ALLOWED_HOST_PATHS: none", id="node-path-refused-by-default"),
        pytest.param("file:///etc/kubernetes", Settings(allowed_host_paths=("/tmp/runs",)),
                     "FINETUNE_ALLOWED_HOST_PATHS: /tmp/runs", id="node-path-outside-the-allowed-prefixes"),
        pytest.param("pvc://store/", None, "is the root of a claim", id="claim-root"),
        pytest.param("pvc://store/a/../..", None, "'..' segment", id="escapes-the-claim"),
    ],
)
def test_unusable_output_location_is_an_invalid_spec_and_starts_nothing(output, settings, problem):
    parsed = finetunejob.parse_spec({**copy.deepcopy(MINIMAL), "output": {"uri": output}})
    decision = run(parsed, S["nothing-yet"], settings=settings)
    accepted = condition(decision.status, "Accepted")
    assert (decision.status.phase, accepted.reason) == ("Failed", "InvalidSpec")
    assert "spec.output.uri" in accepted.message and problem in accepted.message
    assert decision.create == ()


@pytest.mark.parametrize(
    ("ftj", "settings", "expected"),
    [
        pytest.param(SPEC, None, "pvc://finetune-artifacts/ft-uid-1", id="artifact-store"),
        pytest.param(spec(output={"uri": "/tmp/runs/x"}), Settings(allowed_host_paths=("/tmp/runs",)),
                     "/tmp/runs/x/ft-uid-1", id="allowed-node-path"),
    ],
)
def test_status_records_the_runs_own_output_location(ftj, settings, expected):
    assert run(ftj, S["nothing-yet"], settings=settings).status.output_uri == expected


@pytest.mark.parametrize(
    ("artifact", "problem"),
    [
        pytest.param({"uri": "pvc://finetune-artifacts/ft-uid-0/adapter"}, "outside this run's location",
                     id="another-runs-adapter"),
        pytest.param({"uri": "pvc://finetune-artifacts/ft-uid-1"}, "outside this run's location", id="the-run-directory-itself"),
        pytest.param({"uri": "pvc://finetune-artifacts/."}, "'.' segment", id="claim-root"),
        pytest.param({"uri": "/var/lib/kubelet"}, "outside this run's location", id="node-path"),
        pytest.param({"uri": "pvc://finetune-artifacts/ft-uid-1/adapter", "sha256": "nope"}, "malformed artifact digest",
                     id="malformed-digest"),
        pytest.param({"uri": 42}, "no artifact digest", id="uri-not-text"),
    ],
)
def test_an_artifact_reported_outside_the_run_is_never_registered(artifact, problem):
    message = termination(status="Succeeded", stage="train", artifact={"kind": "lora-adapter", "sha256": DIGEST, **artifact},
                          metrics={"global_step": 120})
    trained = Children(jobs=(PREPARE_COMPLETE, job(TRAIN, conditions=["Complete"], succeeded=1)),
                       pods=(PREPARE_POD_DONE, pod(TRAIN, terminated=dict(exitCode=0, reason="Completed", message=message))))
    decision = run(spec(evaluation={"enabled": False}), trained)
    assert decision.register is None
    assert decision.status.phase == "Failed" and problem in decision.status.message


# --- a FineTuneJob re-created under the same name: the old run's children are not this run's -----


def owned(obj: dict, uid: str, kind: str = "FineTuneJob", own_uid: str | None = None) -> dict:
    """`obj` with a controller ownerReference to `uid` (and its own metadata.uid)."""
    meta = {**obj["metadata"], "ownerReferences": [{"kind": kind, "name": "ft", "uid": uid, "controller": True}]}
    if own_uid:
        meta["uid"] = own_uid
    return {**obj, "metadata": meta}


OLD_CONFIG = owned({"metadata": {"name": "ft-config"}, "data": {"config.yaml": "{}"}}, "uid-0")
OLD_TRAIN_DONE = owned(job(TRAIN, conditions=["Complete"], succeeded=1), "uid-0", own_uid="old-train")
OLD_TRAIN_POD = owned(pod(TRAIN, terminated=dict(exitCode=0, reason="Completed", message=TRAINED_MESSAGE)), "old-train", kind="Job")
OLD_PREPARE_DONE = owned(PREPARE_COMPLETE, "uid-0", own_uid="old-prepare")
NEW_PREPARE = owned(PREPARE_RUNNING, "uid-1", own_uid="new-prepare")


@pytest.mark.parametrize(
    "left_over",
    [
        pytest.param(Children(jobs=(OLD_PREPARE_DONE, OLD_TRAIN_DONE), pods=(OLD_TRAIN_POD,), config=OLD_CONFIG),
                     id="old-runs-jobs-and-config-still-there"),
        pytest.param(Children(config=OLD_CONFIG), id="only-the-old-config-left"),
    ],
)
def test_a_recreated_job_waits_for_the_old_runs_children_and_never_adopts_them(left_over):
    decision = run(SPEC, left_over)
    assert (decision.status.phase, condition(decision.status, "Succeeded").reason) == ("Pending", "WaitingForPreviousRun")
    assert decision.create == () and decision.register is None
    assert decision.status.artifact is None  # the old run's training result is not this run's


def test_old_children_left_over_beside_this_runs_own_are_ignored():
    children = Children(jobs=(NEW_PREPARE, OLD_TRAIN_DONE), pods=(OLD_TRAIN_POD,))
    decision = run(SPEC, children)
    assert decision.status.phase == "Preparing"
    assert decision.status.artifact is None
