"""baseModel.modelVersion from the operator's side: the parent version resolved to its adapter,
the refusals that name the field, the trainer config, and the lineage of the new version."""

from __future__ import annotations

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.builders.finetunejob import Owner, Settings
from finetune_operator.logic.finetunejob_spec import resolve_references
from finetune_operator.logic.spec import InvalidSpec
from finetune_trainer.config import parse_config

OWNER = Owner(name="tickets-v2", namespace="team", uid="uid-2")
BASE = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
V1 = {"metadata": {"name": "tickets-v1"}, "spec": {
    "baseModel": {"uri": BASE},
    "artifact": {"uri": "pvc://finetune-artifacts/tickets-v1-uid-1/adapter", "type": "adapter", "digest": "sha256:" + "a" * 64}}}


def job_spec(**start) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({"baseModel": {"uri": BASE, "modelVersion": "tickets-v1", **start},
                                           "dataset": {"uri": "pvc://datasets/new.jsonl"}})


def resolve(spec: FineTuneJobSpec, parent=V1):
    return resolve_references(spec, lambda name: parent if name == "tickets-v1" else None)


@pytest.mark.parametrize("mode", ["continue", "stack"])
def test_the_parents_adapter_reaches_the_trainer(mode):
    spec = resolve(job_spec(adapterMode=mode))
    assert isinstance(spec, FineTuneJobSpec)
    rendered = builders.trainer_config_dict(OWNER, spec, Settings())
    assert rendered["model"]["adapter"] == "pvc://finetune-artifacts/tickets-v1-uid-1/adapter"
    assert (rendered["model"]["adapter_mode"], rendered["model"]["adapter_of"]) == (mode, "tickets-v1")
    assert parse_config(rendered).model.adapter_mode == mode
    assert "finetune-artifacts" in builders.claims(OWNER, spec, Settings())


def test_the_new_version_points_at_its_parent():
    spec = resolve(job_spec())
    body = mv_builders.model_version_spec(
        job_name="tickets-v2", spec=spec, version="v2", artifact={"uri": "pvc://a/run/adapter", "digest": "sha256:" + "b" * 64},
        dataset_digest=None, data_summary=None, trainer_image="img", evaluation=None,
    )
    assert body["lineage"]["parentVersion"] == "tickets-v1"
    assert body["baseModel"] == {"uri": BASE}  # the ModelVersion's base model is the base, not the start


@pytest.mark.parametrize(
    ("spec", "parent", "message"),
    [
        pytest.param(job_spec(), None, "spec.baseModel.modelVersion: ModelVersion tickets-v1 does not exist", id="missing"),
        pytest.param(job_spec(), {"spec": {**V1["spec"], "artifact": {**V1["spec"]["artifact"], "type": "full"}}},
                     "holds full weights, not an adapter to continue; set baseModel.uri to its artifact", id="full-weights"),
        pytest.param(job_spec(), {"spec": {**V1["spec"], "baseModel": {"uri": "hf://org/other"}}},
                     "spec.baseModel.uri: ModelVersion tickets-v1 was trained on hf://org/other", id="other-base"),
        pytest.param(job_spec(), {"spec": {**V1["spec"], "artifact": {**V1["spec"]["artifact"], "uri": "s3://b/run/adapter"}}},
                     "adapter is in object storage", id="object-storage"),
        pytest.param(FineTuneJobSpec.model_validate({"baseModel": {"uri": BASE, "modelVersion": "tickets-v1"}, "adaptation": {"type": "full"},
                                                     "dataset": {"uri": "pvc://d/x.jsonl"}}),
                     V1, "spec.adaptation.type: full fine-tuning cannot continue", id="full-fine-tuning"),
    ],
)
def test_a_version_that_cannot_be_continued_is_an_invalid_spec(spec, parent, message):
    result = resolve(spec, parent)
    assert isinstance(result, InvalidSpec) and message in result.message, getattr(result, "message", result)


def test_rendering_an_unresolved_start_is_refused():
    with pytest.raises(builders.RenderError, match="spec.baseModel.modelVersion"):
        builders.trainer_config_dict(OWNER, job_spec(), Settings())


# --- judged against the parent: noForgetting on the parent's test split --------------------------

from finetune_operator.api.modelversion import EvaluationRecord  # noqa: E402
from finetune_operator.logic import finetunejob as ftj_logic  # noqa: E402
from finetune_operator.logic import gates  # noqa: E402


def test_a_continuing_job_gets_the_no_forgetting_gate_and_the_parents_test_split():
    spec = resolve(job_spec())
    assert isinstance(spec, FineTuneJobSpec)
    names = [g.name for g in spec.evaluation.effective_gates(parent=builders.continues(spec))]
    assert names[-1] == "noForgetting" and "noForgetting" not in [g.name for g in spec.evaluation.effective_gates()]
    rendered = builders.trainer_config_dict(OWNER, spec, Settings())
    assert rendered["evaluation"]["parent_test_split"] == "pvc://finetune-artifacts/tickets-v1-uid-1/data/test.jsonl"
    assert any(g["baseline"] == "RatioToParent" for g in rendered["evaluation"]["gates"])
    assert parse_config(rendered).evaluation.parent_test_split.endswith("/test.jsonl")


def test_the_no_forgetting_gate_is_overridable_by_name_and_ignored_without_a_parent():
    spec = FineTuneJobSpec.model_validate({"baseModel": {"uri": BASE}, "dataset": {"uri": "pvc://d/x.jsonl"},
                                           "evaluation": {"gates": [{"name": "noForgetting", "threshold": 0.9}]}})
    assert next(g for g in spec.evaluation.effective_gates(parent=True) if g.name == "noForgetting").threshold == 0.9
    assert "noForgetting" not in [g.name for g in spec.evaluation.effective_gates()]


def test_the_parents_figures_reach_the_version_and_judge_the_gate():
    spec = resolve(job_spec())
    result = {"metrics": {"taskAccuracy": 0.9}, "base": {"taskAccuracy": 0.1},
              "parent": {"taskAccuracy": 0.8}, "on_parent_split": {"taskAccuracy": 0.7}}
    record = ftj_logic.evaluation_record(result, spec)
    assert (record["parentMetrics"], record["metricsOnParentSplit"]) == ({"taskAccuracy": 0.8}, {"taskAccuracy": 0.7})
    registered = EvaluationRecord.model_validate(record)
    verdict = next(r for r in gates.judge_all(registered.gates, registered.metrics, registered.base_metrics,
                                              gates.parent_figures(registered)) if r.name == "noForgetting")
    # 0.7 / 0.8 = 0.875 < 0.95: the new version forgot a ninth of what v1 knew on v1's test split.
    assert not verdict.passed and (verdict.value, verdict.base_value) == (0.7, 0.8)
    assert "on the parent's test split / parent" in verdict.message
    gate = next(g for g in registered.gates if g.name == "noForgetting")
    kept = gates.judge(gate, {}, {}, ({"taskAccuracy": 0.79}, {"taskAccuracy": 0.8}))
    assert kept.passed


def test_without_the_parents_figures_the_gate_is_not_measured():
    gate = next(g for g in FineTuneJobSpec.model_validate({"baseModel": {"uri": BASE}, "dataset": {"uri": "pvc://d/x.jsonl"}})
                .evaluation.effective_gates(parent=True) if g.name == "noForgetting")
    result = gates.judge(gate, {"taskAccuracy": 0.9}, {"taskAccuracy": 0.5})
    assert not result.passed and "parent version was not measured" in result.message
