"""The API models: defaults from the design, bad specs rejected, camelCase round trips.

The pydantic validators mirror the CEL rules of the CRDs, so the same tables also say what the
API server rejects; tests/integration/test_crds.py checks the server side.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from finetune_operator.api import KINDS
from finetune_operator.api.common import Comparator, Condition, GateBaseline, get_condition, set_condition
from finetune_operator.api.finetunejob import (
    DEFAULT_GATES,
    MSG_BALANCE_CAP,
    MSG_DATASET_ONE_SOURCE,
    MSG_DPO_FORMAT,
    MSG_EARLY_STOPPING_VALIDATION,
    MSG_GATE_INCOMPLETE,
    MSG_PREFERENCE_NEEDS_DPO,
    MSG_QLORA_GPUS,
    MSG_SPLIT_SUM,
    EvaluationSpec,
    FineTuneJob,
    FineTuneJobSpec,
    FineTuneJobStatus,
)
from finetune_operator.api.modelversion import ModelVersion, ModelVersionSpec, ModelVersionStatus
from finetune_operator.api.rollout import (
    MSG_ONE_ROUTER,
    MSG_STEP_ONE_ACTION,
    MSG_THRESHOLDS,
    MSG_VERSION_XOR_TRACK,
    HistoryEntry,
    Rollout,
    RolloutSpec,
    RolloutStatus,
)
from finetune_operator.logic import finetunejob as finetunejob_logic
from finetune_operator.logic import rollout as rollout_logic
from finetune_operator.logic.spec import InvalidSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "integration" / "invalid").glob("*.yaml"))
KIND_MODELS = {kind.KIND_INFO.kind: kind for kind in KINDS}
T0 = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)

FTJ_SPEC: dict[str, Any] = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "dataset": {"uri": "s3://datasets/tickets.jsonl"},
}
MV_SPEC: dict[str, Any] = {
    "modelName": "support-summarizer",
    "version": "v1",
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "artifact": {"uri": "pvc://models/support-summarizer/v1", "digest": "sha256:" + "a" * 64},
}
RO_SPEC: dict[str, Any] = {"modelName": "support-summarizer", "version": "v1"}


def merged(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `base` with top-level keys replaced (None removes the key)."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def attr(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = obj[int(name)] if name.isdigit() else getattr(obj, name)
    return obj


# --- defaults -------------------------------------------------------------------------------

FTJ_DEFAULTS = [
    ("method", "sft"),
    ("adaptation.type", "lora"),
    ("adaptation.rank", 16),
    ("adaptation.alpha", 32),
    ("adaptation.dropout", 0.05),
    ("hyperparameters.learning_rate", 2e-5),
    ("hyperparameters.epochs", 3),
    ("hyperparameters.warmup_ratio", 0.1),
    ("dataset.split.train", 0.7),
    ("dataset.split.validation", 0.2),
    ("dataset.split.test", 0.1),
    ("dataset.format", "auto"),
    ("dataset.pii_policy", "block"),
    ("dataset.dedup.exact", True),
    ("early_stopping.enabled", True),
    ("dpo.beta", 0.1),
    ("resources.gpus_per_node", 1),
    ("resources.nodes", 1),
    ("checkpointing.enabled", True),
    ("evaluation.enabled", True),
    ("suspend", False),
    ("delete_artifacts_on_delete", False),
]


@pytest.mark.parametrize(("path", "expected"), FTJ_DEFAULTS, ids=[p for p, _ in FTJ_DEFAULTS])
def test_finetunejob_defaults(path, expected):
    assert attr(FineTuneJobSpec.model_validate(FTJ_SPEC), path) == expected


@pytest.mark.parametrize(
    ("gate", "metric", "comparator", "threshold", "baseline", "blocking"),
    [
        ("taskAccuracy", "taskAccuracy", Comparator.GREATER_THAN, 0.85, GateBaseline.ABSOLUTE, True),
        ("formatCompliance", "formatCompliance", Comparator.GREATER_THAN, 0.95, GateBaseline.ABSOLUTE, True),
        ("safety", "safetyPassRate", Comparator.GREATER_THAN, 0.95, GateBaseline.ABSOLUTE, True),
        (
            "noRegression",
            "generalScore",
            Comparator.GREATER_THAN_OR_EQUAL,
            0.95,
            GateBaseline.RATIO_TO_BASE,
            True,
        ),
        ("latency", "latencySeconds", Comparator.LESS_THAN, 2.0, GateBaseline.RATIO_TO_BASE, False),
        ("toxicity", "toxicAnswerRate", Comparator.LESS_THAN_OR_EQUAL, 0.05, GateBaseline.ABSOLUTE, True),
        ("piiLeakage", "piiLeakageRate", Comparator.LESS_THAN_OR_EQUAL, 0.0, GateBaseline.ABSOLUTE, True),
        ("bias", "biasConsistency", Comparator.GREATER_THAN_OR_EQUAL, 0.95, GateBaseline.ABSOLUTE, True),
    ],
)
def test_default_gates_are_the_seed_table(gate, metric, comparator, threshold, baseline, blocking):
    resolved = {g.name: g for g in EvaluationSpec().effective_gates()}[gate]
    assert (
        resolved.metric,
        resolved.comparator,
        resolved.threshold,
        resolved.baseline,
        resolved.blocking,
    ) == (
        metric,
        comparator,
        threshold,
        baseline,
        blocking,
    )


@pytest.mark.parametrize(
    ("gates", "expected"),
    [
        pytest.param([], {name: g.threshold for name, g in DEFAULT_GATES.items()}, id="no-overrides"),
        pytest.param(
            [{"name": "taskAccuracy", "threshold": 0.4}],
            {**{name: g.threshold for name, g in DEFAULT_GATES.items()}, "taskAccuracy": 0.4},
            id="threshold-override-keeps-the-rest",
        ),
        pytest.param(
            [{"name": "formatCompliance", "enabled": False}],
            {name: g.threshold for name, g in DEFAULT_GATES.items() if name != "formatCompliance"},
            id="disabled-default-dropped",
        ),
        pytest.param(
            [{"name": "rougeFloor", "metric": "rougeL", "comparator": "GreaterThan", "threshold": 0.3}],
            {**{name: g.threshold for name, g in DEFAULT_GATES.items()}, "rougeFloor": 0.3},
            id="custom-gate-appended",
        ),
        pytest.param(
            [{"name": "toxicity", "threshold": 0.2}, {"name": "piiLeakage", "threshold": 0.01}, {"name": "bias", "threshold": 0.9}],
            {**{name: g.threshold for name, g in DEFAULT_GATES.items()}, "toxicity": 0.2, "piiLeakage": 0.01, "bias": 0.9},
            id="safety-checklist-thresholds-overridden",
        ),
        pytest.param(
            [{"name": "piiLeakage", "enabled": False}, {"name": "bias", "enabled": False}],
            {name: g.threshold for name, g in DEFAULT_GATES.items() if name not in ("piiLeakage", "bias")},
            id="safety-checklist-gates-disabled",
        ),
    ],
)
def test_effective_gates(gates, expected):
    resolved = EvaluationSpec.model_validate({"gates": gates}).effective_gates()
    assert {g.name: g.threshold for g in resolved} == expected
    assert [g.name for g in resolved][: len(expected)] == list(expected)


def test_gate_override_keeps_other_fields_of_the_default():
    (latency,) = [
        g
        for g in EvaluationSpec.model_validate(
            {"gates": [{"name": "latency", "threshold": 3}]}
        ).effective_gates()
        if g.name == "latency"
    ]
    assert (latency.threshold, latency.blocking, latency.baseline) == (3.0, False, GateBaseline.RATIO_TO_BASE)


def test_rollout_defaults():
    spec = RolloutSpec.model_validate(RO_SPEC)
    weights = [step.set_weight for step in spec.strategy.canary.steps if step.set_weight is not None]
    assert weights == [10, 25, 50, 100]
    assert spec.traffic_router.gateway_api is not None
    assert spec.serving.type == "vllm"
    assert spec.scale_down_delay_seconds == 30


def test_modelversion_defaults():
    spec = ModelVersionSpec.model_validate(MV_SPEC)
    assert spec.artifact.type == "adapter"
    assert ModelVersionStatus().phase is None


# --- validation errors ----------------------------------------------------------------------

INVALID_SPECS = [
    # FineTuneJob
    ("ftj-no-base-model", FineTuneJobSpec, merged(FTJ_SPEC, baseModel=None), "baseModel"),
    ("ftj-no-dataset", FineTuneJobSpec, merged(FTJ_SPEC, dataset=None), "dataset"),
    (
        "ftj-base-model-http",
        FineTuneJobSpec,
        merged(FTJ_SPEC, baseModel={"uri": "http://x/y"}),
        "baseModel.uri",
    ),
    ("ftj-unknown-method", FineTuneJobSpec, merged(FTJ_SPEC, method="ppo"), "method"),
    (
        "ftj-negative-gpus",
        FineTuneJobSpec,
        merged(FTJ_SPEC, resources={"gpusPerNode": -1}),
        "resources.gpusPerNode",
    ),
    (
        "ftj-gpus-as-word",
        FineTuneJobSpec,
        merged(FTJ_SPEC, resources={"gpusPerNode": "two"}),
        "resources.gpusPerNode",
    ),
    ("ftj-zero-nodes", FineTuneJobSpec, merged(FTJ_SPEC, resources={"nodes": 0}), "resources.nodes"),
    ("ftj-bad-cpu-quantity", FineTuneJobSpec, merged(FTJ_SPEC, resources={"cpu": "lots"}), "resources.cpu"),
    ("ftj-lora-rank-zero", FineTuneJobSpec, merged(FTJ_SPEC, adaptation={"rank": 0}), "adaptation.rank"),
    (
        "ftj-unknown-adaptation",
        FineTuneJobSpec,
        merged(FTJ_SPEC, adaptation={"type": "prefix"}),
        "adaptation.type",
    ),
    (
        "ftj-negative-epochs",
        FineTuneJobSpec,
        merged(FTJ_SPEC, hyperparameters={"epochs": -1}),
        "hyperparameters.epochs",
    ),
    (
        "ftj-lr-zero",
        FineTuneJobSpec,
        merged(FTJ_SPEC, hyperparameters={"learningRate": 0}),
        "hyperparameters.learningRate",
    ),
    (
        "ftj-misspelt-field",
        FineTuneJobSpec,
        merged(FTJ_SPEC, hyperparameters={"learningrate": 1e-4}),
        "learningrate",
    ),
    (
        "ftj-split-sum",
        FineTuneJobSpec,
        merged(
            FTJ_SPEC, dataset={"uri": "s3://b/k", "split": {"train": 0.8, "validation": 0.3, "test": 0.1}}
        ),
        MSG_SPLIT_SUM,
    ),
    (
        "ftj-two-sources",
        FineTuneJobSpec,
        merged(FTJ_SPEC, dataset={"uri": "s3://b/k", "inline": [{"a": 1}]}),
        MSG_DATASET_ONE_SOURCE,
    ),
    ("ftj-no-source", FineTuneJobSpec, merged(FTJ_SPEC, dataset={"format": "chat"}), MSG_DATASET_ONE_SOURCE),
    (
        "ftj-qlora-on-cpu",
        FineTuneJobSpec,
        merged(FTJ_SPEC, adaptation={"type": "qlora"}, resources={"gpusPerNode": 0}),
        MSG_QLORA_GPUS,
    ),
    (
        "ftj-dpo-on-chat",
        FineTuneJobSpec,
        merged(FTJ_SPEC, method="dpo", dataset={"uri": "s3://b/k", "format": "chat"}),
        MSG_DPO_FORMAT,
    ),
    (
        "ftj-preference-with-sft",
        FineTuneJobSpec,
        merged(FTJ_SPEC, dataset={"uri": "s3://b/k", "format": "preference"}),
        MSG_PREFERENCE_NEEDS_DPO,
    ),
    (
        "ftj-early-stopping-without-validation",
        FineTuneJobSpec,
        merged(
            FTJ_SPEC, dataset={"uri": "s3://b/k", "split": {"train": 0.9, "validation": 0.0, "test": 0.1}}
        ),
        MSG_EARLY_STOPPING_VALIDATION,
    ),
    (
        "ftj-balance-cap-missing",
        FineTuneJobSpec,
        merged(FTJ_SPEC, dataset={"uri": "s3://b/k", "balanceBy": "label", "balanceMode": "cap"}),
        MSG_BALANCE_CAP,
    ),
    (
        "ftj-incomplete-custom-gate",
        FineTuneJobSpec,
        merged(FTJ_SPEC, evaluation={"gates": [{"name": "rougeFloor"}]}),
        MSG_GATE_INCOMPLETE,
    ),
    # ModelVersion
    ("mv-no-artifact", ModelVersionSpec, merged(MV_SPEC, artifact=None), "artifact"),
    (
        "mv-md5-digest",
        ModelVersionSpec,
        merged(MV_SPEC, artifact={"uri": "pvc://m/v1", "digest": "md5:00"}),
        "artifact.digest",
    ),
    ("mv-bad-model-name", ModelVersionSpec, merged(MV_SPEC, modelName="Support_Summarizer"), "modelName"),
    # Rollout
    ("ro-pinned-and-track", RolloutSpec, merged(RO_SPEC, track="LatestApproved"), MSG_VERSION_XOR_TRACK),
    ("ro-neither-version-nor-track", RolloutSpec, merged(RO_SPEC, version=None), MSG_VERSION_XOR_TRACK),
    ("ro-unknown-track", RolloutSpec, merged(RO_SPEC, version=None, track="Latest"), "track"),
    (
        "ro-weight-150",
        RolloutSpec,
        merged(RO_SPEC, strategy={"canary": {"steps": [{"setWeight": 150}]}}),
        "setWeight",
    ),
    (
        "ro-step-two-actions",
        RolloutSpec,
        merged(RO_SPEC, strategy={"canary": {"steps": [{"setWeight": 10, "pause": {}}]}}),
        MSG_STEP_ONE_ACTION,
    ),
    (
        "ro-step-no-action",
        RolloutSpec,
        merged(RO_SPEC, strategy={"canary": {"steps": [{}]}}),
        MSG_STEP_ONE_ACTION,
    ),
    ("ro-no-steps", RolloutSpec, merged(RO_SPEC, strategy={"canary": {"steps": []}}), "steps"),
    (
        "ro-bad-pause-duration",
        RolloutSpec,
        merged(RO_SPEC, strategy={"canary": {"steps": [{"pause": {"duration": "5 minutes"}}]}}),
        "duration",
    ),
    (
        "ro-two-routers",
        RolloutSpec,
        merged(RO_SPEC, trafficRouter={"gatewayAPI": {}, "kserve": {"inferenceService": "web"}}),
        MSG_ONE_ROUTER,
    ),
    ("ro-no-router", RolloutSpec, merged(RO_SPEC, trafficRouter={}), MSG_ONE_ROUTER),
    (
        "ro-empty-thresholds",
        RolloutSpec,
        merged(
            RO_SPEC,
            analysis={
                "prometheus": {"address": "http://p:9090"},
                "metrics": [{"name": "e", "query": "q", "thresholds": {}}],
            },
        ),
        MSG_THRESHOLDS,
    ),
    (
        "ro-min-above-max",
        RolloutSpec,
        merged(
            RO_SPEC,
            analysis={
                "prometheus": {"address": "http://p:9090"},
                "metrics": [{"name": "e", "query": "q", "thresholds": {"min": 2, "max": 1}}],
            },
        ),
        MSG_THRESHOLDS,
    ),
    ("ro-zero-replicas", RolloutSpec, merged(RO_SPEC, serving={"replicas": 0}), "serving.replicas"),
    # Versions name objects: lowercase DNS labels, short enough to follow a model's name.
    ("mv-version-uppercase", ModelVersionSpec, merged(MV_SPEC, version="V1"), "version"),
    ("mv-version-underscore", ModelVersionSpec, merged(MV_SPEC, version="v1_rc"), "version"),
    ("mv-version-too-long", ModelVersionSpec, merged(MV_SPEC, version="v" * 33), "version"),
    ("ftj-version-with-dot", FineTuneJobSpec, merged(FTJ_SPEC, output={"version": "v1.0"}), "output.version"),
    # Artifact locations: normalised, never a claim's root, never climbing out.
    ("mv-artifact-claim-root", ModelVersionSpec, merged(MV_SPEC, artifact={**MV_SPEC["artifact"], "uri": "pvc://models"}),
     "root of a claim"),
    ("mv-artifact-claim-root-slash", ModelVersionSpec,
     merged(MV_SPEC, artifact={**MV_SPEC["artifact"], "uri": "pvc://models/"}), "root of a claim"),
    ("mv-artifact-claim-dot", ModelVersionSpec, merged(MV_SPEC, artifact={**MV_SPEC["artifact"], "uri": "pvc://models/."}),
     "'.'"),
    ("mv-artifact-dot-dot", ModelVersionSpec,
     merged(MV_SPEC, artifact={**MV_SPEC["artifact"], "uri": "/srv/models/../../etc"}), "'..'"),
    ("mv-artifact-file-host", ModelVersionSpec,
     merged(MV_SPEC, artifact={**MV_SPEC["artifact"], "uri": "file://etc/models"}), "file:///"),
    ("ftj-output-claim-dot", FineTuneJobSpec, merged(FTJ_SPEC, output={"uri": "pvc://store/."}), "output.uri"),
    ("ftj-output-claim-root", FineTuneJobSpec, merged(FTJ_SPEC, output={"uri": "pvc://store"}), "root of a claim"),
    ("ftj-output-query", FineTuneJobSpec, merged(FTJ_SPEC, output={"uri": "/srv/x?y"}), "'?' or '#'"),
    ("ftj-dataset-dot-dot", FineTuneJobSpec, merged(FTJ_SPEC, dataset={"uri": "pvc://data/a/../../b"}), "dataset.uri"),
    # Inline records are capped in bytes, pointing at dataset.uri.
    ("ftj-inline-too-big", FineTuneJobSpec,
     merged(FTJ_SPEC, dataset={"inline": [{"instruction": "x" * 2000, "output": "y"}] * 80}), "dataset.uri"),
    ("ro-unknown-serving-type", RolloutSpec, merged(RO_SPEC, serving={"type": "triton"}), "serving.type"),
]


@pytest.mark.parametrize(
    ("model", "data", "expected"), [case[1:] for case in INVALID_SPECS], ids=[c[0] for c in INVALID_SPECS]
)
def test_invalid_spec_is_rejected(model, data, expected):
    with pytest.raises(ValidationError) as excinfo:
        model.model_validate(data)
    # The message names the field: either in the error's location or in the rule's own text.
    assert expected in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        (
            "split-within-tolerance",
            merged(
                FTJ_SPEC, dataset={"uri": "s3://b/k", "split": {"train": 0.6, "validation": 0.3, "test": 0.1}}
            ),
        ),
        (
            "split-integer-fractions",
            merged(
                FTJ_SPEC,
                dataset={"uri": "s3://b/k", "split": {"train": 1, "validation": 0, "test": 0}},
                earlyStopping={"enabled": False},
            ),
        ),
        ("qlora-with-gpu", merged(FTJ_SPEC, adaptation={"type": "qlora"})),
        ("dpo-auto-format", merged(FTJ_SPEC, method="dpo")),
        ("inline-source", merged(FTJ_SPEC, dataset={"inline": [{"instruction": "a", "output": "b"}]})),
        ("quantities", merged(FTJ_SPEC, resources={"cpu": 4, "memory": "16Gi"})),
        (
            "override-default-gate-threshold-only",
            merged(FTJ_SPEC, evaluation={"gates": [{"name": "safety", "threshold": 0.99}]}),
        ),
    ],
)
def test_valid_edge_cases_are_accepted(name, spec):
    FineTuneJobSpec.model_validate(spec)


# --- round trips by alias --------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_round_trips_by_alias(path):
    document = yaml.safe_load(path.read_text())
    model = KIND_MODELS[document["kind"]]
    parsed = model.model_validate(document)
    dumped = parsed.model_dump(mode="json", exclude_none=True)
    assert model.model_validate(dumped) == parsed
    # Everything the manifest said survives, under the same camelCase names.
    assert _contains(dumped["spec"], document["spec"])


def _contains(dumped: Any, original: Any) -> bool:
    if isinstance(original, dict):
        return all(key in dumped and _contains(dumped[key], value) for key, value in original.items())
    if isinstance(original, list):
        return len(dumped) == len(original) and all(
            _contains(d, o) for d, o in zip(dumped, original, strict=True)
        )
    return dumped == original


def test_python_names_are_snake_case_and_wire_names_camel_case():
    spec = FineTuneJobSpec(
        base_model={"uri": "pvc://models/base"},
        dataset={"uri": "pvc://data/train.jsonl", "pii_policy": "redact"},
        resources={"gpus_per_node": 2},
    )
    dumped = spec.model_dump(mode="json")
    # Secret references (object-store credentials, a Hub token) are optional and unset here.
    assert {k: v for k, v in dumped["baseModel"].items() if not k.endswith("SecretRef")} == {
        "uri": "pvc://models/base", "ggufFile": None, "revision": None, "modelVersion": None, "adapterMode": "continue"}
    assert dumped["baseModel"]["credentialsSecretRef"] is None
    assert dumped["dataset"]["piiPolicy"] == "redact"
    assert dumped["resources"]["gpusPerNode"] == 2
    assert "base_model" not in dumped


def test_history_entry_uses_from_and_to_on_the_wire():
    entry = HistoryEntry(action="rollback", from_version="v2", to_version="v1", reason="error-rate", time=T0)
    dumped = entry.model_dump(mode="json", exclude_none=True)
    assert dumped == {
        "action": "rollback",
        "from": "v2",
        "to": "v1",
        "reason": "error-rate",
        "time": "2025-01-01T12:00:00Z",
    }
    assert HistoryEntry.model_validate(dumped) == entry


@pytest.mark.parametrize(
    ("model", "status"),
    [
        (
            FineTuneJobStatus,
            {
                "phase": "Training",
                "progress": {"step": 5, "totalSteps": 10, "percent": 50.0, "trainLoss": 1.2},
                "dataReport": {"totalRecords": 20, "piiFindings": {"EMAIL": 2}, "splits": {"train": 14}},
                "kopf": {"progress": {}},  # written by other tools: tolerated, not kept
            },
        ),
        (
            ModelVersionStatus,
            {
                "phase": "Rejected",
                "gates": [
                    {
                        "name": "taskAccuracy",
                        "metric": "taskAccuracy",
                        "comparator": "GreaterThan",
                        "threshold": 0.85,
                        "value": 0.5,
                        "passed": False,
                    }
                ],
                "comparison": {"taskAccuracy": {"before": 0.2, "after": 0.5}},
            },
        ),
        (
            RolloutStatus,
            {
                "phase": "Progressing",
                "canaryWeight": 25,
                "stableVersion": "v1",
                "candidateVersion": "v2",
                "abortRequest": {"requestedAt": "2025-01-01T12:00:00Z", "reason": "pager"},
                "history": [{"action": "promote", "from": "v0", "to": "v1"}],
            },
        ),
    ],
    ids=["finetunejob", "modelversion", "rollout"],
)
def test_status_parses_and_ignores_unknown_fields(model, status):
    parsed = model.model_validate(status)
    dumped = parsed.model_dump(mode="json", exclude_none=True)
    assert "kopf" not in dumped
    assert model.model_validate(dumped) == parsed


def test_whole_objects_parse_from_kubernetes_bodies():
    body = {
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "tickets", "namespace": "ml", "generation": 3},
        "spec": FTJ_SPEC,
    }
    job = FineTuneJob.model_validate(body)
    assert (job.name, job.namespace, job.generation) == ("tickets", "ml", 3)
    assert job.status.phase is None
    assert Rollout.model_validate({"kind": "Rollout", "metadata": {}, "spec": RO_SPEC}).spec.version == "v1"
    assert ModelVersion.model_validate({"kind": "ModelVersion", "spec": MV_SPEC}).spec.version == "v1"


# --- conditions and comparators --------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing_status", "new_status", "expected_since"),
    [
        pytest.param(None, "True", T0 + datetime.timedelta(minutes=5), id="new-condition-starts-now"),
        pytest.param("True", "True", T0, id="same-status-keeps-time"),
        pytest.param("True", "False", T0 + datetime.timedelta(minutes=5), id="flip-resets-time"),
    ],
)
def test_set_condition(existing_status, new_status, expected_since):
    now = T0 + datetime.timedelta(minutes=5)
    existing = [Condition(type="Other", status="True", reason="R")]
    if existing_status:
        existing.append(
            Condition(type="Ready", status=existing_status, reason="Old", last_transition_time=T0)
        )
    result = set_condition(
        existing, Condition(type="Ready", status=new_status, reason="New", message="m"), now
    )
    ready = get_condition(result, "Ready")
    assert ready is not None and ready.last_transition_time == expected_since and ready.reason == "New"
    assert [c.type for c in result] == ["Other", "Ready"]
    assert get_condition(existing, "Ready") is None or get_condition(existing, "Ready").reason == "Old"


@pytest.mark.parametrize("reason", ["not camel", "", "trailing:"])
def test_condition_reason_must_be_camel_case(reason):
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="True", reason=reason)


@pytest.mark.parametrize(
    ("comparator", "value", "threshold", "holds"),
    [
        (Comparator.GREATER_THAN, 0.9, 0.85, True),
        (Comparator.GREATER_THAN, 0.85, 0.85, False),
        (Comparator.GREATER_THAN_OR_EQUAL, 0.95, 0.95, True),
        (Comparator.LESS_THAN, 2.0, 2.0, False),
        (Comparator.LESS_THAN_OR_EQUAL, 2.0, 2.0, True),
    ],
)
def test_comparator(comparator, value, threshold, holds):
    assert comparator.holds(value, threshold) is holds


# --- the manifests shipped in the repository --------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_valid(path):
    document = yaml.safe_load(path.read_text())
    KIND_MODELS[document["kind"]].model_validate(document)


def test_examples_cover_the_documented_cases():
    specs = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    jobs = [d["spec"] for d in specs if d["kind"] == "FineTuneJob"]
    adaptations = {job.get("adaptation", {}).get("type", "lora") for job in jobs}
    assert adaptations == {"lora", "qlora", "full"}
    assert any(job.get("method") == "dpo" for job in jobs)
    assert any(job.get("resources", {}).get("nodes", 1) > 1 for job in jobs)
    assert any("net_income" in yaml.safe_dump(job) for job in jobs)
    assert any("support ticket" in yaml.safe_dump(job) for job in jobs)
    rollouts = [d["spec"] for d in specs if d["kind"] == "Rollout"]
    assert any("version" in r for r in rollouts)
    assert any(
        r.get("track") == "LatestApproved" and "gatewayAPI" in r.get("trafficRouter", {}) for r in rollouts
    )
    assert any(d["kind"] == "ModelVersion" for d in specs)


def test_invalid_corpus_is_large_enough_and_annotated():
    assert len(INVALID) >= 25
    for path in INVALID:
        expects = [line for line in path.read_text().splitlines() if line.startswith("# expect: ")]
        assert len(expects) == 1, f"{path.name}: needs exactly one '# expect: <message substring>' line"


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_manifest_is_rejected_by_the_models_too(path):
    """Every manifest the API server rejects, the operator's models reject as well (or, for a rule
    that names the offending step, its spec parsing: an InvalidSpec)."""
    document = yaml.safe_load(path.read_text())
    try:
        KIND_MODELS[document["kind"]].model_validate(document)
    except ValidationError:
        return
    parse_spec = {"Rollout": rollout_logic.parse_spec, "FineTuneJob": finetunejob_logic.parse_spec}.get(document["kind"])
    assert parse_spec is not None and isinstance(parse_spec(document["spec"]), InvalidSpec), (
        f"{path.name} passes the models and the operator's spec parsing"
    )


@pytest.mark.parametrize(
    ("name", "output", "expected"),
    [
        pytest.param("a" * 53, {"modelName": "m"}, None, id="longest-name-with-a-model-name"),
        pytest.param("a" * 54, {"modelName": "m"}, "at most 53", id="name-longer-than-its-children-allow"),
        pytest.param("1job", {}, "start with a lowercase letter", id="name-not-a-service-name"),
        pytest.param("a" * 45, {}, None, id="longest-name-as-model-name"),
        pytest.param("a" * 46, {}, "ModelVersion name", id="derived-version-name-too-long"),
        pytest.param("job", {"modelName": "m" * 40, "version": "v" * 12}, "ModelVersion name", id="model-and-version-too-long"),
    ],
)
def test_finetunejob_names_fit_every_child(name, output, expected):
    body = {"metadata": {"name": name}, "spec": merged(FTJ_SPEC, output=output)}
    if expected is None:
        FineTuneJob.model_validate(body)
        return
    with pytest.raises(ValidationError) as excinfo:
        FineTuneJob.model_validate(body)
    assert expected in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("m" * 52, None, id="longest"),
        pytest.param("m" * 53, "at most 52", id="model-card-would-not-fit"),
        pytest.param("model.v1", "DNS label", id="dots"),
    ],
)
def test_modelversion_name_fits_its_children(name, expected):
    body = {"metadata": {"name": name}, "spec": MV_SPEC}
    if expected is None:
        ModelVersion.model_validate(body)
        return
    with pytest.raises(ValidationError) as excinfo:
        ModelVersion.model_validate(body)
    assert expected in str(excinfo.value)


def test_inline_cap_is_measured_as_compact_json():
    from finetune_operator.api.finetunejob import INLINE_MAX_BYTES, inline_bytes

    records = [{"instruction": "x" * 100, "output": "y"}]
    assert inline_bytes(records) == len('[{"instruction":"' + "x" * 100 + '","output":"y"}]')
    fits = [{"t": "x" * (INLINE_MAX_BYTES - 12)}]
    assert inline_bytes(fits) <= INLINE_MAX_BYTES
    FineTuneJobSpec.model_validate(merged(FTJ_SPEC, dataset={"inline": fits}))
