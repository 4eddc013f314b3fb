"""A two-node FineTuneJob trains data-parallel on the dev cluster, for real.

The operator renders it as an Indexed Job of two Pods plus a headless Service; each Pod runs
`torchrun --node_rank=<index> --master_addr=<name>-train-0.<name>-train`. The node agent
resolves that name to rank 0's Pod IP (the dev cluster's stand-in for cluster DNS), the Pods'
fake GPUs are no CUDA to torch, so the two ranks train the tiny model with gloo on the CPU,
sharing the output directory (both are processes on this machine) where rank 0 writes the
adapter.
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
    pytest.mark.pod_security("privileged", reason="two real trainer ranks read a tiny model and a dataset from node "
                             "paths and the test reads their adapter there: hostPath volumes"),
]

MAX_STEPS = 4
INDEX = "batch.kubernetes.io/job-completion-index"


@pytest.fixture
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def test_two_nodes_train_data_parallel_to_one_adapter(cluster, namespace, operator, tiny_model, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in json_format_records(40)))
    output = tmp_path / "out"
    cluster.apply(
        textwrap.dedent(
            f"""
            apiVersion: finetune.ai/v1alpha1
            kind: FineTuneJob
            metadata: {{name: duo}}
            spec:
              baseModel: {{uri: {tiny_model}}}
              dataset: {{uri: {data}, format: instruction}}
              hyperparameters: {{maxSteps: {MAX_STEPS}, batchSize: 2, learningRate: 0.001, maxSeqLength: 96}}
              checkpointing: {{intervalSteps: {MAX_STEPS}}}
              earlyStopping: {{enabled: false}}
              resources: {{nodes: 2, gpusPerNode: 1, cpu: 1}}  # one thread per rank on this 2-core machine
              evaluation: {{enabled: false}}
              output: {{uri: {output}}}
            """
        ),
        namespace,
    )

    status = wait_for(
        lambda: (s := cluster.get("finetunejob", "duo", namespace).get("status") or {}).get("phase") in ("Succeeded", "Failed") and s,
        180,
        "duo to finish",
    )
    assert status["phase"] == "Succeeded", status.get("message")

    job = cluster.get("job", "duo-train", namespace)
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["status"]["succeeded"]) == ("Indexed", 2, 2)
    service = cluster.get("service", "duo-train", namespace)
    assert service["spec"]["clusterIP"] == "None"

    pods = {p["metadata"]["annotations"][INDEX]: p for p in cluster.list("pods", namespace, selector="job-name=duo-train")}
    assert sorted(pods) == ["0", "1"]
    events = {}
    for index, pod in pods.items():
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
        log = cluster.pod_log(namespace, pod["metadata"]["name"], "trainer")
        # torchrun was pointed at rank 0's own address, not a name no DNS here would answer.
        assert f"--master_addr={pods['0']['status']['podIP']}" in log.splitlines()[0], log[:2000]
        events[index] = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    joined = {i: [(e["rank"], e["world_size"], e["backend"]) for e in found if e["event"] == "joined"] for i, found in events.items()}
    assert joined == {"0": [(0, 2, "gloo")], "1": [(1, 2, "gloo")]}

    # One adapter, written by rank 0 alone, after the steps asked for (each a step of both ranks).
    finished = {i: [e for e in found if e["event"] == "finished"] for i, found in events.items()}
    assert (len(finished["0"]), len(finished["1"])) == (1, 0), finished
    run = Path(status["outputUri"])  # <spec.output.uri>/<name>-<uid>: the run's own directory
    assert run.parent == output
    results = json.loads((run / "results.json").read_text())
    assert (results["metrics"]["global_step"], results["metrics"]["total_steps"]) == (MAX_STEPS, MAX_STEPS)
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert status["artifact"]["uri"].endswith("/adapter"), status["artifact"]
    assert status["progress"]["step"] == MAX_STEPS
