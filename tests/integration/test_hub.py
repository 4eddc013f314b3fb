"""hf:// base models downloaded through the Hub file API on the dev cluster.

The operator runs online (hubOffline off) with hubEndpoint at the local Hub double
(hack/devcluster/hubserver.py, on 127.0.0.1, token required) and a node-path model cache; the
real trainer loads the tiny model as `hf://test-org/tiny@v1`. A first FineTuneJob downloads each
file once and its ModelVersion's lineage names the commit v1 resolved to; a second reuses the
cache (no file fetched again); a token the Hub refuses fails the job naming the Secret key.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.hubserver import HubServer
from finetune_trainer.testing import json_format_records, make_tiny_model
from tests.helpers import environ, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.pod_security("privileged", reason="the model cache under test is a node path (FINETUNE_MODEL_CACHE) the "
                             "test inspects, and the real trainer reads its dataset from a node path: hostPath volumes"),
]

REPO = "test-org/tiny"
TOKEN = "hf_integration_token"


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[HubServer]:
    model = make_tiny_model(tmp_path_factory.mktemp("hub-model") / "tiny")
    with HubServer({REPO: model}, refs=("v1",), token=TOKEN) as server:
        yield server


@pytest.fixture
def hub_operator(operator, cluster, hub, tmp_path):
    """The test operator restarted online, with the double as its Hub and a node-path model cache;
    restarted with its usual settings afterwards."""
    cache = tmp_path / "model-cache"
    cache.mkdir()
    settings = {"FINETUNE_HUB_ENDPOINT": hub.url, "FINETUNE_MODEL_CACHE": str(cache), "FINETUNE_HUB_OFFLINE": "false"}
    with environ(settings):
        operator.restart(cluster.kubeconfig)
    yield operator
    operator.restart(cluster.kubeconfig)


def manifest(name: str, data: Path, output: Path, secret: str) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: finetune.ai/v1alpha1
        kind: FineTuneJob
        metadata: {{name: {name}}}
        spec:
          baseModel: {{uri: "hf://{REPO}", revision: v1, tokenSecretRef: {{name: {secret}}}}}
          dataset: {{uri: {data}, format: instruction}}
          hyperparameters: {{maxSteps: 2, batchSize: 4, learningRate: 0.001, maxSeqLength: 64, evalSteps: 2}}
          earlyStopping: {{enabled: false}}
          evaluation: {{enabled: false}}
          resources: {{gpusPerNode: 1}}
          output: {{uri: {output}}}
        """
    )


def secret(name: str, token: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"token": token}})


def finished(cluster, namespace, name):
    status = cluster.get("finetunejob", name, namespace).get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def test_hf_models_download_once_record_their_commit_and_refuse_a_bad_token(cluster, namespace, hub_operator, hub, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in json_format_records(24)))
    cluster.apply(secret("hub-token", TOKEN), namespace)
    cluster.apply(secret("stale-token", "hf_revoked"), namespace)
    files = {name for name in hub.repos[REPO].files}
    commit = hub.commit(REPO)

    cluster.apply(manifest("first", data, tmp_path / "out", "hub-token"), namespace)
    status = wait_for(lambda: finished(cluster, namespace, "first"), 300, "the first FineTuneJob to finish")
    assert status["phase"] == "Succeeded", status.get("message")
    # Prepare and train both loaded the model through the Hub API: each file was fetched once.
    assert hub.file_gets(REPO) == {name: 1 for name in files}
    assert status["artifact"]["baseModelCommit"] == commit and status["artifact"]["baseModelFromCache"] is False
    trained = next(c for c in status["conditions"] if c["type"] == "Trained")
    assert f"base model commit {commit[:12]} downloaded from the Hub" in trained["message"]
    version = cluster.get("modelversion", status["modelVersion"], namespace)["spec"]
    assert version["lineage"]["baseModelCommit"] == commit and version["baseModel"]["revision"] == "v1"

    # A second job reuses the cache; a job whose token the Hub refuses fails, naming the Secret key.
    cluster.apply(manifest("second", data, tmp_path / "out", "hub-token"), namespace)
    cluster.apply(manifest("refused", data, tmp_path / "out", "stale-token"), namespace)
    second = wait_for(lambda: finished(cluster, namespace, "second"), 300, "the second FineTuneJob to finish")
    assert second["phase"] == "Succeeded", second.get("message")
    assert second["artifact"] == {**second["artifact"], "baseModelCommit": commit, "baseModelFromCache": True}
    trained = next(c for c in second["conditions"] if c["type"] == "Trained")
    assert f"base model commit {commit[:12]} from the model cache" in trained["message"]
    assert hub.file_gets(REPO) == {name: 1 for name in files}

    refused = wait_for(lambda: finished(cluster, namespace, "refused"), 300, "the refused FineTuneJob to fail")
    assert refused["phase"] == "Failed"
    assert "baseModel.tokenSecretRef stale-token/token" in refused["message"], refused["message"]
    assert hub.unauthorized > 0 and hub.file_gets(REPO) == {name: 1 for name in files}
