"""A ModelVersion's bytes are checked when it is registered, and Events survive a kill, on the dev cluster.

Registration: the operator runs a verify Job (the trainer's `verify-artifact`) on each new version;
intact bytes -> ArtifactVerified=True and Approved; tampered or missing bytes ->
ArtifactVerified=False, Rejected, a Warning Event naming the digest problem (that such a version is
never served is tests/integration/test_trust_rollout.py's).

Events: each transition's Event has a name derived from the object and the transition and is
created, never updated, so a reconcile re-run after a kill (same old status, same decision)
finds its Event there and does not record it twice, and a later transition gets its own.
"""

from __future__ import annotations

import json

import pytest
import yaml

from devcluster import canary
from finetune_operator.k8s import client as k8s_client
from finetune_operator.k8s import events
from finetune_trainer.artifacts import digest_files
from tests.helpers import WORKSPACE_CLAIM, wait_for

pytestmark = [pytest.mark.cluster]

MODEL = "reg"
PASSING = {"formatCompliance": 1.0}


def register(cluster, namespace: str, version: str, digest: str) -> None:
    """Registers `version` with its artifact at pvc://<the namespace's claim>/<version>."""
    artifact = f"pvc://{WORKSPACE_CLAIM}/{version}"
    manifest = canary.model_version(MODEL, version, artifact, "/models/base", metrics=PASSING, digest=digest)
    cluster.apply(yaml.safe_dump(manifest), namespace)


def condition(cluster, namespace: str, version: str, type_: str) -> dict | None:
    mv = cluster.get("modelversion", f"{MODEL}-{version}", namespace)
    return next((c for c in (mv.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def phase(cluster, namespace: str, version: str) -> str | None:
    return (cluster.get("modelversion", f"{MODEL}-{version}", namespace).get("status") or {}).get("phase")


def test_registration_checks_the_bytes_against_the_digest(cluster, operator, namespace):
    intact = cluster.claim_dir(namespace) / "v1"
    intact.mkdir(parents=True)
    (intact / "adapter_model.safetensors").write_bytes(b"weights of v1")
    tampered = cluster.claim_dir(namespace) / "v2"
    tampered.mkdir()
    (tampered / "adapter_model.safetensors").write_bytes(b"weights of v2")
    registered_digest = digest_files(tampered)
    (tampered / "adapter_model.safetensors").write_bytes(b"other bytes")  # changed after the digest was taken

    register(cluster, namespace, "v1", digest_files(intact))
    register(cluster, namespace, "v2", registered_digest)
    register(cluster, namespace, "v3", registered_digest)  # nothing at pvc://workspace/v3

    wait_for(lambda: condition(cluster, namespace, "v1", "ArtifactVerified"), 120, "v1 checked")
    verified = condition(cluster, namespace, "v1", "ArtifactVerified")
    assert (verified["status"], verified["reason"]) == ("True", "DigestMatches"), verified
    wait_for(lambda: phase(cluster, namespace, "v1") == "Approved", 30, "v1 Approved once its bytes are checked")

    for version, words in (("v2", "digest mismatch"), ("v3", "does not exist")):
        wait_for(lambda v=version: condition(cluster, namespace, v, "ArtifactVerified"), 120, f"{version} checked")
        verified = condition(cluster, namespace, version, "ArtifactVerified")
        assert (verified["status"], verified["reason"]) == ("False", "ArtifactDigestMismatch"), verified
        assert words in verified["message"], verified
        wait_for(lambda v=version: phase(cluster, namespace, v) == "Rejected", 30, f"{version} Rejected")
        ready = condition(cluster, namespace, version, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ArtifactUnverified") and words in ready["message"], ready

    # Each check is one Job the API server admitted, under its own field manager's condition.
    jobs = sorted(j["metadata"]["name"] for j in cluster.list("jobs", namespace, selector="finetune.ai/verify-of"))
    assert jobs == [f"{MODEL}-v1-verify", f"{MODEL}-v2-verify", f"{MODEL}-v3-verify"]
    mv = json.loads(cluster.kubectl("get", "modelversion", f"{MODEL}-v2", "-n", namespace, "--show-managed-fields",
                                    "-o", "json").stdout)
    managers = {m["manager"] for m in mv["metadata"]["managedFields"] if m.get("subresource") == "status"}
    assert "finetune-operator-verify" in managers, managers
    warnings = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                               f"involvedObject.name={MODEL}-v2,reason=ArtifactDigestMismatch", "-o", "name").stdout
    assert len(warnings.split()) == 1, warnings


@pytest.fixture
def kube(cluster, monkeypatch):
    monkeypatch.setattr(k8s_client, "_client", cluster.api_client())  # the operator's k8s layer, on this cluster
    return cluster


def test_a_reconcile_rerun_after_a_kill_records_each_transition_once(kube, namespace):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "subject", "namespace": namespace}}
    created = k8s_client.core().create_namespaced_config_map(namespace, body)
    body["metadata"]["uid"] = created.metadata.uid
    training = {"phase": "Training", "observedGeneration": 1}

    def reconcile(old_status: dict, reason: str, message: str) -> bool:
        # What a handler does: the transition's Event first, then (not here: killed) the status.
        return events.record(body, "Normal", reason, message, key=events.transition_key(old_status, message))

    assert reconcile(training, "Evaluating", "evaluating the model") is True
    # Killed before the status patch: the restarted operator decides the same from the same status.
    assert reconcile(training, "Evaluating", "evaluating the model") is False
    assert reconcile(dict(training), "Evaluating", "evaluating the model") is False
    # The next transition starts from another status: its own Event, even with the same text.
    assert reconcile({"phase": "Evaluating", "observedGeneration": 1}, "Evaluating", "evaluating the model") is True

    def recorded() -> list:
        return [e for e in k8s_client.core().list_namespaced_event(namespace).items
                if e.involved_object.uid == created.metadata.uid]

    wait_for(lambda: len(recorded()) == 2, 10, "both Events listed")
    assert sorted((e.reason, e.count) for e in recorded()) == [("Evaluating", 1), ("Evaluating", 1)]
