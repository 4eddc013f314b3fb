"""Nothing registered is lost, and nothing a manifest names can reach outside what it may touch.

On the dev cluster with the real operator and the no-op trainer (which writes a small adapter
into its output in the namespace's claim, the way the real trainer does; the tests read and
plant files in the claim's directory on this machine):

* deleting a Succeeded FineTuneJob with deleteArtifactsOnDelete removes its scratch
  (checkpoints, prepared data, progress.jsonl) and keeps the adapter its ModelVersion references;
* a FineTuneJob deleted and applied again under the same name writes to a location of its own,
  so the first run's registered adapter stays byte for byte;
* bad names, versions, locations and oversized inline datasets are refused by the API server
  at `kubectl apply`, naming the field; a node path outside the operator's allowed prefixes
  becomes InvalidSpec naming spec.output.uri and the setting;
* deleting a namespace holding FineTuneJobs (running, finished, with cleanup asked) completes.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from tests.helpers import NOOP_OUTPUT_ROOT, NOOP_TRAINER, condition, noop_finetunejob, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SCRATCH = ("checkpoints", "data", "progress.jsonl")


def finished(cluster, namespace, name):
    status = cluster.get("finetunejob", name, namespace).get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def run_dir(cluster, namespace: str, status: dict) -> Path:
    """The run's own output directory, as the FineTuneJob's status reports it, on this machine."""
    return cluster.local_path(namespace, status["outputUri"])


def gone(cluster, kind, name, namespace=None) -> bool:
    args = ["get", kind, name] + (["-n", namespace] if namespace else [])
    result = cluster.kubectl(*args, check=False)
    return result.returncode != 0 and "NotFound" in result.stderr


def test_cleanup_keeps_the_registered_adapter_and_removes_the_scratch(cluster, namespace, operator):
    name = "cleanup-keeps"
    cluster.apply(noop_finetunejob(name, model_name="keeper", deleteArtifactsOnDelete=True), namespace)
    status = wait_for(lambda: finished(cluster, namespace, name), 180, f"{name} to finish")
    assert status["phase"] == "Succeeded", status
    run = run_dir(cluster, namespace, status)
    mv = cluster.get("modelversion", status["modelVersion"], namespace)
    adapter = cluster.local_path(namespace, mv["spec"]["artifact"]["uri"])
    assert adapter == run / "adapter" and (adapter / "adapter_config.json").is_file(), (adapter, status)
    # The no-op trainer writes no checkpoints or prepared data when fast: put some there, as the
    # real trainer leaves them, plus a neighbour that is not this run's.
    (run / "checkpoints" / "checkpoint-4").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (run / "data").mkdir(exist_ok=True)
    (run / "data" / "train.jsonl").write_text("{}\n")
    (run / "progress.jsonl").touch()
    neighbour = run.parent / "someone-else"
    (neighbour / "checkpoints").mkdir(parents=True, exist_ok=True)
    before = {p.relative_to(adapter): p.read_bytes() for p in adapter.rglob("*") if p.is_file()}

    cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=true", "--timeout=60s")
    job = f"{name}-cleanup"
    wait_for(lambda: any(c["type"] == "Complete" and c["status"] == "True"
                         for c in (cluster.get("job", job, namespace).get("status") or {}).get("conditions") or []),
             120, f"the cleanup Job {job} to complete")

    for entry in SCRATCH:
        assert not (run / entry).exists(), f"{entry} was not removed from {run}"
    after = {p.relative_to(adapter): p.read_bytes() for p in adapter.rglob("*") if p.is_file()}
    assert after == before, "the registered adapter changed"
    assert (neighbour / "checkpoints").is_dir(), "the cleanup reached outside its run's directory"
    assert cluster.get("modelversion", status["modelVersion"], namespace)["spec"]["artifact"]["uri"] == mv["spec"]["artifact"]["uri"]


def test_a_recreated_job_never_shares_the_first_runs_location(cluster, namespace, operator):
    name = "same-name"
    cluster.apply(noop_finetunejob(name, model_name="reused"), namespace)
    first = wait_for(lambda: finished(cluster, namespace, name), 180, "the first run to finish")
    assert first["phase"] == "Succeeded", first
    first_mv = cluster.get("modelversion", first["modelVersion"], namespace)
    first_adapter = cluster.local_path(namespace, first_mv["spec"]["artifact"]["uri"])
    first_bytes = {p.name: p.read_bytes() for p in first_adapter.iterdir()}
    first_uid = cluster.get("finetunejob", name, namespace)["metadata"]["uid"]

    cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=true", "--timeout=60s")
    # Same name, different settings (so the adapter bytes would differ if it were overwritten).
    cluster.apply(noop_finetunejob(name, model_name="reused", adaptation={"rank": 4}), namespace)
    second = wait_for(
        lambda: (s := finished(cluster, namespace, name)) and cluster.get("finetunejob", name, namespace)["metadata"]["uid"] != first_uid and s,
        180, "the second run to finish",
    )
    assert second["phase"] == "Succeeded", second
    assert second["outputUri"] != first["outputUri"]
    assert run_dir(cluster, namespace, first).parent == run_dir(cluster, namespace, second).parent \
        == cluster.local_path(namespace, f"{NOOP_OUTPUT_ROOT}/{name}")
    second_mv = cluster.get("modelversion", second["modelVersion"], namespace)
    assert second_mv["metadata"]["name"] != first_mv["metadata"]["name"]
    assert second_mv["spec"]["artifact"]["uri"] != first_mv["spec"]["artifact"]["uri"]
    assert {p.name: p.read_bytes() for p in first_adapter.iterdir()} == first_bytes, "the first adapter was overwritten"


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        pytest.param("x" * 54, {}, "metadata.name must be at most 53 characters", id="name-too-long-for-its-children"),
        pytest.param("9lives", {}, "metadata.name must start with a lowercase letter", id="name-not-a-service-name"),
        pytest.param("a" * 46, {}, "the ModelVersion name <model>-<version> would be longer than 52", id="derived-version-name-too-long"),
        pytest.param("bad-version", {"output": {"uri": f"{NOOP_OUTPUT_ROOT}/x", "version": "V1"}}, "spec.output.version",
                     id="version-not-a-dns-label"),
        pytest.param("claim-dot", {"output": {"uri": "pvc://store/."}}, "must not contain '.' or '..' segments",
                     id="output-claim-dot"),
        pytest.param("claim-root", {"output": {"uri": "pvc://store"}}, "is the root of a claim", id="output-claim-root"),
        pytest.param("escapes", {"output": {"uri": "/tmp/finetune-noop/../../var/lib/kubelet"}},
                     "must not contain '.' or '..' segments", id="output-escapes"),
    ],
)
def test_admission_refuses_bad_names_versions_and_locations(cluster, namespace, name, spec, expected):
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=noop_finetunejob(name, **spec), check=False)
    assert result.returncode != 0, f"accepted:\n{result.stdout}"
    assert expected in result.stderr, result.stderr


def test_admission_refuses_a_modelversion_at_a_claim_root(cluster, namespace):
    mv = {
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "store-v1"},
        "spec": {
            "modelName": "store",
            "version": "v1",
            "baseModel": {"uri": "/models/base"},
            "artifact": {"uri": "pvc://store/.", "digest": "sha256:" + "0" * 64},
        },
    }
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(mv), check=False)
    assert result.returncode != 0 and "spec.artifact.uri" in result.stderr, result.stderr


def test_admission_refuses_an_oversized_inline_dataset(cluster, namespace):
    records = [{"instruction": f"summarize ticket {i}: " + "printer jams " * 30, "output": "hardware"} for i in range(400)]
    manifest = yaml.safe_load(noop_finetunejob("too-much-inline"))
    manifest["spec"]["dataset"] = {"inline": records}
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0, "an inline dataset over 128 KiB was accepted"
    assert "spec.dataset.inline" in result.stderr and "spec.dataset.uri" in result.stderr, result.stderr
    # A small one passes.
    manifest["spec"]["dataset"] = {"inline": records[:20]}
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def test_a_node_path_outside_the_allowed_prefixes_is_invalid_spec(cluster, namespace, operator):
    name = "kubelet-dir"
    outside = f"/var/tmp/finetune-not-allowed-{uuid.uuid4().hex[:6]}"
    cluster.apply(noop_finetunejob(name, output={"uri": outside}), namespace)
    accepted = wait_for(lambda: condition(cluster.get("finetunejob", name, namespace), "Accepted"), 60, "a verdict on the spec")
    assert accepted["status"] == "False" and accepted["reason"] == "InvalidSpec", accepted
    assert "spec.output.uri" in accepted["message"] and "FINETUNE_ALLOWED_HOST_PATHS" in accepted["message"], accepted
    assert not cluster.list("job", namespace, selector=f"finetune.ai/finetunejob={name}"), "work started"
    assert not Path(outside).exists()


def test_deleting_a_namespace_with_finetunejobs_completes(cluster, operator):
    namespace = f"trust-ns-delete-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(namespace)
    cluster.apply(noop_finetunejob("done", deleteArtifactsOnDelete=True), namespace)
    wait_for(lambda: finished(cluster, namespace, "done"), 180, "done to finish")
    cluster.apply(noop_finetunejob("running", image=f"{NOOP_TRAINER}:slow", deleteArtifactsOnDelete=True), namespace)
    wait_for(lambda: (cluster.get("finetunejob", "running", namespace).get("status") or {}).get("phase") == "Training",
             120, "running to train")
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    wait_for(lambda: gone(cluster, "namespace", namespace), 180, f"namespace {namespace} to be deleted")
