"""An hf:// base model's resolved commit, from the trainer's summary to the ModelVersion lineage.

The train Pod's termination message carries the commit the revision resolved to and whether the
model came from the cache; the FineTuneJob's status and Trained condition keep them and the
registered ModelVersion's lineage names the commit. Only a well-formed commit is taken.
"""

from __future__ import annotations

import datetime

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from finetune_operator.builders.finetunejob import Owner
from finetune_operator.logic.finetunejob import Children, decide
from finetune_operator.logic.finetunejob_spec import semantic_problems
from tests.unit.pipeline_fixtures import job, pod, termination

NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
OWNER = Owner(name="ft", namespace="team", uid="uid-1")
DIGEST = "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SPEC = FineTuneJobSpec.model_validate({
    "baseModel": {"uri": "hf://org/tiny", "revision": "v1", "tokenSecretRef": {"name": "hub-token"}},
    "dataset": {"uri": "s3://data/tickets.jsonl"},
    "evaluation": {"enabled": False},
})
PREPARED = termination(status="Prepared", stage="prepare", dataset={"digest": DIGEST, "records": 10})


def trained(**hub) -> Children:
    message = termination(
        status="Succeeded", stage="train",
        artifact={"kind": "lora-adapter", "uri": "pvc://finetune-artifacts/ft-uid-1/adapter", "sha256": DIGEST, **hub},
        metrics={"global_step": 4, "total_steps": 4},
    )
    return Children(
        jobs=(job("ft-prepare", conditions=["Complete"], succeeded=1), job("ft-train", conditions=["Complete"], succeeded=1)),
        pods=(pod("ft-prepare", terminated=dict(exitCode=0, reason="Completed", message=PREPARED)),
              pod("ft-train", terminated=dict(exitCode=0, reason="Completed", message=message),
                  started="2025-01-01T11:00:00Z", finished="2025-01-01T11:45:00Z")),
    )


def run(children: Children):
    return decide(SPEC, FineTuneJobStatus(), children, NOW, generation=1, owner=OWNER, settings=None, gpu_hour_price=0.0)


@pytest.mark.parametrize(("from_cache", "source"), [(False, "downloaded from the Hub"), (True, "from the model cache")])
def test_the_resolved_commit_reaches_status_condition_and_lineage(from_cache, source):
    decision = run(trained(base_model_commit=COMMIT, base_model_from_cache=from_cache))
    artifact = decision.status.artifact.model_dump(by_alias=True, exclude_none=True)
    assert artifact["baseModelCommit"] == COMMIT and artifact["baseModelFromCache"] is from_cache
    trained_condition = next(c for c in decision.status.conditions if c.type == "Trained")
    assert f"base model commit {COMMIT[:12]} {source}" in trained_condition.message
    lineage = decision.register.spec["lineage"]
    assert lineage["baseModelCommit"] == COMMIT
    assert decision.register.spec["baseModel"]["revision"] == "v1"


@pytest.mark.parametrize("commit", [None, "main", "0123; rm -rf /", 12345, "A" * 40])
def test_a_missing_or_malformed_commit_is_not_recorded(commit):
    hub = {} if commit is None else {"base_model_commit": commit, "base_model_from_cache": "yes"}
    decision = run(trained(**hub))
    artifact = decision.status.artifact
    assert artifact.base_model_commit is None and artifact.base_model_from_cache is None
    assert "baseModelCommit" not in decision.register.spec["lineage"]
    assert "base model commit" not in next(c for c in decision.status.conditions if c.type == "Trained").message


def test_a_hub_token_on_a_model_not_from_the_hub_is_a_spec_problem():
    spec = FineTuneJobSpec.model_validate({
        "baseModel": {"uri": "pvc://models/base", "tokenSecretRef": {"name": "hub-token"}},
        "dataset": {"uri": "s3://data/tickets.jsonl"},
    })
    assert [p.field for p in semantic_problems(spec)] == ["spec.baseModel.tokenSecretRef"]
    assert not semantic_problems(SPEC)
