"""spec.budget on the dev cluster: a training run stopped by its budget, then resumed by raising it.

The real trainer trains the tiny model (the dev cluster's nodes advertise GPUs; the Pods run on
the CPU, and their running time counts as GPU time). Once it is training, its budget is lowered
to what it has used (so the test does not depend on how fast this machine starts a trainer): the
operator suspends the training Job, and the trainer saves a checkpoint on SIGTERM. Then the budget
is raised, and the same Job resumes from that checkpoint to Succeeded, with the GPU-hours of both
runs counted.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from finetune_trainer.testing import json_format_records, make_tiny_model
from tests.helpers import condition, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.pod_security("privileged", reason="the real trainer reads a tiny model and a dataset from node paths and "
                             "writes its checkpoints there: hostPath volumes"),
]

NAME = "budgeted"
MAX_STEPS = 400
CHECKPOINT_EVERY = 25


def manifest(model: Path, data: Path, output: Path, max_gpu_hours: float) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: finetune.ai/v1alpha1
        kind: FineTuneJob
        metadata: {{name: {NAME}}}
        spec:
          baseModel: {{uri: {model}}}
          dataset: {{uri: {data}, format: instruction}}
          hyperparameters: {{maxSteps: {MAX_STEPS}, batchSize: 4, learningRate: 0.001, maxSeqLength: 64, evalSteps: {CHECKPOINT_EVERY}}}
          checkpointing: {{intervalSteps: {CHECKPOINT_EVERY}}}
          earlyStopping: {{enabled: false}}
          evaluation: {{enabled: false}}
          resources: {{gpusPerNode: 1, costPerGpuHour: 3}}
          budget: {{maxGpuHours: {max_gpu_hours}}}
          output: {{uri: {output}}}
        """
    )


def test_a_run_stopped_by_its_budget_resumes_from_its_checkpoint_when_the_budget_is_raised(
        cluster, namespace, operator, tmp_path):
    model = make_tiny_model(tmp_path / "tiny")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in json_format_records(60)))
    output = tmp_path / "out"
    cluster.apply(manifest(model, data, output, 1.0), namespace)

    def training():
        status = cluster.get("finetunejob", NAME, namespace).get("status") or {}
        assert status.get("phase") not in ("Succeeded", "Failed"), status.get("message")
        estimate = (status.get("budget") or {}).get("estimatedGpuHours")
        return status if ((status.get("progress") or {}).get("step") or 0) >= 20 and estimate and status.get("gpuHours") else None

    running = wait_for(training, 240, f"{NAME} to train with an estimate in its status")
    assert running["budget"]["limitGpuHours"] == 1.0
    within = condition({"status": running}, "WithinBudget")
    assert (within["status"], within["reason"]) == ("True", "WithinBudget"), within
    # The budget lowered to about what it has used: the next checkpoint would go over it.
    budget = round(running["gpuHours"] + 2 / 3600, 4)
    estimate = running["budget"]["estimatedGpuHours"]
    assert estimate > budget, (estimate, budget)
    cluster.kubectl("patch", "finetunejob", NAME, "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"budget": {"maxGpuHours": budget}}}))

    def stopped():
        status = cluster.get("finetunejob", NAME, namespace).get("status") or {}
        if status.get("phase") == "Succeeded":
            raise AssertionError(f"{NAME} finished before the lowered budget stopped it: raise MAX_STEPS")
        return status if status.get("phase") == "Failed" else None

    status = wait_for(stopped, 120, f"{NAME} to be stopped by its budget")
    summary = condition({"status": status}, "Succeeded")
    assert summary["reason"] == "BudgetExceeded", status.get("message")
    assert "spec.budget.maxGpuHours" in status["message"] and "Raise spec.budget" in status["message"]
    assert "completionTime" not in status, "a job stopped by its budget is resumable, not finished"
    assert status["budget"]["exceeded"] is True and status["budget"]["limitGpuHours"] == budget
    within = condition({"status": status}, "WithinBudget")
    assert (within["status"], within["reason"]) == ("False", "BudgetExceeded")
    # The training Job is suspended, not failed; its Pod saved a checkpoint when it stopped.
    train = cluster.get("job", f"{NAME}-train", namespace)
    assert train["spec"]["suspend"] is True
    assert not [c for c in (train.get("status") or {}).get("conditions") or [] if c["type"] == "Failed" and c["status"] == "True"]

    def checkpoint_saved():
        latest = (cluster.get("finetunejob", NAME, namespace).get("status") or {}).get("latestCheckpoint") or {}
        pods = cluster.list("pods", namespace, selector=f"job-name={NAME}-train")
        return latest if latest.get("step") and not pods else None

    checkpoint = wait_for(checkpoint_saved, 120, "the stopped trainer's checkpoint and its Pod gone")
    assert 0 < checkpoint["step"] < MAX_STEPS, checkpoint
    stopped_status = cluster.get("finetunejob", NAME, namespace)["status"]
    used = stopped_status["gpuHours"]
    # Stopped at once: at most a reconcile and the SIGTERM checkpoint's seconds past the budget.
    assert used < budget + 20 / 3600, (used, budget)
    reasons = {e["reason"] for e in cluster.list("events", namespace) if e["involvedObject"].get("name") == NAME}
    assert "BudgetExceeded" in reasons, reasons

    # Raise the budget: the same Job resumes from the checkpoint and finishes.
    cluster.kubectl("patch", "finetunejob", NAME, "-n", namespace, "--type=merge", "-p", '{"spec": {"budget": {"maxGpuHours": 5}}}')

    def finished():
        current = cluster.get("finetunejob", NAME, namespace).get("status") or {}
        return current if current.get("phase") in ("Succeeded",) or current.get("completionTime") else None

    final = wait_for(finished, 420, f"{NAME} to finish after the budget was raised")
    assert final["phase"] == "Succeeded", final.get("message")
    assert final["gpuHoursBeforeResume"] >= used and final["resumedAt"]
    assert final["gpuHours"] > final["gpuHoursBeforeResume"], "the resumed Pod's time counts on top"
    assert final["budget"]["exceeded"] is False
    assert final["estimatedCost"] == pytest.approx(final["gpuHours"] * 3, abs=0.01)
    # The resumed trainer started from the checkpoint, not from step 0 (its progress log in the run's output).
    events = [json.loads(line) for path in Path(final["outputUri"]).rglob("*.jsonl") if "progress" in path.name
              for line in path.read_text().splitlines() if '"event":"resumed"' in line]
    assert events and events[-1]["from_step"] >= checkpoint["step"], events
