"""A FineTuneJob on object storage, against a real S3 server (SeaweedFS) on 127.0.0.1.

The operator runs with s3Endpoint set to the local gateway. One FineTuneJob reads its base
model (the tiny test model, uploaded) and its dataset from the bucket and writes its run there,
each location naming a Secret with the gateway's credentials: the real trainer, run by the node
agent, reads and writes the bucket through s3fs with those credentials only. Then:

* the job Succeeds; the adapter's objects are in the bucket under the run's own prefix;
* the ModelVersion's artifact is the s3:// adapter, with a digest equal to the one computed
  here over the objects downloaded back from the bucket;
* the credentials reached the Pods only as secretKeyRefs, and the secret value is nowhere:
  not in the operator's log, Events, any object's spec or status, ConfigMaps (progress, config,
  model card), `kubectl logs` of the Pods, the node agent's logs, or the objects in the bucket.
"""

from __future__ import annotations

import json
import textwrap
import urllib.request
from pathlib import Path

import pytest

from finetune_trainer.artifacts import digest_files
from finetune_trainer.testing import json_format_records, make_tiny_model
from tests.helpers import wait_for
from tests.leaks import leaks, traces
from tests.s3 import s3_server  # noqa: F401 - the fixture

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SECRET = "s3-credentials"


@pytest.fixture
def s3_operator(operator, cluster, s3_server, monkeypatch):  # noqa: F811
    """The operator restarted with FINETUNE_S3_ENDPOINT pointing at the local gateway, and
    restarted without it afterwards."""
    monkeypatch.setenv("FINETUNE_S3_ENDPOINT", s3_server.endpoint)
    operator.restart(cluster.kubeconfig)
    yield operator
    monkeypatch.delenv("FINETUNE_S3_ENDPOINT")
    operator.restart(cluster.kubeconfig)


def manifest(name: str, bucket: str) -> str:
    ref = f"credentialsSecretRef: {{name: {SECRET}}}"
    return textwrap.dedent(
        f"""
        apiVersion: finetune.ai/v1alpha1
        kind: FineTuneJob
        metadata: {{name: {name}}}
        spec:
          baseModel: {{uri: "s3://{bucket}/models/tiny", {ref}}}
          dataset: {{uri: "s3://{bucket}/data/train.jsonl", format: instruction, {ref}}}
          hyperparameters: {{maxSteps: 4, batchSize: 4, learningRate: 0.001, maxSeqLength: 64, evalSteps: 2}}
          checkpointing: {{intervalSteps: 2}}
          earlyStopping: {{enabled: false}}
          evaluation: {{enabled: false}}
          output: {{uri: "s3://{bucket}/runs", modelName: tiny-s3, {ref}}}
          deleteArtifactsOnDelete: true
        """
    )


def test_a_finetunejob_reads_and_writes_s3_and_the_secret_is_nowhere(cluster, namespace, s3_operator, s3_server,  # noqa: F811
                                                                      tmp_path):
    fs = s3_server.filesystem()
    bucket = s3_server.bucket
    model = make_tiny_model(tmp_path / "tiny")
    fs.put(str(model) + "/", f"{bucket}/models/tiny/", recursive=True)
    fs.pipe(f"{bucket}/data/train.jsonl", "".join(json.dumps(r) + "\n" for r in json_format_records(40)).encode())
    cluster.kubectl("create", "secret", "generic", SECRET, "-n", namespace,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_server.access_key}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_server.secret_key}")

    name = "tiny-s3"
    cluster.apply(manifest(name, bucket), namespace)

    def finished():
        status = cluster.get("finetunejob", name, namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(finished, 420, f"{name} to finish")
    assert status["phase"] == "Succeeded", status.get("message")

    # The run's own prefix in the bucket holds the adapter; the ModelVersion names it.
    run = status["outputUri"]
    assert run.startswith(f"s3://{bucket}/runs/{name}-"), run
    mv = cluster.get("modelversion", status["modelVersion"], namespace)
    artifact = mv["spec"]["artifact"]
    assert artifact["uri"] == f"{run}/adapter", artifact
    fs.invalidate_cache()
    keys = sorted(fs.find(artifact["uri"]))
    assert any(k.endswith("/adapter_config.json") for k in keys), keys
    assert any(k.endswith("/adapter_model.safetensors") for k in keys), keys
    # The registered digest is that of the bytes in the bucket, downloaded back here.
    local = tmp_path / "downloaded"
    fs.get(artifact["uri"].removeprefix("s3://") + "/", str(local) + "/", recursive=True)
    assert artifact["digest"] == digest_files(local) == status["artifact"]["digest"]

    # Credentials went to the Pods only by reference, and only the ones each stage needs.
    jobs = {j["metadata"]["name"]: j for j in cluster.list("jobs", namespace, selector=f"finetune.ai/finetunejob={name}")}
    for job_name in (f"{name}-prepare", f"{name}-train"):
        env = {e["name"]: e for e in jobs[job_name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["AWS_ENDPOINT_URL_S3"]["value"] == s3_server.endpoint
        secret_env = {n: e for n, e in env.items() if n.endswith("AWS_SECRET_ACCESS_KEY")}
        assert secret_env and all(e["valueFrom"]["secretKeyRef"]["name"] == SECRET for e in secret_env.values())
    assert "FINETUNE_OUTPUT_AWS_SECRET_ACCESS_KEY" not in {
        e["name"] for e in jobs[f"{name}-prepare"]["spec"]["template"]["spec"]["containers"][0]["env"]}

    # The leak test: the secret value appears nowhere the run left a trace.
    value = s3_server.secret_key
    places = traces(cluster, namespace, s3_operator.log_path)
    pods = [p["metadata"]["name"] for p in cluster.list("pods", namespace)]
    assert len(pods) >= 2, pods
    assert any("train_loss" in places[f"log file of {p}"] or "step" in places[f"log file of {p}"] for p in pods), \
        "the Pods' logs are empty: the leak check would prove nothing"
    for key in fs.find(f"{bucket}/runs"):
        places[f"s3://{key}"] = fs.cat(key).decode(errors="replace")
    found = leaks(places, value)
    assert not found, f"the secret value appears in: {found}"
    # The Secret's name is what the objects carry.
    assert SECRET in places["finetunejobs"]

    # A Rollout serves the s3:// version: its Pod fetches the base model and the adapter from the
    # bucket (each with its own Secret), verifies the adapter's digest, and answers with it. The
    # version is a Candidate (no evaluation here), so serving it takes the force annotation.
    version = mv["spec"]["version"]
    cluster.apply(textwrap.dedent(f"""
        apiVersion: finetune.ai/v1alpha1
        kind: Rollout
        metadata:
          name: {name}
          annotations: {{finetune.ai/force-version: {version}}}
        spec:
          modelName: {mv["spec"]["modelName"]}
          version: {version}
          analysis: {{none: true}}
          trafficRouter: {{replicaRatio: {{}}}}
          serving:
            type: custom
            image: ghcr.io/finetune-operator/server
            args: ["--model", "$(BASE_MODEL)", "--adapter", "$(MODEL_NAME)=$(ADAPTER_PATH)", "--version",
                   "$(MODEL_VERSION)", "--port", "$(PORT)", "--served-model-name", "base"]
            resources: {{gpus: 0}}
        """), namespace)

    def healthy():
        ro = cluster.get("rollout", name, namespace).get("status") or {}
        return ro if ro.get("phase") == "Healthy" and ro.get("stableVersion") == version else None

    wait_for(healthy, 240, f"the Rollout {name} to serve {version}")
    pod = next(p for p in cluster.list("pods", namespace, selector=f"finetune.ai/rollout={name}")
               if p["status"].get("phase") == "Running")
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["fetch-base-model", "fetch-artifact", "verify-artifact"]
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    request = urllib.request.Request(
        f"http://{pod['status']['podIP']}:{port}/v1/completions",
        data=json.dumps({"model": mv["spec"]["modelName"], "prompt": "Revenue", "max_tokens": 2}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - the Pod's loopback address
        assert response.status == 200 and json.loads(response.read())["choices"]
    served = cluster.kubectl("logs", pod["metadata"]["name"], "-n", namespace, "-c", "fetch-artifact").stdout
    assert "objects fetched" in served and value not in served
    cluster.kubectl("delete", "rollout", name, "-n", namespace, "--wait=true", "--timeout=60s")

    # Deleting the job with deleteArtifactsOnDelete removes the run's scratch objects with the
    # output's credentials, and never the registered adapter nor a neighbour sharing a prefix.
    root = run.removeprefix("s3://")
    for key in ("checkpoints/checkpoint-4/trainer_state.json", "data/train.jsonl", "progress.jsonl"):
        fs.pipe(f"{root}/{key}", b"{}")
    fs.pipe(f"{root}/checkpoints-of-someone-else/keep.bin", b"x")
    fs.pipe(f"{root}-other/checkpoints/keep.bin", b"x")
    adapter_before = {k: fs.cat(k) for k in fs.find(artifact["uri"])}
    cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=true", "--timeout=60s")
    cleanup = f"{name}-cleanup"
    wait_for(lambda: any(c["type"] == "Complete" and c["status"] == "True"
                         for c in (cluster.get("job", cleanup, namespace).get("status") or {}).get("conditions") or []),
             180, f"the cleanup Job {cleanup} to complete")
    fs.invalidate_cache()
    left = {k.removeprefix(root + "/") for k in fs.find(root)}
    assert not {k for k in left if k.startswith(("checkpoints/", "data/")) or k == "progress.jsonl"}, left
    assert "checkpoints-of-someone-else/keep.bin" in left and fs.exists(f"{root}-other/checkpoints/keep.bin")
    assert {k: fs.cat(k) for k in fs.find(artifact["uri"])} == adapter_before, "the registered adapter changed"
    assert cluster.get("modelversion", status["modelVersion"], namespace)["spec"]["artifact"] == artifact
    env = {e["name"]: e for e in cluster.get("job", cleanup, namespace)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FINETUNE_OUTPUT_AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == SECRET
