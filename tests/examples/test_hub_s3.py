"""examples/finetunejob-hub-s3.yaml, applied as written, against a local Hub mirror and a local S3
server: the storage a production cluster uses, on the dev cluster.

The operator is restarted online with hubEndpoint at the Hub double (hack/devcluster/hubserver.py
serving SmolLM2-135M-Instruct, the model the example names) and a fresh node-path model cache, and
with s3Endpoint at SeaweedFS's S3 gateway. The test puts only what the example's header asks a user
to put in place: the Secret `earnings-s3` and the dataset in `s3://finetune-examples/earnings/`.
The job must succeed, with the model downloaded from the mirror once, the commit the Hub resolved in
the ModelVersion's lineage, and the adapter in the bucket under the run's prefix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devcluster.hubserver import HubServer
from tests.helpers import environ, wait_for
from tests.s3 import s3_server  # noqa: F401 - the fixture

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finetunejob-hub-s3.yaml"
DATA = Path(__file__).resolve().parents[2] / "examples" / "data" / "earnings.jsonl"
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _restart(operator, cluster, settings: dict[str, str | None]) -> None:
    with environ(settings):
        operator.restart(cluster.kubeconfig)


@pytest.fixture
def mirror() -> Iterator[HubServer]:
    from devcluster.demo import materialize_model

    with HubServer({REPO: materialize_model()}) as server:
        yield server


@pytest.fixture
def online_operator(operator, cluster, hub, mirror, s3_server, tmp_path):  # noqa: F811
    cache = tmp_path / "model-cache"
    cache.mkdir()
    _restart(operator, cluster, {"FINETUNE_HUB_ENDPOINT": mirror.url, "FINETUNE_MODEL_CACHE": str(cache),
                                 "FINETUNE_HUB_OFFLINE": "false", "FINETUNE_S3_ENDPOINT": s3_server.endpoint})
    yield operator
    # Back to the examples' offline hub, as the session's operator started.
    _restart(operator, cluster, {"FINETUNE_HUB_ENDPOINT": None, "FINETUNE_MODEL_CACHE": hub,
                                 "FINETUNE_HUB_OFFLINE": "true", "FINETUNE_S3_ENDPOINT": None})


def test_hub_and_s3_example_runs_as_written(cluster, namespace, online_operator, mirror, s3_server):  # noqa: F811
    manifest = yaml.safe_load(EXAMPLE.read_text())
    spec = manifest["spec"]
    bucket, _, key = spec["dataset"]["uri"].removeprefix("s3://").partition("/")
    secret = spec["dataset"]["credentialsSecretRef"]["name"]
    fs = s3_server.filesystem()
    fs.mkdir(bucket)
    fs.put(str(DATA), f"{bucket}/{key}")
    cluster.kubectl("create", "secret", "generic", secret, "-n", namespace,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_server.access_key}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_server.secret_key}")

    started = time.monotonic()
    cluster.kubectl("apply", "-f", str(EXAMPLE), "-n", namespace)
    name = manifest["metadata"]["name"]

    def finished():
        status = cluster.get("finetunejob", name, namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(finished, 900, f"FineTuneJob {name} to finish")
    print(f"\n{EXAMPLE.name}: {status['phase']} after {time.monotonic() - started:.0f} s")
    assert status["phase"] == "Succeeded", json.dumps(status.get("conditions"), indent=1)

    # The model came from the mirror, each file once, and the resolved commit is recorded.
    gets = mirror.file_gets(REPO)
    assert gets and set(gets.values()) == {1}, gets
    assert status["artifact"]["baseModelCommit"] == mirror.commit(REPO)
    mv = cluster.get("modelversion", status["modelVersion"], namespace)
    assert mv["spec"]["lineage"]["baseModelCommit"] == mirror.commit(REPO)
    # The adapter is in the bucket, under the run's own prefix of the example's output.
    artifact = mv["spec"]["artifact"]["uri"]
    assert artifact.startswith(spec["output"]["uri"] + "/"), artifact
    fs.invalidate_cache()
    assert any(k.endswith("adapter_model.safetensors") for k in fs.find(artifact.removeprefix("s3://")))
