"""A FineTuneJob from `kubectl apply` to a trained adapter, on the dev cluster.

The node agent runs the real trainer image's entrypoint (`python -m finetune_trainer`) on a
tiny random-init model built offline, so these tests exercise the operator, the API server,
the Job controller, the scheduler and the trainer together.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from finetune_trainer.testing import json_format_records, make_tiny_model
from tests.helpers import wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.pod_security("privileged", reason="the real trainer reads a tiny model and a dataset from node paths and "
                             "the tests read its outputs (checkpoints, progress, adapter) there: hostPath volumes"),
]

TRAINER_IMAGE = "ghcr.io/finetune-operator/trainer:0.1.0"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in json_format_records(60)))
    return path


NO_EVALUATION = "evaluation: {enabled: false}\n"
# A cheap but real evaluation: the test split and the general suite, short answers.
LIGHT_EVALUATION = "evaluation: {maxNewTokens: 16, sampleCount: 5, suites: {safety: false, pii: false, bias: false}}\n"


def manifest(name, model, data, output, *, max_steps=12, gpus=1, extra=NO_EVALUATION, checkpoint_every=4):
    return textwrap.dedent(
        f"""
        apiVersion: finetune.ai/v1alpha1
        kind: FineTuneJob
        metadata: {{name: {name}}}
        spec:
          baseModel: {{uri: {model}}}
          dataset: {{uri: {data}, format: instruction}}
          hyperparameters: {{maxSteps: {max_steps}, batchSize: 4, learningRate: 0.001, maxSeqLength: 96, evalSteps: {checkpoint_every}}}
          checkpointing: {{intervalSteps: {checkpoint_every}}}
          earlyStopping: {{enabled: false}}
          resources: {{gpusPerNode: {gpus}}}
          output: {{uri: {output}}}
        """
    ) + textwrap.indent(textwrap.dedent(extra), "  ")


def condition(status, type):
    return next((c for c in status.get("conditions") or [] if c["type"] == type), None)


def ftj(cluster, namespace, name):
    return cluster.get("finetunejob", name, namespace)


def run_dir(cluster, namespace, name) -> Path:
    """The run's own output directory, <spec.output.uri>/<name>-<uid>, as its status reports it."""
    uri = wait_for(lambda: (ftj(cluster, namespace, name).get("status") or {}).get("outputUri"), 60,
                   f"{name}'s output location in its status")
    return Path(uri)


def phase(cluster, namespace, name):
    return (ftj(cluster, namespace, name).get("status") or {}).get("phase")


def jobs(cluster, namespace, name):
    return cluster.list("jobs", namespace, selector=f"finetune.ai/finetunejob={name}")


def events_of(cluster, namespace, name):
    return [
        e
        for e in cluster.list("events", namespace)
        if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == "FineTuneJob"
    ]


def test_apply_trains_to_succeeded_with_progress_and_adapter(cluster, namespace, operator, tiny_model, dataset, tmp_path):
    output = tmp_path / "out"
    cluster.apply(manifest("tiny-sft", tiny_model, dataset, output, max_steps=120, extra=LIGHT_EVALUATION), namespace)

    percents = set()

    def finished():
        status = ftj(cluster, namespace, "tiny-sft").get("status") or {}
        if (status.get("progress") or {}).get("percent") is not None:
            percents.add(status["progress"]["percent"])
        return status.get("phase") in ("Succeeded", "Failed") and status

    status = wait_for(finished, 300, "tiny-sft to finish")
    assert status["phase"] == "Succeeded", status.get("message")
    # Progress was seen rising in status while it trained, not only at the end.
    assert len([p for p in percents if p < 100]) >= 1, percents
    assert status["progress"]["percent"] == 100
    assert status["progress"]["step"] == 120
    # The evaluator reported its progress too, without overwriting training's (above).
    evaluation = status["evaluationProgress"]
    assert evaluation["promptsDone"] == evaluation["promptsTotal"] > 0 and evaluation["model"] == "candidate"
    assert status["dataReport"]["splits"]["train"] > 0
    assert status["dataReport"]["digest"]
    assert status["artifact"]["digest"].startswith("sha256:")
    adapter = Path(status["artifact"]["uri"].removeprefix("file://"))
    assert (adapter / "adapter_config.json").exists(), adapter
    # The model card's picture, beside the artifact (outside its digest), linked from the card.
    assert (adapter.parent / "model-card.png").read_bytes().startswith(b"\x89PNG")
    assert status["gpuHours"] > 0
    for cond_type in ("Accepted", "DataReady", "Trained", "Evaluated", "Succeeded"):
        assert condition(status, cond_type)["status"] == "True", cond_type
    reasons = {e["reason"] for e in events_of(cluster, namespace, "tiny-sft")}
    assert {"Accepted", "Preparing", "Training", "Evaluating", "Registered", "Succeeded"} <= reasons
    # The real evaluation ran and its verdict is registered (a random tiny model is Rejected).
    mv = cluster.get("modelversion", status["modelVersion"], namespace)
    assert mv["spec"]["evaluation"]["metrics"]["generalScore"] is not None
    assert set(mv["spec"]["evaluation"]["baseMetrics"]) >= {"formatCompliance", "generalScore"}
    assert condition(status, "GatesPassed") is not None
    card = cluster.get("configmap", f"{status['modelVersion']}-model-card", namespace)["data"]["README.md"]
    assert f"]({status['artifact']['uri'].rsplit('/', 1)[0]}/model-card.png)" in card
    # Exactly the two Jobs, each owned by the FineTuneJob.
    names = sorted(j["metadata"]["name"] for j in jobs(cluster, namespace, "tiny-sft"))
    assert names == ["tiny-sft-eval-1", "tiny-sft-prepare", "tiny-sft-train"]
    # The trainer's ServiceAccount may patch its progress ConfigMap and nothing else.
    sa = f"system:serviceaccount:{namespace}:tiny-sft-trainer"
    can = lambda *a: cluster.kubectl("auth", "can-i", *a, "-n", namespace, f"--as={sa}", check=False).stdout.strip()
    assert can("patch", "configmap/tiny-sft-progress") == "yes"
    assert can("patch", "configmap/tiny-sft-config") == "no"
    assert can("list", "pods") == "no"


def test_data_error_fails_with_file_and_line(cluster, namespace, operator, tiny_model, tmp_path):
    data = tmp_path / "broken.jsonl"
    lines = [json.dumps(r) for r in json_format_records(10)]
    lines[6] = "{this is not json"
    data.write_text("\n".join(lines) + "\n")
    cluster.apply(manifest("broken-data", tiny_model, data, tmp_path / "out"), namespace)

    status = wait_for(
        lambda: (s := ftj(cluster, namespace, "broken-data").get("status") or {}).get("phase") == "Failed" and s,
        120,
        "broken-data to fail",
    )
    assert f"{data}: line 7" in status["message"], status["message"]
    assert condition(status, "DataReady")["reason"] == "DataPreparationFailed"
    # Failing fast: a data error is not retried, and no training Job is created.
    assert [j["metadata"]["name"] for j in jobs(cluster, namespace, "broken-data")] == ["broken-data-prepare"]
    assert not (tmp_path / "out" / "data" / "train.jsonl").exists()


def test_too_many_gpus_is_pending_unschedulable(cluster, namespace, operator, tiny_model, dataset, tmp_path):
    most = max(int(n["status"]["allocatable"]["nvidia.com/gpu"]) for n in cluster.list("nodes"))
    cluster.apply(manifest("greedy", tiny_model, dataset, tmp_path / "out", gpus=most + 1), namespace)
    status = wait_for(
        lambda: (s := ftj(cluster, namespace, "greedy").get("status") or {}).get("phase") == "Pending"
        and condition(s, "Succeeded")["reason"] == "Unschedulable"
        and s,
        180,
        "greedy to be Pending as unschedulable",
    )
    assert "Insufficient nvidia.com/gpu" in status["message"]


def test_trainer_pod_deleted_mid_run_resumes_from_checkpoint(cluster, namespace, operator, tiny_model, dataset, tmp_path):
    output = tmp_path / "out"
    # Long enough that the trainer is certainly still running when its Pod is deleted.
    cluster.apply(manifest("resumable", tiny_model, dataset, output, max_steps=160, checkpoint_every=10), namespace)
    run = run_dir(cluster, namespace, "resumable")
    assert run.parent == output and run.name.startswith("resumable-")
    checkpoints = run / "checkpoints"
    wait_for(
        lambda: any(checkpoints.glob("checkpoint-*")) and (ftj(cluster, namespace, "resumable")["status"].get("progress") or {}).get("step", 0) >= 10,
        240,
        "a checkpoint and step >= 10",
    )
    first = [p for p in cluster.list("pods", namespace, selector="job-name=resumable-train") if p["status"].get("phase") == "Running"]
    assert first, "the training Pod should be running"
    cluster.kubectl("delete", "pod", first[0]["metadata"]["name"], "-n", namespace, "--wait=true", "--timeout=120s")

    status = wait_for(
        lambda: (s := ftj(cluster, namespace, "resumable").get("status") or {}).get("phase") in ("Succeeded", "Failed") and s,
        300,
        "resumable to finish after the restart",
    )
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["restarts"] >= 1
    assert status["progress"]["step"] == 160
    progress = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    steps = [p["step"] for p in progress if p.get("event") == "progress"]
    # The second attempt continued from a checkpoint, not from step 0.
    restart_at = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[restart_at] > 1, steps
    assert "TrainerRestarted" in {e["reason"] for e in events_of(cluster, namespace, "resumable")}


def test_suspend_then_resume(cluster, namespace, operator, tiny_model, dataset, tmp_path):
    cluster.apply(manifest("pausable", tiny_model, dataset, tmp_path / "out", max_steps=12, extra="suspend: true\n" + NO_EVALUATION), namespace)
    wait_for(lambda: phase(cluster, namespace, "pausable") == "Suspended", 60, "pausable to be Suspended")
    assert jobs(cluster, namespace, "pausable") == [], "a suspended job starts nothing"

    cluster.kubectl("patch", "finetunejob", "pausable", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for(lambda: phase(cluster, namespace, "pausable") in ("Preparing", "Training"), 60, "pausable to start")
    wait_for(lambda: phase(cluster, namespace, "pausable") == "Training", 120, "pausable to train")
    cluster.kubectl("patch", "finetunejob", "pausable", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for(
        lambda: phase(cluster, namespace, "pausable") == "Suspended"
        and cluster.get("job", "pausable-train", namespace)["spec"].get("suspend") is True,
        60,
        "the training Job to be suspended",
    )
    wait_for(lambda: not [p for p in cluster.list("pods", namespace, selector="job-name=pausable-train") if p["status"].get("phase") == "Running"], 120, "training pods stopped")
    cluster.kubectl("patch", "finetunejob", "pausable", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    status = wait_for(
        lambda: (s := ftj(cluster, namespace, "pausable").get("status") or {}).get("phase") in ("Succeeded", "Failed") and s,
        300,
        "pausable to finish",
    )
    assert status["phase"] == "Succeeded", status.get("message")
    reasons = [e["reason"] for e in events_of(cluster, namespace, "pausable")]
    assert "Suspended" in reasons


def test_delete_removes_children_and_keeps_artifacts(cluster, namespace, operator, tiny_model, dataset, tmp_path):
    output = tmp_path / "out"
    cluster.apply(manifest("deleteme", tiny_model, dataset, output, max_steps=6, checkpoint_every=2), namespace)
    wait_for(lambda: phase(cluster, namespace, "deleteme") == "Succeeded", 300, "deleteme to succeed")
    assert any(output.iterdir())
    cluster.kubectl("delete", "finetunejob", "deleteme", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: not jobs(cluster, namespace, "deleteme")
        and not cluster.list("configmaps", namespace, selector="finetune.ai/finetunejob=deleteme"),
        60,
        "children of deleteme to be garbage-collected",
    )
    assert (output / "results.json").exists() or any(output.glob("**/adapter_config.json"))
