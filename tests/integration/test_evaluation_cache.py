"""The evaluation cache on the dev cluster: the second FineTuneJob on the same base model and data
evaluates only its candidate, and says so in its status, on its ModelVersion and in the model card.
(A job's opt-out, reuseBaseEvaluation: false, is covered in tests/trainer/test_evalcache.py and the
unit tests: it is the trainer's switch.)

The test operator runs with an evaluation cache (a node path), as the dev cluster does. Decoding
settings no other test uses (maxNewTokens 15) keep this test's entries its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_trainer.testing import json_format_records, make_tiny_model
from tests.helpers import wait_for
from tests.integration.test_finetunejob_pipeline import condition, ftj, manifest

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.pod_security("privileged", reason="the real trainer reads a tiny model and a dataset from node paths: hostPath volumes"),
]

EVALUATION = "evaluation: {maxNewTokens: 15, sampleCount: 3, suites: {safety: false, pii: false, bias: false}}\n"
SUITES = ["general", "task"]


def _run(cluster, namespace, name, model, data, output, extra=EVALUATION):
    cluster.apply(manifest(name, model, data, output, max_steps=8, extra=extra), namespace)

    def finished():
        status = ftj(cluster, namespace, name).get("status") or {}
        return status.get("phase") in ("Succeeded", "Failed") and status

    status = wait_for(finished, 300, f"{name} to finish")
    assert status["phase"] == "Succeeded", status.get("message")
    assert condition(status, "Evaluated")["status"] == "True"
    mv = cluster.get("modelversion", status["modelVersion"], namespace)
    return status, mv


def test_a_second_job_on_the_same_base_evaluates_only_its_candidate(cluster, namespace, operator, tmp_path):
    model = make_tiny_model(tmp_path / "model")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in json_format_records(48)))

    first, first_mv = _run(cluster, namespace, "evcache-v1", model, data, tmp_path / "out1")
    assert not (first.get("evaluationProgress") or {}).get("baseReused")
    assert "baseReusedSuites" not in first_mv["spec"]["evaluation"]

    second, second_mv = _run(cluster, namespace, "evcache-v2", model, data, tmp_path / "out2")
    assert second["evaluationProgress"]["baseReused"] == SUITES
    assert second["evaluationProgress"]["model"] == "candidate"
    registered = second_mv["spec"]["evaluation"]
    assert registered["baseReusedSuites"] == SUITES
    quality = {k for k in first_mv["spec"]["evaluation"]["baseMetrics"] if not k.startswith(("latency", "tokensPer"))}
    assert {k: registered["baseMetrics"][k] for k in quality} == {k: first_mv["spec"]["evaluation"]["baseMetrics"][k] for k in quality}
    card = cluster.get("configmap", f"{second['modelVersion']}-model-card", namespace)["data"]["README.md"]
    assert "for the suites general, task come from the evaluation cache" in card
    # The evaluation report names the run whose answers were reused.
    report = json.loads((Path(second["outputUri"]) / "evaluation.json").read_text())
    assert set(report["base_cache"]["reused"]) == set(SUITES)
    assert report["base_cache"]["reused"]["task"]["source"] == first["outputUri"]

