"""A model's second version on the dev cluster, end to end: v2 continues v1's adapter, trains on a
mix of new real records, a teacher's records seeded from them and a replay of v1's training data,
is multi-task (new tickets and replayed old ones are two tasks), and is judged against v1.

v1 is an ordinary FineTuneJob; v2 names it twice (baseModel.modelVersion and a replay source). The
test checks what a platform team reads afterwards:

* v2's status.dataReport shows the three sources with their contributions and the training
  records per task after equal task sampling;
* v2's ModelVersion points at v1 as its parent, carries v1's and its own figures on v1's test split
  and a noForgetting verdict, per-task figures and a per-task gate verdict naming each task;
* the trainer really continued v1's adapter (its rank, not the spec's) on the replayed data (v1's
  train split, never its test split), and the teacher was shown the new real records;
* the evaluation cache: v2 asks the base model the general suite's prompts with v1's decoding, so
  it reuses those answers (status, ModelVersion and model card say so) and generates the task
  suite, whose prompts are new.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from finetune_trainer.testing import json_format_records, make_tiny_model
from tests.helpers import environ, wait_for
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
# Both versions evaluate with the same decoding (maxNewTokens 7 is this test's own): v2 reuses the
# base's general-suite answers v1's evaluation left in the cache.
EVALUATION = "  evaluation: {maxNewTokens: 7, sampleCount: 3, suites: {safety: false, pii: false, bias: false}"
V1_EVALUATION = EVALUATION + "}\n"
V2_EVALUATION = EVALUATION + ", gates: [{name: taskAccuracy, perTask: true}]}\n"


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
            taskSampling: equal
            sources:
              - {{name: real, uri: {data}, task: new}}
              - name: teacher
                seedFrom: real
                seedCount: 2
                task: new
                synthetic: {{endpoint: {teacher}, model: teacher-7b, prompt: {json.dumps(PROMPT)}, numExamples: 12}}
              - {{name: replay, replay: {{modelVersion: tickets-v1}}, records: 16, task: old}}
          output: {{uri: {output}, modelName: tickets, version: v2}}
        """) + COMMON + V2_EVALUATION


@pytest.fixture
def cache_operator(operator, cluster, tmp_path):
    """The test operator restarted with an evaluation cache (a node path, as on the dev cluster: its
    evaluation Pods mount it, which "restricted" namespaces refuse), and without it afterwards."""
    with environ({"FINETUNE_EVALUATION_CACHE": str(tmp_path / "evaluation-cache")}):
        operator.restart(cluster.kubeconfig)
    yield operator
    operator.restart(cluster.kubeconfig)


def finished(cluster, namespace, name):
    def done():
        status = ftj(cluster, namespace, name).get("status") or {}
        return status.get("phase") in ("Succeeded", "Failed") and status

    status = wait_for(done, 300, f"{name} to finish")
    assert status["phase"] == "Succeeded", status.get("message")
    return status


def gate_results(cluster, namespace, version):
    return wait_for(lambda: (cluster.get("modelversion", version, namespace).get("status") or {}).get("gates"), 60,
                    f"{version}'s gate results")


def test_v2_continues_v1_on_mixed_multitask_data_and_is_judged_against_it(cluster, namespace, cache_operator, serve, tmp_path):  # noqa: F811
    teacher = serve(Teacher())
    model = make_tiny_model(tmp_path / "tiny")
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({**r, "instruction": "Old " + r["instruction"]}) + "\n" for r in json_format_records(40)))
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps({**r, "instruction": "New " + r["instruction"]}) + "\n" for r in json_format_records(30)))

    cluster.apply(v1_manifest(model, old, tmp_path / "out"), namespace)
    v1 = finished(cluster, namespace, "tickets-v1")
    assert "task" not in ((v1.get("evaluationProgress") or {}).get("baseReused") or [])
    cluster.apply(v2_manifest(model, new, tmp_path / "out", teacher.url), namespace)
    v2 = finished(cluster, namespace, "tickets-v2")

    # --- the data: three sources, two tasks sampled equally
    report = v2["dataReport"]
    sources = {s["name"]: s for s in report["sources"]}
    assert list(sources) == ["real", "teacher", "replay"]
    assert (sources["real"]["read"], sources["teacher"]["kind"], sources["teacher"]["mixed"]) == (30, "synthetic", 12)
    assert (sources["replay"]["kind"], sources["replay"]["read"], sources["replay"]["mixed"]) == ("replay", v1["dataReport"]["splits"]["train"], 16)
    assert {s["task"] for s in sources.values()} == {"new", "old"}
    assert set(report["tasks"]) == {"new", "old"} and len(set(report["tasks"].values())) == 1
    assert report["splits"]["train"] == sum(report["tasks"].values())

    # --- the version: parent, figures against it, per-task verdicts
    mv = cluster.get("modelversion", v2["modelVersion"], namespace)
    assert mv["spec"]["lineage"]["parentVersion"] == "tickets-v1"
    assert mv["spec"]["lineage"]["preparedDataUri"].endswith("/data")
    assert mv["spec"]["modelCard"]["data"]["sources"]["replay"] == {"kind": "replay", "records": sources["replay"]["final"], "task": "old"}
    evaluation = mv["spec"]["evaluation"]
    assert {"taskAccuracy", "formatCompliance"} <= set(evaluation["parentMetrics"]) and set(evaluation["metricsOnParentSplit"]) == set(evaluation["parentMetrics"])
    assert {"taskAccuracy/new", "taskAccuracy/old", "formatCompliance/new", "formatCompliance/old"} <= set(evaluation["metrics"])
    results = {r["name"]: r for r in gate_results(cluster, namespace, v2["modelVersion"])}
    forgetting = results["noForgetting"]
    assert "taskAccuracy on the parent's test split / parent >= 0.95" in forgetting["message"]
    assert (forgetting["value"], forgetting["baseValue"]) == (evaluation["metricsOnParentSplit"]["taskAccuracy"], evaluation["parentMetrics"]["taskAccuracy"])
    per_task = results["taskAccuracy"]
    assert "on every task: new" in per_task["message"] and "old" in per_task["message"]
    assert per_task["value"] == min(evaluation["metrics"]["taskAccuracy/new"], evaluation["metrics"]["taskAccuracy/old"])

    # --- the evaluation cache: the general suite's base answers came from v1's evaluation
    reused = v2["evaluationProgress"]["baseReused"]
    assert "general" in reused and "task" not in reused
    assert evaluation["baseReusedSuites"] == reused
    card = cluster.get("configmap", f"{v2['modelVersion']}-model-card", namespace)["data"]["README.md"]
    assert "come from the evaluation cache" in card

    # --- what the trainer did
    run = Path(v2["outputUri"])
    trained = json.loads((run / "results.json").read_text())
    assert trained["continued_from"]["version"] == "tickets-v1" and trained["continued_from"]["mode"] == "continue"
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] == 4  # v1's adapter, trained further
    evaluated = json.loads((run / "evaluation.json").read_text())
    assert evaluated["base_cache"]["reused"]["general"]["source"].rstrip("/") == v1["outputUri"].rstrip("/")
    assert {"rougeL/new", "rougeL/old", "exactMatch/new", "exactMatch/old"} <= set(evaluated["per_task"]["candidate"])
    replayed = [json.loads(line) for split in ("train", "validation", "test") for line in (run / "data" / f"{split}.jsonl").read_text().splitlines()]

    def key(record):
        return record["instruction"], record.get("input"), record["output"]

    v1_test = {key(json.loads(line)) for line in (Path(v1["outputUri"]) / "data" / "test.jsonl").read_text().splitlines()}
    assert v1_test and any(r["instruction"].startswith("Old ") for r in replayed)  # the replay is in
    assert not v1_test & {key(r) for r in replayed}  # v1's test split never is
    assert "New " in json.dumps(teacher.requests[0]["body"]["messages"])  # seeds from the real source
