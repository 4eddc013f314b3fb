"""dataset.sources from the operator's side: the API's rules, the trainer config and ConfigMap it
renders, the Pods' mounts and keys, replayed versions resolved from the cache, and the per-source
data report in status."""

from __future__ import annotations

import dataclasses
import json

import pytest
from pydantic import ValidationError

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders.finetunejob import Owner, Settings
from finetune_operator.logic.finetunejob_spec import prepared_data_of, resolve_references
from finetune_operator.logic.spec import InvalidSpec
from finetune_trainer.config import parse_config
from tests.unit.pipeline_fixtures import pod, termination
from tests.unit.test_logic_finetunejob_pipeline import PREPARE, S, run, spec

OWNER = Owner(name="tickets-v2", namespace="team", uid="uid-2")
TEACHER = {"endpoint": "http://teacher.models:8000/v1", "model": "teacher", "prompt": "Write support tickets.",
           "numExamples": 20, "secretRef": {"name": "teacher-key", "key": "token"}}
SOURCES = [
    {"name": "real", "uri": "pvc://datasets/tickets.jsonl", "task": "triage"},
    {"name": "extra", "inline": [{"instruction": "Reset my password", "output": "account"}], "task": "triage"},
    {"name": "teacher", "synthetic": TEACHER, "seedFrom": "real", "seedCount": 3, "records": 15, "task": "triage"},
    {"name": "replay", "replay": {"modelVersion": "tickets-v1"}, "weight": 0.2, "task": "extraction"},
]
V1 = {"metadata": {"name": "tickets-v1"}, "spec": {
    "artifact": {"uri": "pvc://finetune-artifacts/tickets-v1-uid-1/adapter"},
    "lineage": {"preparedDataUri": "pvc://finetune-artifacts/tickets-v1-uid-1/data"}}}


def job_spec(sources=SOURCES, **dataset) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({"baseModel": {"uri": "hf://org/base"}, "dataset": {"sources": sources, **dataset}})


def resolved(found=V1) -> FineTuneJobSpec:
    result = resolve_references(job_spec(), lambda name: found if name == "tickets-v1" else None)
    assert isinstance(result, FineTuneJobSpec), result
    return result


def test_the_trainer_config_names_every_source_and_the_trainer_accepts_it():
    rendered = builders.trainer_config_dict(OWNER, resolved(), Settings())
    sources = rendered["dataset"]["sources"]
    assert "source" not in rendered["dataset"] and "synthetic" not in rendered["dataset"]
    assert sources[0] == {"name": "real", "source": "pvc://datasets/tickets.jsonl", "task": "triage"}
    assert sources[1] == {"name": "extra", "source": "/etc/finetune/dataset-extra.jsonl", "task": "triage"}
    assert sources[2]["synthetic"]["api_key_env"] == "FINETUNE_SYNTHETIC_API_KEY_2"
    assert (sources[2]["seed_from"], sources[2]["seed_count"], sources[2]["records"]) == ("real", 3, 15)
    assert sources[3] == {"name": "replay", "replay": "pvc://finetune-artifacts/tickets-v1-uid-1/data",
                          "replay_of": "tickets-v1", "weight": 0.2, "task": "extraction"}
    assert parse_config(rendered).dataset.sources[3].kind == "replay"


def test_inline_sources_are_files_of_the_config_map():
    data = builders.config_map(OWNER, resolved(), Settings())["data"]
    assert json.loads(data["dataset-extra.jsonl"]) == {"instruction": "Reset my password", "output": "account"}
    assert "dataset.jsonl" not in data


def test_each_teacher_key_reaches_only_the_prepare_pod_by_reference():
    def env(build):
        return {e["name"]: e for e in build(OWNER, resolved(), Settings())["spec"]["template"]["spec"]["containers"][0]["env"]}

    prepare = env(builders.prepare_job)
    assert prepare["FINETUNE_SYNTHETIC_API_KEY_2"]["valueFrom"] == {"secretKeyRef": {"name": "teacher-key", "key": "token"}}
    for build in (builders.train_job, builders.eval_job):
        assert not any(name.startswith("FINETUNE_SYNTHETIC_API_KEY") for name in env(build))


def test_claims_of_every_source_and_the_replayed_data_are_mounted():
    assert builders.claims(OWNER, resolved(), Settings()) == ["datasets", "finetune-artifacts"]


def test_a_replay_from_the_node_path_artifact_store_is_mounted_read_only():
    v1 = {"spec": {"artifact": {"uri": "/srv/artifacts/tickets-v1-uid-1/adapter"}}}  # registered before lineage had it
    settings = Settings(artifact_store="/srv/artifacts")
    assert builders.node_inputs(resolved(v1), settings) == ["/srv/artifacts/tickets-v1-uid-1/data"]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        pytest.param(V1, "pvc://finetune-artifacts/tickets-v1-uid-1/data", id="recorded"),
        pytest.param({"spec": {"artifact": {"uri": "pvc://store/run/adapter"}}}, "pvc://store/run/data", id="beside-the-artifact"),
        pytest.param({"spec": {"artifact": {"uri": "s3://bucket/run/adapter"}}}, None, id="object-storage"),
    ],
)
def test_where_a_versions_data_is(version, expected):
    assert prepared_data_of(version) == expected


def test_a_missing_or_unreplayable_version_is_an_invalid_spec_naming_the_field():
    missing = resolve_references(job_spec(), lambda name: None)
    assert isinstance(missing, InvalidSpec)
    assert "spec.dataset.sources[3].replay.modelVersion: ModelVersion tickets-v1 does not exist in this namespace" in missing.message
    in_s3 = resolve_references(job_spec(), lambda name: {"spec": {"artifact": {"uri": "s3://b/run/adapter"}}})
    assert isinstance(in_s3, InvalidSpec) and "keeps no prepared data to replay" in in_s3.message


def test_rendering_an_unresolved_replay_is_refused():
    with pytest.raises(builders.RenderError, match="was not resolved"):
        builders.trainer_config_dict(OWNER, job_spec(), Settings())


@pytest.mark.parametrize(
    ("sources", "extra", "message"),
    [
        pytest.param([{"name": "a", "uri": "s3://b/k", "inline": [{"x": 1}]}], {}, "exactly one of uri, inline, synthetic or replay", id="two-origins"),
        pytest.param([{"name": "a", "uri": "s3://b/k", "records": 5, "weight": 1}], {}, "records or weight, not both", id="records-and-weight"),
        pytest.param([{"name": "a", "uri": "s3://b/k"}, {"name": "a", "uri": "s3://b/j"}], {}, "used twice", id="duplicate"),
        pytest.param([{"name": "t", "synthetic": TEACHER, "seedFrom": "real"}, {"name": "real", "uri": "s3://b/k"}], {},
                     "seedFrom names a source listed earlier", id="seed-from-later"),
        pytest.param([{"name": "a", "uri": "s3://b/k"}], {"uri": "s3://b/j"}, "exactly one of dataset.uri", id="sources-and-uri"),
        pytest.param([{"name": "a", "inline": [{"instruction": "x" * 1000, "output": "y"}] * 150},
                      {"name": "b", "inline": [{"instruction": "x" * 1000, "output": "y"}] * 150}], {}, "more than 128 KiB", id="inline-total"),
    ],
)
def test_bad_sources_are_refused(sources, extra, message):
    with pytest.raises(ValidationError, match=message):
        job_spec(sources, **extra)


SOURCE_SUMMARY = [
    {"name": "real", "kind": "records", "read": 3500, "mixed": 3500, "final": 3410, "task": "triage",
     "splits": {"train": 2728, "validation": 341, "test": 341}},
    {"name": "replay", "kind": "replay", "read": 4000, "mixed": 875, "final": 870, "splits": {"train": 696, "validation": 87, "test": 87}},
]


def test_each_sources_contribution_reaches_status_and_the_model_card():
    prepared = termination(status="Prepared", stage="prepare", dataset={
        "format": "instruction", "counts": {"read": 4375, "after_quality": 4375, "final": 4280}, "dropped": {},
        "pii": {}, "splits": {"train": 3424, "validation": 428, "test": 428}, "sha256": "sha256:" + "a" * 64,
        "sources": SOURCE_SUMMARY})
    children = dataclasses.replace(S["prepared"], pods=(pod(PREPARE, terminated=dict(exitCode=0, reason="Completed", message=prepared)),))
    report = run(spec(), children).status.data_report
    assert [(s.name, s.kind, s.read, s.mixed, s.final) for s in report.sources] == [
        ("real", "records", 3500, 3500, 3410), ("replay", "replay", 4000, 875, 870)]
    assert report.sources[0].task == "triage" and report.sources[1].splits.test == 87


def test_a_path_the_user_writes_under_the_node_path_artifact_store_is_not_mounted():
    """The store holds every namespace's runs: only what the operator resolved from a ModelVersion
    of the job's namespace may be read from it."""
    settings = Settings(artifact_store="/srv/artifacts")
    snooping = FineTuneJobSpec.model_validate({"baseModel": {"uri": "hf://org/base"}, "dataset": {"sources": [
        {"name": "theirs", "uri": "/srv/artifacts/other-team-run/data/train.jsonl"}]}})
    assert builders.node_inputs(snooping, settings) == []
    snooping_uri = FineTuneJobSpec.model_validate({"baseModel": {"uri": "hf://org/base"}, "dataset": {"uri": "/srv/artifacts/x/data"}})
    assert builders.node_inputs(snooping_uri, settings) == []
