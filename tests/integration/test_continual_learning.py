"""A model's second version on the dev cluster: v2 continues v1's adapter and trains on a mix of
new real records, a teacher's records seeded from them, and a replay of v1's training data.

v1 is an ordinary FineTuneJob; v2 names it twice (baseModel.modelVersion and a replay source).
The test checks what a platform team reads afterwards: v2's status.dataReport shows the three
sources with their contributions, v2's ModelVersion points at v1 as its parent, and the trainer
really continued v1's adapter (its rank, not the spec's) on the replayed data (v1's train split,
never its test split), and that v2 is judged against v1 on v1's test split (noForgetting).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from finetune_trainer.testing import json_format_records, make_tiny_model
from tests.helpers import wait_for
from tests.integration.test_finetunejob_pipeline import ftj
from tests.teacher import PROMPT, Teacher, serve  # noqa: F401 - serve is a fixture

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.pod_security("privileged", reason="the real trainer reads a tiny model and data from node paths and "
                             "the test reads its outputs there: hostPath volumes"),
]

COMMON = """
  hyperparameters: {maxSteps: 4, batchSize: 8, learningRate: 0.01, maxSeqLength: 96}
  checkpointing: {intervalSteps: 4}
  earlyStopping: {enabled: false}
"""
V1_EVALUATION = "  evaluation: {enabled: false}\n"
# v2 is judged against v1 on v1's test split (noForgetting), besides the test split and base.
V2_EVALUATION = "  evaluation: {maxNewTokens: 8, sampleCount: 3, suites: {safety: false, pii: false, bias: false, general: false}}\n"


def v1_manifest(model: Path, data: Path, output: Path) -> str:
    return textwrap.dedent(f"""
        apiVersion: finetune.ai/v1alpha1
        kind: FineTuneJob
        metadata: {{name: tickets-v1}}
        spec:
          baseModel: {{uri: {model}}}
          adaptation: {{type: lora, rank: 4, alpha: 8}}
          dataset: {{uri: {data}}}
          output: {{uri: {output}, modelName: tickets, version: v1}}
        """) + COMMON + V1_EVALUATION


def v2_manifest(model: Path, data: Path, output: Path, teacher: str) -> str:
    return textwrap.dedent(f"""
        apiVersion: finetune.ai/v1alpha1
        kind: FineTuneJob
        metadata: {{name: tickets-v2}}
        spec:
          baseModel: {{uri: {model}, modelVersion: tickets-v1}}
          adaptation: {{type: lora, rank: 16, alpha: 32}}
          dataset:
            format: instruction
            sources:
              - {{name: real, uri: {data}, task: tickets}}
              - name: teacher
                seedFrom: real
                seedCount: 2
                task: tickets
                synthetic: {{endpoint: {teacher}, model: teacher-7b, prompt: {json.dumps(PROMPT)}, numExamples: 12}}
              - {{name: replay, replay: {{modelVersion: tickets-v1}}, records: 10, task: tickets}}
          output: {{uri: {output}, modelName: tickets, version: v2}}
        """) + COMMON + V2_EVALUATION


def finished(cluster, namespace, name):
    def done():
        status = ftj(cluster, namespace, name).get("status") or {}
        return status.get("phase") in ("Succeeded", "Failed") and status

    status = wait_for(done, 300, f"{name} to finish")
    assert status["phase"] == "Succeeded", status.get("message")
    return status


def test_v2_continues_v1_on_real_synthetic_and_replayed_data(cluster, namespace, operator, serve, tmp_path):  # noqa: F811
    teacher = serve(Teacher())
    model = make_tiny_model(tmp_path / "tiny")
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({**r, "instruction": "Old " + r["instruction"]}) + "\n" for r in json_format_records(40)))
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps({**r, "instruction": "New " + r["instruction"]}) + "\n" for r in json_format_records(30)))

    cluster.apply(v1_manifest(model, old, tmp_path / "out"), namespace)
    v1 = finished(cluster, namespace, "tickets-v1")
    cluster.apply(v2_manifest(model, new, tmp_path / "out", teacher.url), namespace)
    v2 = finished(cluster, namespace, "tickets-v2")

    sources = {s["name"]: s for s in v2["dataReport"]["sources"]}
    assert list(sources) == ["real", "teacher", "replay"]
    assert (sources["real"]["read"], sources["teacher"]["kind"], sources["teacher"]["mixed"]) == (30, "synthetic", 12)
    assert (sources["replay"]["kind"], sources["replay"]["read"], sources["replay"]["mixed"]) == ("replay", v1["dataReport"]["splits"]["train"], 10)
    assert all(s["task"] == "tickets" for s in sources.values())
    assert sum(s["final"] for s in sources.values()) == v2["dataReport"]["splits"]["train"] + v2["dataReport"]["splits"]["validation"] + v2["dataReport"]["splits"]["test"]

    mv = cluster.get("modelversion", v2["modelVersion"], namespace)
    assert mv["spec"]["lineage"]["parentVersion"] == "tickets-v1"
    # Judged against v1 on v1's test split as well as against the base.
    evaluation = mv["spec"]["evaluation"]
    assert {"taskAccuracy", "formatCompliance"} <= set(evaluation["parentMetrics"]) and set(evaluation["metricsOnParentSplit"]) == set(evaluation["parentMetrics"])
    gate = next(g for g in evaluation["gates"] if g["name"] == "noForgetting")
    assert (gate["baseline"], gate["threshold"]) == ("RatioToParent", 0.95)
    judged = wait_for(lambda: (cluster.get("modelversion", v2["modelVersion"], namespace).get("status") or {}).get("gates"), 60, "gate results")
    verdict = next(r for r in judged if r["name"] == "noForgetting")
    assert "taskAccuracy on the parent's test split / parent >= 0.95" in verdict["message"]
    assert (verdict["value"], verdict["baseValue"]) == (evaluation["metricsOnParentSplit"]["taskAccuracy"], evaluation["parentMetrics"]["taskAccuracy"])
    assert mv["spec"]["lineage"]["preparedDataUri"].endswith("/data")
    assert mv["spec"]["modelCard"]["data"]["sources"]["replay"] == {"kind": "replay", "records": sources["replay"]["final"], "task": "tickets"}

    run = Path(v2["outputUri"])
    results = json.loads((run / "results.json").read_text())
    assert results["continued_from"]["version"] == "tickets-v1" and results["continued_from"]["mode"] == "continue"
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] == 4  # v1's adapter, trained further
    replayed = [json.loads(line) for split in ("train", "validation", "test") for line in (run / "data" / f"{split}.jsonl").read_text().splitlines()]
    def key(record):
        return record["instruction"], record.get("input"), record["output"]

    v1_test = {key(json.loads(line)) for line in (Path(v1["outputUri"]) / "data" / "test.jsonl").read_text().splitlines()}
    assert v1_test and any(r["instruction"].startswith("Old ") for r in replayed)  # the replay is in
    assert not v1_test & {key(r) for r in replayed}  # v1's test split never is
    # The teacher was shown the new real records as seeds.
    assert "New " in json.dumps(teacher.requests[0]["body"]["messages"])
