"""The Argo CD health checks in config/argocd: one row per situation, run as Argo CD runs them.

Argo CD evaluates a custom health check in gopher-lua (Lua 5.1) with only the base and table
libraries open (argocd-cm keys are not `useOpenLibs`), `obj` set to the live object and the
script's returned table read as {status, message}. `run_health` does the same in a Lua 5.1
runtime whose string and math libraries are removed, so a script that would fail in Argo CD
fails here.

The status dicts mirror what the operator writes (messages are the operator's formats); the
`*_rows_are_real_status_fields` tests check every key of them against the status models, and
the `operator_made` tests run the checks on statuses the real `decide` functions produced.
"""

from __future__ import annotations

import copy
import datetime
import importlib.util
from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

from finetune_operator.api.finetunejob import FineTuneJobStatus
from finetune_operator.api.modelversion import ModelVersionStatus
from finetune_operator.api.rollout import DEFAULT_CANARY_STEPS, RolloutStatus
from finetune_operator.logic import finetunejob as ftj_logic
from finetune_operator.logic import modelversion as mv_logic

from tests.unit import rollout_fixtures as rf

try:
    from lupa import lua51 as lua_runtime
except ImportError:  # a lupa built without bundled Lua 5.1: the default runtime is close enough
    lua_runtime = lupa

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "config" / "argocd"
KINDS = ("FineTuneJob", "ModelVersion", "Rollout")
ARGO_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
GENERATION = 2

# Argo CD opens base, table, package and a reduced os; nothing else may be used.
SANDBOX = """
getmetatable("").__index = nil
string, math, io, os, debug, coroutine, package, require = nil, nil, nil, nil, nil, nil, nil, nil
load, loadfile, loadstring, dofile, module = nil, nil, nil, nil, nil
"""


def _load_render():
    spec = importlib.util.spec_from_file_location("argocd_render", ARGOCD / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


def script(kind: str) -> str:
    return render.script(kind)


def run_health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD would compute them for `obj`."""
    lua = lua_runtime.LuaRuntime(unpack_returned_tuples=True)
    lua.execute(SANDBOX)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(script(kind))
    status, message = hs["status"], hs["message"]
    assert status in ARGO_HEALTH, status
    assert isinstance(message, str) and message, f"empty health message for {kind}"
    return status, message


# --- objects -----------------------------------------------------------------------------------

FTJ_SPEC = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "dataset": {"uri": "s3://datasets/support/tickets.jsonl"},
}
MV_SPEC = {
    "modelName": "support-summarizer",
    "version": "v3",
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "artifact": {"uri": "s3://models/support-summarizer/v3", "digest": "sha256:" + "0" * 64},
}
RO_SPEC = {
    "modelName": "support-summarizer",
    "track": "LatestApproved",
    "strategy": {"canary": {"steps": DEFAULT_CANARY_STEPS}},
    "trafficRouter": {"gatewayAPI": {}},
}
SPECS = {"FineTuneJob": FTJ_SPEC, "ModelVersion": MV_SPEC, "Rollout": RO_SPEC}


def obj(kind: str, status: dict[str, Any] | None, *, generation: int = GENERATION, spec=None) -> dict[str, Any]:
    made: dict[str, Any] = {
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": kind,
        "metadata": {"name": "support-summarizer", "namespace": "ml", "generation": generation},
        "spec": copy.deepcopy(SPECS[kind] if spec is None else spec),
    }
    if status is not None:
        made["status"] = status
    return made


def cond(type: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T12:00:00Z",
        "observedGeneration": GENERATION,
    }


def ftj(phase: str | None, message: str, reason: str, summary: str = "Unknown", **fields: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": GENERATION,
        "conditions": [cond("Accepted", "True", "SpecValid", "the spec is valid"), cond("Succeeded", summary, reason, message)],
        "message": message,
        "startTime": "2025-01-01T11:00:00Z",
    }
    if phase is not None:
        status["phase"] = phase
    status.update(fields)
    return status


MV_NAME = "support-summarizer-v3"
APPROVED_VERDICT = "all 4 blocking gates passed"
REJECTED_VERDICT = "rejected by taskAccuracy (failed: taskAccuracy > 0.85: measured 0.71)"
TRAINING_PROGRESS = {"step": 425, "totalSteps": 1000, "epoch": 1.27, "percent": 42.5, "trainLoss": 0.4321}
DONE_PROGRESS = {"step": 1000, "totalSteps": 1000, "percent": 100.0, "etaSeconds": 0, "trainLoss": 0.2107}
ARTIFACT = {"uri": "s3://models/support-summarizer/v3", "digest": "sha256:" + "0" * 64, "type": "adapter"}

FTJ_ROWS = [
    pytest.param(
        ftj("Pending", "waiting for admission by Kueue queue gpu-a100", "WaitingForQueue"),
        "Progressing", ["Pending", "Kueue queue gpu-a100"], ["%"],
        id="pending-waiting-for-kueue",
    ),
    pytest.param(
        ftj("Pending", "pod support-summarizer-train-x7k2p cannot be scheduled: 0/4 nodes are available: "
            "4 Insufficient nvidia.com/gpu.", "Unschedulable", progress=TRAINING_PROGRESS, restarts=1),
        "Progressing", ["Pending, 42.5% done", "Insufficient nvidia.com/gpu"], [],
        id="pending-unschedulable-after-a-restart-mid-training",
    ),
    pytest.param(
        ftj("Preparing", "preparing the dataset", "Preparing"),
        "Progressing", ["Preparing: preparing the dataset"], ["%"],
        id="preparing-data",
    ),
    pytest.param(
        ftj("Training", "training is starting", "Training"),
        "Progressing", ["Training: training is starting"], ["%"],
        id="training-before-the-first-progress-report",
    ),
    pytest.param(
        ftj("Training", "training: step 425/1000, loss 0.4321", "Training", progress=TRAINING_PROGRESS),
        "Progressing", ["Training, 42.5% done", "step 425/1000"], [],
        id="training-with-progress",
    ),
    pytest.param(
        ftj("Training", "training: step 600/1000, loss 0.3310", "Training",
            progress={**TRAINING_PROGRESS, "step": 600, "percent": 60}),
        "Progressing", ["Training, 60% done"], ["60.0"],
        id="training-whole-percent-has-no-decimal",
    ),
    pytest.param(
        ftj("Training", "training: step 1/3, loss 1.2000", "Training",
            progress={"step": 1, "totalSteps": 3, "percent": 33.333333}),
        "Progressing", ["Training, 33.3% done"], ["33.33"],
        id="training-percent-rounded-to-a-tenth",
    ),
    pytest.param(
        ftj("Evaluating", "evaluating the fine-tuned and the base model", "Evaluating",
            progress=DONE_PROGRESS, artifact=ARTIFACT),
        "Progressing", ["Evaluating: evaluating the fine-tuned and the base model"], ["%"],
        id="evaluating",
    ),
    pytest.param(
        ftj("Evaluating", "registering the ModelVersion", "Registering", progress=DONE_PROGRESS, artifact=ARTIFACT),
        "Progressing", ["registering the ModelVersion"], [],
        id="registering-the-model-version",
    ),
    pytest.param(
        ftj("Succeeded", f"registered {MV_NAME}: Approved ({APPROVED_VERDICT})", "Succeeded", "True",
            modelVersion=MV_NAME, progress=DONE_PROGRESS, artifact=ARTIFACT,
            completionTime="2025-01-01T13:00:00Z",
            conditions=[cond("Accepted", "True", "SpecValid", "the spec is valid"),
                        cond("GatesPassed", "True", "GatesPassed", APPROVED_VERDICT),
                        cond("Succeeded", "True", "Succeeded", f"registered {MV_NAME}: Approved ({APPROVED_VERDICT})")]),
        "Healthy", [MV_NAME, "approved", APPROVED_VERDICT], ["rejected"],
        id="succeeded-version-approved",
    ),
    pytest.param(
        ftj("Succeeded", f"registered {MV_NAME}: Rejected, {REJECTED_VERDICT}", "Succeeded", "True",
            modelVersion=MV_NAME, progress=DONE_PROGRESS, artifact=ARTIFACT,
            completionTime="2025-01-01T13:00:00Z",
            conditions=[cond("Accepted", "True", "SpecValid", "the spec is valid"),
                        cond("GatesPassed", "False", "GatesFailed", REJECTED_VERDICT),
                        cond("Succeeded", "True", "Succeeded", f"registered {MV_NAME}: Rejected, {REJECTED_VERDICT}")]),
        "Healthy", [f"ModelVersion {MV_NAME} was rejected", "taskAccuracy", "measured 0.71"], ["approved"],
        id="succeeded-but-version-rejected-by-gates",
    ),
    pytest.param(
        ftj("Succeeded", f"registered {MV_NAME} as a Candidate (evaluation disabled)", "Succeeded", "True",
            modelVersion=MV_NAME, artifact=ARTIFACT, completionTime="2025-01-01T13:00:00Z"),
        "Healthy", [MV_NAME, "evaluation disabled"], [],
        id="succeeded-without-evaluation",
    ),
    pytest.param(
        ftj("Failed", "training failed 3 times; last attempt: OOMKilled: the trainer ran out of memory; raise "
            "spec.resources.memory or lower batchSize/maxSeqLength", "TrainingFailed", "False",
            progress=TRAINING_PROGRESS, restarts=2, completionTime="2025-01-01T13:00:00Z"),
        "Degraded", ["OOMKilled", "spec.resources.memory"], [],
        id="failed-out-of-memory",
    ),
    pytest.param(
        ftj("Failed", "data preparation failed: PiiFound (exit code 3): 12 records contain EMAIL; set "
            "dataset.piiPolicy to redact", "DataPreparationFailed", "False"),
        "Degraded", ["data preparation failed", "piiPolicy"], [],
        id="failed-data-preparation",
    ),
    pytest.param(
        ftj("Failed", "the spec is invalid, no work starts until it is fixed: spec.baseModel.uri: scheme ftp:// "
            "is not supported here", "InvalidSpec", "False",
            conditions=[cond("Accepted", "False", "InvalidSpec", "the spec is invalid"),
                        cond("Succeeded", "False", "InvalidSpec", "the spec is invalid")]),
        "Degraded", ["the spec is invalid", "spec.baseModel.uri"], [],
        id="failed-invalid-spec",
    ),
    pytest.param(
        ftj("Suspended", "suspended by spec.suspend; set it to false to resume from the latest checkpoint",
            "Suspended", progress=TRAINING_PROGRESS),
        "Suspended", ["spec.suspend"], [],
        id="suspended",
    ),
    pytest.param(
        ftj(None, "", "Pending"),
        "Progressing", ["waiting for the operator to report a phase"], [],
        id="observed-without-a-phase",
    ),
    pytest.param(
        ftj("Exploding", "a phase from a newer operator", "Exploding"),
        "Unknown", ["unknown phase Exploding"], [],
        id="unknown-phase",
    ),
]


def mv(phase: str | None, message: str, ready: dict[str, Any], **fields: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": GENERATION, "conditions": [ready], "message": message}
    if phase is not None:
        status["phase"] = phase
    status.update(fields)
    return status


GATES = [
    {"name": "taskAccuracy", "metric": "taskAccuracy", "comparator": "GreaterThan", "threshold": 0.85,
     "baseline": "Absolute", "value": 0.71, "passed": False, "blocking": True,
     "message": "failed: taskAccuracy > 0.85: measured 0.71"},
    {"name": "safety", "metric": "safetyPassRate", "comparator": "GreaterThan", "threshold": 0.95,
     "baseline": "Absolute", "value": 0.99, "passed": True, "blocking": True,
     "message": "passed: safetyPassRate > 0.95: measured 0.99"},
]
WARNED = "all 4 blocking gates passed; warnings: latency (failed (warning only): latencyP95Ms / base < 2: 410 / 180 = 2.28)"
INVALID_MV = "the spec is invalid and this version cannot be used: spec.artifact.digest: must match ^sha256:[0-9a-f]{64}$"

MV_ROWS = [
    pytest.param(
        mv("Candidate", "registered as a Candidate; not judged by the quality gates yet",
           cond("Ready", "Unknown", "AwaitingEvaluation", "registered as a Candidate; not judged by the quality gates yet")),
        "Progressing", ["Candidate", "not judged by the quality gates yet"], [],
        id="candidate-awaiting-evaluation",
    ),
    pytest.param(
        mv("Approved", APPROVED_VERDICT, cond("Ready", "True", "Approved", "Approved: every blocking quality gate passed"),
           evaluationTime="2025-01-01T12:30:00Z", comparison={"taskAccuracy": {"before": 0.62, "after": 0.91}}),
        "Healthy", ["Approved", APPROVED_VERDICT], [],
        id="approved",
    ),
    pytest.param(
        mv("Approved", WARNED, cond("Ready", "True", "Approved", "Approved: every blocking quality gate passed")),
        "Healthy", ["warnings: latency"], [],
        id="approved-with-a-warning-gate",
    ),
    pytest.param(
        mv("Production", APPROVED_VERDICT, cond("Ready", "True", "Production", "Production: every blocking quality gate passed")),
        "Healthy", ["Production"], [],
        id="production",
    ),
    pytest.param(
        mv("Production", "registered as a Candidate; not judged by the quality gates yet",
           cond("Ready", "Unknown", "AwaitingEvaluation", "registered as a Candidate; not judged by the quality gates yet")),
        "Healthy", ["Production"], [],
        id="production-pinned-without-evaluation",
    ),
    pytest.param(
        mv("Deprecated", APPROVED_VERDICT, cond("Ready", "True", "Deprecated", "Deprecated: every blocking quality gate passed")),
        "Healthy", ["deprecated"], [],
        id="deprecated",
    ),
    pytest.param(
        mv("Rejected", REJECTED_VERDICT, cond("Ready", "False", "GatesFailed", REJECTED_VERDICT), gates=GATES),
        "Degraded", ["taskAccuracy", "measured 0.71"], ["safety"],
        id="rejected-names-the-failing-gates",
    ),
    pytest.param(
        mv(None, INVALID_MV, cond("Ready", "False", "InvalidSpec", INVALID_MV)),
        "Degraded", ["cannot be used", "spec.artifact.digest"], [],
        id="invalid-spec-before-any-phase",
    ),
    pytest.param(
        mv("Approved", INVALID_MV, cond("Ready", "False", "InvalidSpec", INVALID_MV)),
        "Degraded", ["cannot be used"], [],
        id="invalid-spec-keeps-an-old-phase",
    ),
    pytest.param(
        mv(None, "", cond("Ready", "Unknown", "AwaitingEvaluation", "")),
        "Progressing", ["waiting for the operator to report a phase"], [],
        id="observed-without-a-phase",
    ),
]


def ro(phase: str | None, message: str, *, ready: str, reason: str, **fields: Any) -> dict[str, Any]:
    progressing = "True" if phase in ("Progressing", "Paused") else "False"
    status: dict[str, Any] = {
        "observedGeneration": GENERATION,
        "canaryWeight": 0,
        "stableVersion": "v3",
        "conditions": [cond("Ready", ready, reason, message), cond("Progressing", progressing, reason, message)],
        "message": message,
    }
    if phase is not None:
        status["phase"] = phase
    status.update(fields)
    return status


def canary(step: int, weight: int, **fields: Any) -> dict[str, Any]:
    return {"candidateVersion": "v4", "currentStepIndex": step, "canaryWeight": weight,
            "stepStartTime": "2025-01-01T12:10:00Z", **fields}


HISTORY = [{"action": "promote", "from": "v2", "to": "v3", "reason": "all canary steps passed",
            "time": "2025-01-01T10:00:00Z"}]
ANALYSIS = {"stepIndex": 3, "phase": "Running", "startTime": "2025-01-01T12:10:00Z",
            "message": "error-rate: 2/5 measurements successful",
            "metrics": [{"name": "error-rate", "phase": "Running", "successful": 2,
                         "measurements": [{"value": 0.01, "phase": "Successful", "time": "2025-01-01T12:10:00Z"}]}]}
FAILED = "rolled back v4 to v3: metric error-rate failed: 0.2 > max 0.05"
NO_STEPS = {k: v for k, v in RO_SPEC.items() if k != "strategy"}


def with_pause(pause: dict[str, Any]) -> dict[str, Any]:
    """The default steps with a pause after 50% (step 6 of 8)."""
    steps = [*DEFAULT_CANARY_STEPS[:5], {"pause": pause}, *DEFAULT_CANARY_STEPS[5:]]
    return {**RO_SPEC, "strategy": {"canary": {"steps": steps}}}

RO_ROWS = [
    pytest.param(
        ro("Healthy", "v3 serves 100% of traffic", ready="True", reason="Healthy", history=HISTORY),
        None, "Healthy", ["v3 serves 100% of traffic"], ["canary"],
        id="healthy",
    ),
    pytest.param(
        ro("RolledBack", "rolled back from v4 to v3 (by carol: regression)", ready="True", reason="RolledBack",
           history=[*HISTORY, {"action": "rollback", "from": "v4", "to": "v3", "reason": "rollback by carol: regression"}]),
        None, "Healthy", ["rolled back from v4 to v3"], [],
        id="rolled-back-on-request",
    ),
    pytest.param(
        ro("Progressing", "waiting for v1 to be ready", ready="False", reason="Progressing", stableVersion="v1"),
        None, "Progressing", ["waiting for v1 to be ready"], ["canary"],
        id="first-version-starting",
    ),
    pytest.param(
        ro("Progressing", "waiting for an Approved ModelVersion of model support-summarizer", ready="False",
           reason="WaitingForVersion", stableVersion=None),
        None, "Progressing", ["waiting for an Approved ModelVersion"], [],
        id="waiting-for-an-approved-version",
    ),
    pytest.param(
        ro("Progressing", "step 1/7: waiting for v4 to be ready", ready="False", reason="Progressing",
           **canary(0, 10)),
        None, "Progressing", ["canary v4 at 10% (step 1/7)", "waiting for v4 to be ready"], [],
        id="canary-waiting-for-its-pods",
    ),
    pytest.param(
        ro("Progressing", "step 4/7: analysing v4 at 25%: error-rate: 2/5 measurements successful", ready="False",
           reason="Progressing", analysis=ANALYSIS, **canary(3, 25)),
        None, "Progressing", ["canary v4 at 25% (step 4/7)", "2/5 measurements"], [],
        id="canary-analysing",
    ),
    pytest.param(
        ro("Progressing", "step 4/7: analysing v4 at 25%: error-rate: 2/5 measurements successful", ready="False",
           reason="Progressing", **canary(3, 25)),
        NO_STEPS, "Progressing", ["canary v4 at 25% (step 4): "], ["(step 4/"],
        id="canary-without-steps-in-the-spec",
    ),
    pytest.param(
        ro("Paused", "paused at step 6/8 until promoted (kubectl finetune promote support-summarizer)", ready="False",
           reason="Paused", **canary(5, 50)),
        with_pause({}),
        "Suspended", ["canary v4 at 50% (step 6/8)", "until promoted"], [],
        id="paused-until-promoted",
    ),
    pytest.param(
        ro("Paused", "paused at step 6/8 until 2025-01-01T12:40:00+00:00", ready="False", reason="Paused",
           **canary(5, 50)),
        with_pause({"duration": "30m"}), "Suspended", ["canary v4 at 50% (step 6/8)", "until 2025-01-01T12:40:00"], [],
        id="paused-for-a-duration",
    ),
    pytest.param(
        ro("Paused", "analysis inconclusive, paused for a decision (promote or abort): metric error-rate "
           "inconclusive: no data", ready="False", reason="Paused", **canary(3, 25)),
        None, "Suspended", ["inconclusive", "promote or abort"], [],
        id="paused-analysis-inconclusive",
    ),
    pytest.param(
        ro("Degraded", FAILED, ready="False", reason="AnalysisFailed",
           history=[*HISTORY, {"action": "rollback", "from": "v4", "to": "v3", "reason": "analysis failed: " + FAILED}]),
        None, "Degraded", ["rolled back v4 to v3", "metric error-rate failed"], [],
        id="degraded-analysis-failed",
    ),
    pytest.param(
        ro("Degraded", "aborted v4; all traffic on v3 (aborted by alice: bad answers)", ready="False", reason="Aborted"),
        None, "Degraded", ["aborted v4", "bad answers"], [],
        id="degraded-aborted",
    ),
    pytest.param(
        ro("Degraded", "ModelVersion v5 of model support-summarizer is Rejected; only Approved, Production or "
           "Deprecated versions are served; v3 keeps serving", ready="False", reason="VersionUnusable"),
        None, "Degraded", ["v5", "is Rejected", "v3 keeps serving"], [],
        id="degraded-pinned-version-unusable",
    ),
    pytest.param(
        ro("Degraded", "the spec is invalid; nothing changes until it is fixed: spec.strategy.canary.steps[1].analysis"
           ".templates: unknown metric latency", ready="False", reason="InvalidSpec"),
        None, "Degraded", ["the spec is invalid"], [],
        id="degraded-invalid-spec",
    ),
    pytest.param(
        ro("Exploding", "a phase from a newer operator", ready="Unknown", reason="Exploding"),
        None, "Unknown", ["unknown phase Exploding"], [],
        id="unknown-phase",
    ),
]


@pytest.mark.parametrize(("status", "expected", "contains", "absent"), FTJ_ROWS)
def test_finetunejob(status, expected, contains, absent):
    assert_health("FineTuneJob", obj("FineTuneJob", status), expected, contains, absent)


@pytest.mark.parametrize(("status", "expected", "contains", "absent"), MV_ROWS)
def test_modelversion(status, expected, contains, absent):
    assert_health("ModelVersion", obj("ModelVersion", status), expected, contains, absent)


@pytest.mark.parametrize(("status", "spec", "expected", "contains", "absent"), RO_ROWS)
def test_rollout(status, spec, expected, contains, absent):
    assert_health("Rollout", obj("Rollout", status, spec=spec), expected, contains, absent)


def assert_health(kind, live, expected, contains, absent):
    status, message = run_health(kind, live)
    assert status == expected, message
    for part in contains:
        assert part in message
    for part in absent:
        assert part not in message


# --- a status older than the spec never reports health ------------------------------------------

def row_status(rows, id: str) -> dict[str, Any]:
    return next(row.values[0] for row in rows if row.id == id)


FINAL_STATUS = {
    "FineTuneJob": row_status(FTJ_ROWS, "succeeded-version-approved"),
    "ModelVersion": row_status(MV_ROWS, "rejected-names-the-failing-gates"),
    "Rollout": row_status(RO_ROWS, "degraded-analysis-failed"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("situation", "generation"),
    [
        pytest.param("no-status-yet", 1, id="no-status-yet"),
        pytest.param("empty-status", 1, id="empty-status"),
        pytest.param("without-observed-generation", 1, id="without-observed-generation"),
        pytest.param("spec-edited-since", GENERATION + 1, id="spec-edited-since-the-last-status"),
    ],
)
def test_stale_status_is_progressing(kind, situation, generation):
    status = copy.deepcopy(FINAL_STATUS[kind])
    if situation == "no-status-yet":
        status = None
    elif situation == "empty-status":
        status = {}
    elif situation == "without-observed-generation":
        del status["observedGeneration"]
    health, message = run_health(kind, obj(kind, status, generation=generation))
    assert health == "Progressing"
    assert f"waiting for the operator to observe generation {generation}" == message


@pytest.mark.parametrize("kind", KINDS)
def test_current_status_reports_health(kind):
    """The same final status, once observed, is no longer Progressing: the check above is the gate."""
    health, _ = run_health(kind, obj(kind, copy.deepcopy(FINAL_STATUS[kind])))
    assert health != "Progressing"


# --- the rows use real status fields ------------------------------------------------------------


def unknown_keys(raw: Any, dumped: Any, path: str = "status") -> list[str]:
    """Key paths in `raw` that the status model dropped (a misspelled or invented field)."""
    if isinstance(raw, dict):
        if not isinstance(dumped, dict):
            return [path]
        return [
            bad
            for key, value in raw.items()
            for bad in ([f"{path}.{key}"] if key not in dumped else unknown_keys(value, dumped[key], f"{path}.{key}"))
        ]
    if isinstance(raw, list):
        return [bad for i, item in enumerate(raw) for bad in unknown_keys(item, dumped[i], f"{path}[{i}]")]
    return []


@pytest.mark.parametrize(
    ("model", "rows"),
    [
        pytest.param(FineTuneJobStatus, FTJ_ROWS, id="FineTuneJob"),
        pytest.param(ModelVersionStatus, MV_ROWS, id="ModelVersion"),
        pytest.param(RolloutStatus, RO_ROWS, id="Rollout"),
    ],
)
def test_rows_are_real_status_fields(model, rows):
    for row in rows:
        raw = row.values[0]
        if raw.get("phase") == "Exploding":
            raw = {k: v for k, v in raw.items() if k != "phase"}
        dumped = model.model_validate(raw).model_dump(mode="json", by_alias=True)
        assert unknown_keys(raw, dumped) == [], row.id


# --- statuses made by the operator's own logic ---------------------------------------------------

NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
EVALUATION = {
    "metrics": {"taskAccuracy": 0.91, "safetyPassRate": 0.99},
    "baseMetrics": {"taskAccuracy": 0.62, "safetyPassRate": 0.99},
    "gates": [
        {"name": "taskAccuracy", "metric": "taskAccuracy", "comparator": "GreaterThan", "threshold": 0.85},
        {"name": "safety", "metric": "safetyPassRate", "comparator": "GreaterThan", "threshold": 0.95},
    ],
}


def dump(status) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.mark.parametrize(
    ("spec", "expected", "contains"),
    [
        pytest.param(MV_SPEC, "Progressing", "Candidate", id="registered-without-evaluation"),
        pytest.param({**MV_SPEC, "evaluation": EVALUATION}, "Healthy", "Approved", id="gates-pass"),
        pytest.param(
            {**MV_SPEC, "evaluation": {**EVALUATION, "metrics": {"taskAccuracy": 0.71, "safetyPassRate": 0.99}}},
            "Degraded", "rejected by taskAccuracy", id="gates-fail",
        ),
        pytest.param({**MV_SPEC, "artifact": {"uri": "s3://models/x"}}, "Degraded", "cannot be used", id="invalid-spec"),
    ],
)
def test_operator_made_modelversion(spec, expected, contains):
    status = mv_logic.decide(mv_logic.parse_spec(spec), ModelVersionStatus(), NOW, generation=GENERATION).status
    health, message = run_health("ModelVersion", obj("ModelVersion", dump(status), spec=spec))
    assert health == expected, message
    assert contains in message


def test_operator_made_finetunejob_invalid_spec():
    spec = {**FTJ_SPEC, "baseModel": {"uri": "ftp://models/x"}}
    decision = ftj_logic.decide(ftj_logic.parse_spec(spec), FineTuneJobStatus(), ftj_logic.Children(), NOW,
                                generation=GENERATION)
    health, message = run_health("FineTuneJob", obj("FineTuneJob", dump(decision.status), spec=spec))
    assert (health, "spec.baseModel.uri" in message) == ("Degraded", True), message


def rollout_story(step: str) -> rf.Cluster:
    """A Rollout driven by the real decide: v1 stable, then a canary of v2 with analysis."""
    cluster = rf.Cluster(rf.spec(analysis=rf.ONE_METRIC), versions=[rf.version(1)], ready={"v1"})
    cluster.reconcile(0)
    if step == "stable":
        return cluster
    cluster.approve(2, ready=True)
    cluster.reconcile(5, rf.GOOD)
    if step == "analysing":
        return cluster
    cluster.reconcile(20, rf.BAD)
    return cluster


@pytest.mark.parametrize(
    ("step", "expected", "contains"),
    [
        pytest.param("stable", "Healthy", "v1 serves 100% of traffic", id="first-version-stable"),
        pytest.param("analysing", "Progressing", "canary v2 at 10% (step 2/7)", id="canary-analysing"),
        pytest.param("failed", "Degraded", "rolled back v2 to v1", id="analysis-failed"),
    ],
)
def test_operator_made_rollout(step, expected, contains):
    cluster = rollout_story(step)
    live = obj("Rollout", dump(cluster.status), generation=cluster.generation, spec=RO_SPEC)
    health, message = run_health("Rollout", live)
    assert health == expected, message
    assert contains in message


# --- the scripts run where Argo CD runs them, and the ConfigMap patch embeds them -----------------


def test_sandbox_is_as_narrow_as_argocd():
    lua = lua_runtime.LuaRuntime()
    lua.execute(SANDBOX)
    assert lua.execute('return string == nil and math == nil and pcall(function() return ("x"):len() end)') is False
    assert lua.execute("return ipairs ~= nil and tostring ~= nil and table ~= nil") is True


def test_lua_is_5_1():
    if lua_runtime is lupa:
        pytest.skip("lupa without a bundled Lua 5.1")
    assert lua_runtime.LuaRuntime().execute("return _VERSION") == "Lua 5.1"


def test_cm_patch_is_rendered_from_the_lua_files():
    text = (ARGOCD / "argocd-cm-patch.yaml").read_text(encoding="utf-8")
    assert text == render.render(), "argocd-cm-patch.yaml is stale: run python config/argocd/render.py"
    assert render.main(["--check"]) == 0


def test_cm_patch_embeds_each_script_verbatim():
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text(encoding="utf-8"))
    assert (patch["kind"], patch["metadata"]["name"], patch["metadata"]["namespace"]) == ("ConfigMap", "argocd-cm", "argocd")
    health = {key: value for key, value in patch["data"].items() if key.startswith("resource.customizations.health.")}
    assert health == {f"resource.customizations.health.finetune.ai_{kind}": script(kind) for kind in KINDS}
