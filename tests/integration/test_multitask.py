"""A multi-task FineTuneJob on the dev cluster: two tasks from two sources, the train split sampled
per task, every task metric measured per task, and a per-task gate that judges each task.

The tiny random model learns neither task in a few steps, so the per-task gate rejects the version;
the point is what the platform team reads: which task failed, with its value, on the version."""

from __future__ import annotations

import json
import textwrap

import pytest

from finetune_trainer.testing import json_format_records, make_tiny_model
from tests.helpers import wait_for
from tests.integration.test_finetunejob_pipeline import ftj

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.pod_security("privileged", reason="the real trainer reads a tiny model and data from node paths: hostPath volumes"),
]


def test_per_task_sampling_metrics_and_gates(cluster, namespace, operator, tmp_path):
    model = make_tiny_model(tmp_path / "tiny")
    tickets = tmp_path / "tickets.jsonl"
    tickets.write_text("".join(json.dumps(r) + "\n" for r in json_format_records(60)))
    labels = [{"instruction": f"Route ticket {i}: my {kind} problem number {i}", "output": kind}
              for i, kind in enumerate(["billing", "shipping"] * 10)]
    manifest = textwrap.dedent(f"""
        apiVersion: finetune.ai/v1alpha1
        kind: FineTuneJob
        metadata: {{name: multitask}}
        spec:
          baseModel: {{uri: {model}}}
          dataset:
            sources:
              - {{name: tickets, uri: {tickets}, task: summarize}}
              - name: routing
                task: route
                inline: {json.dumps(labels)}
            taskSampling: equal
            split: {{train: 0.6, validation: 0.2, test: 0.2}}
          hyperparameters: {{maxSteps: 4, batchSize: 8, learningRate: 0.01, maxSeqLength: 96}}
          checkpointing: {{intervalSteps: 4}}
          earlyStopping: {{enabled: false}}
          evaluation:
            maxNewTokens: 8
            sampleCount: 3
            suites: {{safety: false, pii: false, bias: false, general: false}}
            gates:
              - {{name: taskAccuracy, perTask: true}}
          output: {{uri: {tmp_path / "out"}, modelName: multitask}}
        """)
    cluster.apply(manifest, namespace)

    def done():
        status = ftj(cluster, namespace, "multitask").get("status") or {}
        return status.get("phase") in ("Succeeded", "Failed") and status

    status = wait_for(done, 300, "multitask to finish")
    assert status["phase"] == "Succeeded", status.get("message")  # trained and registered; the gate rejects the version

    report = status["dataReport"]
    assert {s["name"]: s["task"] for s in report["sources"]} == {"tickets": "summarize", "routing": "route"}
    # Equal sampling: the train split has as many records of each task (the smaller task's count).
    assert len(set(report["tasks"].values())) == 1 and set(report["tasks"]) == {"summarize", "route"}
    assert report["splits"]["train"] == sum(report["tasks"].values())

    mv = cluster.get("modelversion", status["modelVersion"], namespace)
    metrics = mv["spec"]["evaluation"]["metrics"]
    assert {"taskAccuracy/route", "taskAccuracy/summarize", "formatCompliance/route", "formatCompliance/summarize"} <= set(metrics)
    gate = next(g for g in mv["spec"]["evaluation"]["gates"] if g["name"] == "taskAccuracy")
    assert gate["perTask"] is True

    def judged():
        current = cluster.get("modelversion", status["modelVersion"], namespace)
        return (current.get("status") or {}).get("gates") and current

    judged_mv = wait_for(judged, 60, "the version's gate results")
    result = next(r for r in judged_mv["status"]["gates"] if r["name"] == "taskAccuracy")
    assert not result["passed"] and "on every task: route" in result["message"] and "summarize" in result["message"]
    assert result["value"] == min(metrics["taskAccuracy/route"], metrics["taskAccuracy/summarize"])
    assert judged_mv["status"]["phase"] == "Rejected"
