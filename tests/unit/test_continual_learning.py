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
