"""Pod Security "restricted", enforced by the real API server, for every Pod the operator makes.

Every test namespace carries `pod-security.kubernetes.io/enforce=restricted` unless its test
opts out (`pytest.mark.pod_security(level, reason=...)`), so the API server's Pod Security
admission itself refuses anything less; these tests use the default. Every Pod the builders render
(prepare, train, multi-node train, evaluate, cleanup, retention, artifact verify, serving with
its verify init container) is created as a server-side dry run there; a no-op FineTuneJob writing to a claim
then runs its whole pipeline there, its Pods created by the Job controller.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.api.rollout import RolloutSpec
from finetune_operator.builders import finetunejob, modelversion, rollout
from tests.conftest import POD_SECURITY_LABEL, pod_security_level
from tests.helpers import NOOP_TRAINER, WORKSPACE_CLAIM, noop_finetunejob, restricted, wait_for

pytestmark = pytest.mark.cluster

BASE = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
DIGEST = "sha256:" + "ab" * 32
SETTINGS = finetunejob.Settings(artifact_store="pvc://finetune-artifacts")


def rendered_pods(namespace: str) -> dict[str, dict]:
    """Each Pod template the operator renders, by the Pod it becomes."""
    owner = finetunejob.Owner(name="ft", namespace=namespace, uid="uid-1")
    spec = FineTuneJobSpec.model_validate({"baseModel": {"uri": BASE}, "dataset": {"uri": "pvc://data/train.jsonl"}})
    multinode = FineTuneJobSpec.model_validate(
        {"baseModel": {"uri": BASE}, "dataset": {"uri": "pvc://data/train.jsonl"}, "resources": {"nodes": 2}}
    )
    model_version = {
        "metadata": {"name": "chat-v1", "namespace": namespace, "uid": "uid-3"},
        "spec": {"artifact": {"uri": "pvc://finetune-artifacts/ft-uid-1/adapter", "digest": DIGEST}},
    }
    ro_owner = rollout.Owner(name="chat", namespace=namespace, uid="uid-2")

    def serving(**fields) -> RolloutSpec:
        return RolloutSpec.model_validate({"modelName": "chat", "track": "LatestApproved", "serving": fields})

    objects = {
        "prepare": finetunejob.prepare_job(owner, spec, SETTINGS),
        "train": finetunejob.train_job(owner, spec, SETTINGS),
        "train-multinode": finetunejob.train_job(owner, multinode, SETTINGS),
        "evaluate": finetunejob.eval_job(owner, spec, SETTINGS),
        "cleanup": finetunejob.cleanup_job(owner, spec, SETTINGS),
        "retention": modelversion.artifact_cleanup_job(model_version, NOOP_TRAINER),
        "verify": modelversion.verify_job(model_version, NOOP_TRAINER),
        "serving-vllm": rollout.deployment(ro_owner, serving(), rollout.ServedVersion("v1", BASE, "s3://m/chat/v1"), 1),
        "serving-verified": rollout.deployment(
            ro_owner, serving(type="custom", image="srv"),
            rollout.ServedVersion("v1", BASE, "pvc://models/chat/v1", "adapter", DIGEST), 1, verifier_image=NOOP_TRAINER,
        ),
    }
    return {name: obj["spec"]["template"] for name, obj in objects.items()}


def as_pod(name: str, template: dict) -> dict:
    pod_spec = copy.deepcopy(template["spec"])
    pod_spec.pop("serviceAccountName", None)  # the ServiceAccount admission plugin wants it to exist
    pod_spec.pop("subdomain", None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": template.get("metadata", {}).get("labels", {})},
            "spec": pod_spec}


def test_a_default_test_namespace_enforces_restricted(cluster, namespace):
    """No marker: the namespace enforces, warns and audits "restricted", and has its claim."""
    labels = cluster.get("namespace", namespace)["metadata"]["labels"]
    assert labels[f"{POD_SECURITY_LABEL}/enforce"] == "restricted"
    assert labels[f"{POD_SECURITY_LABEL}/warn"] == "restricted"
    assert labels[f"{POD_SECURITY_LABEL}/audit"] == "restricted"
    assert cluster.get("persistentvolumeclaim", WORKSPACE_CLAIM, namespace)["metadata"]["name"] == WORKSPACE_CLAIM


def test_opting_out_of_restricted_needs_a_reason():
    assert pod_security_level(None) == "restricted"
    assert pod_security_level(pytest.mark.pod_security("restricted").mark) == "restricted"
    assert pod_security_level(pytest.mark.pod_security("privileged", reason="a hostPath volume").mark) == "privileged"
    with pytest.raises(pytest.UsageError, match='needs reason='):
        pod_security_level(pytest.mark.pod_security("baseline").mark)


def test_the_api_server_refuses_a_pod_below_restricted(cluster, namespace):
    """The enforcement is live in a default test namespace: a Pod with no securityContext is
    refused, naming the level, and so is one with a hostPath volume; the same Pod with the
    restricted securityContext is admitted."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
           "spec": {"containers": [{"name": "c", "image": NOOP_TRAINER}]}}
    result = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted' in result.stderr, result.stderr
    admitted = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=restricted(json.dumps(pod)),
                               check=False)
    assert admitted.returncode == 0 and "Warning" not in admitted.stderr, admitted.stderr
    host_path = yaml.safe_load(restricted(json.dumps(pod)))
    host_path["spec"]["volumes"] = [{"name": "node", "hostPath": {"path": "/tmp"}}]
    result = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(host_path), check=False)
    assert result.returncode != 0 and 'restricted volume type "hostPath"' in result.stderr, result.stderr


@pytest.mark.parametrize("pod", list(rendered_pods("x")), ids=list(rendered_pods("x")))
def test_every_rendered_pod_is_admitted_under_restricted(cluster, namespace, pod):
    template = rendered_pods(namespace)[pod]
    result = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-",
                             input=json.dumps(as_pod(pod, template)), check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_a_pipeline_runs_in_a_restricted_namespace(cluster, namespace, operator):
    """The Job controller creates the no-op job's Pods there, and the job succeeds."""
    name = "restricted"
    manifest = noop_finetunejob(name, output={})  # the operator's artifact store, a claim
    cluster.apply(manifest, namespace)

    def phase():
        return (cluster.get("finetunejob", name, namespace).get("status") or {}).get("phase")

    try:
        wait_for(lambda: phase() in ("Succeeded", "Failed"), 240, f"{name} to finish")
    except AssertionError as timeout:
        pods = [(p["metadata"]["name"], p["status"]) for p in cluster.list("pods", namespace)]
        raise AssertionError(f"{timeout}\nPods: {pods}\nEvents: {[e['message'] for e in cluster.list('events', namespace)]}")
    events = cluster.list("events", namespace)
    refused = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert refused == []
    assert phase() == "Succeeded", cluster.get("finetunejob", name, namespace).get("status")
    pods = cluster.list("pods", namespace, selector=f"finetune.ai/finetunejob={name}")
    assert {p["metadata"]["labels"]["finetune.ai/stage"] for p in pods} >= {"prepare", "train"}
    for pod in pods:
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
