"""The ModelVersion and Rollout controllers read from watch indexes: projections keep what they read.

Each reader is given index views as kopf passes them (a mapping of key -> values) holding
projections of padded API objects, and must decide as it would from the whole objects.
"""

from __future__ import annotations

import copy
import json

import pytest

from finetune_operator.handlers import modelversion as mv_handler
from finetune_operator.handlers import rollout as rollout_handler
from finetune_operator.k8s import modelcache, serving, watchcache

NS = "team-a"


def padded(obj: dict) -> dict:
    """An object as the API server sends it: managedFields, the operator's bookkeeping annotation."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    meta.setdefault("namespace", NS)
    meta["managedFields"] = [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
    meta.setdefault("annotations", {})["finetune.ai/last-handled-configuration"] = "{" + "x" * 4000 + "}"
    meta["resourceVersion"] = "42"
    return obj


def model_version(name: str, model: str, version: str, phase: str | None = None, conditions: list | None = None) -> dict:
    return padded({
        "apiVersion": "finetune.ai/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"finetune.ai/version-number": version[1:]},
                     "annotations": {"team": "search"}},
        "spec": {"modelName": model, "version": version, "baseModel": {"uri": "hf://org/base"},
                 "artifact": {"uri": f"pvc://models/{name}", "digest": "sha256:" + "0" * 64}},
        "status": {"phase": phase, "conditions": conditions or []},
    })


def views(**indexes: dict) -> dict:
    """kopf's index kwargs: every index of k8s.modelcache, empty unless given."""
    return {name: indexes.get(name, {}) for name in modelcache.INDEXES}


@pytest.fixture
def bound():
    """Bind the module's indexes to the views a test builds; unbound again afterwards."""
    saved = dict(modelcache.indexes._indexes)

    def bind(**indexes: dict) -> None:
        modelcache.indexes._indexes.clear()
        modelcache.indexes.bind(views(**indexes))

    yield bind
    modelcache.indexes._indexes.clear()
    modelcache.indexes._indexes.update(saved)


def test_project_body_keeps_what_the_controllers_read_and_no_bookkeeping():
    mv = model_version("chat-v1", "chat", "v1", phase="Approved")
    mv["metadata"]["annotations"].update({
        "finetune.ai/last-handled-configuration": json.dumps(mv["spec"]),
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(mv),
        "finetune.ai/force-version": "chat-v1",
    })
    mv["metadata"]["ownerReferences"] = [{"apiVersion": "finetune.ai/v1alpha1", "kind": "FineTuneJob", "name": "j",
                                          "uid": "u", "controller": True, "blockOwnerDeletion": True}]
    projected = modelcache.project_body(mv)
    assert "managedFields" not in projected["metadata"]
    # Only the annotation a controller reads (the Rollout's force-version) is kept.
    assert projected["metadata"]["annotations"] == {"finetune.ai/force-version": "chat-v1"}
    assert projected["metadata"]["labels"] == mv["metadata"]["labels"]
    assert projected["metadata"]["ownerReferences"][0]["name"] == "j"
    assert projected["spec"] == mv["spec"] and projected["status"] == mv["status"]
    assert projected["metadata"]["resourceVersion"] == "42"
    assert len(json.dumps(projected)) < len(json.dumps(mv)) / 3
    bare = modelcache.project_body({"metadata": {"name": "x", "annotations": {"kopf.zalando.org/a": "1", "team": "x"}}})
    assert "annotations" not in bare["metadata"]


def test_a_models_versions_come_from_the_index_by_model(bound):
    versions = {name: model_version(name, model, v) for name, model, v in
                [("chat-v1", "chat", "v1"), ("chat-v2", "chat", "v2"), ("code-v1", "code", "v1")]}
    bound(
        modelversion_bodies={(NS, n): [modelcache.project_body(mv)] for n, mv in versions.items()},
        modelversions_by_model={(NS, "chat"): ["chat-v2", "chat-v1"], (NS, "code"): ["code-v1"]},
    )
    infos = rollout_handler._versions(NS, "chat")
    assert [i.name for i in infos] == ["chat-v1", "chat-v2"]
    assert [i.number for i in infos] == [1, 2]
    assert rollout_handler._versions(NS, "unknown") == ()
    assert rollout_handler._versions("other-ns", "chat") == ()


def deployment(version: str, *, generation=2, observed=2, ready=1, available=1, condition="True") -> dict:
    return padded({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"chat-{version}", "generation": generation,
                     "labels": {"finetune.ai/rollout": "chat", "finetune.ai/model-version": version}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "serve", "image": "x"}]}}},
        "status": {"observedGeneration": observed, "readyReplicas": ready, "availableReplicas": available,
                   "replicas": 1, "conditions": [{"type": "Available", "status": condition, "reason": "MinimumReplicasAvailable",
                                                  "lastUpdateTime": "2026-01-01T00:00:00Z"}]},
    })


@pytest.mark.parametrize(("kwargs", "available"), [
    ({}, True),
    ({"observed": 1}, False),  # the controller has not seen the new template yet
    ({"ready": 0}, False),
    ({"available": 0}, False),
    ({"condition": "False"}, False),
])
def test_availability_reads_the_same_from_the_projection(kwargs, available):
    full = deployment("v1", **kwargs)
    assert rollout_handler._available(modelcache.project_deployment(full)) is available


def test_observe_takes_serving_and_failed_artifact_checks_from_the_indexes(bound):
    pod = padded({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "chat-v2-abc", "labels": {"finetune.ai/rollout": "chat", "finetune.ai/model-version": "v2"}},
        "spec": {"containers": [{"name": "serve", "image": "x", "env": [{"name": "SECRET", "value": "s"}]}]},
        "status": {"phase": "Pending", "podIP": "127.0.0.9", "initContainerStatuses": [{
            "name": rollout_handler.VERIFY_CONTAINER, "image": "x", "ready": False, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 3, "message": "digest sha256:1 != sha256:0\n"}},
        }]},
    })
    bound(
        rollout_deployments={(NS, "chat"): [modelcache.project_deployment(deployment("v1")),
                                            modelcache.project_deployment(deployment("v2", ready=0, available=0, condition="False"))]},
        rollout_pods={(NS, "chat"): [modelcache.project_serving_pod(pod)]},
    )
    seen = rollout_handler.observe(NS, "chat", "chat")
    assert seen.ready == {"v1": True, "v2": False}
    assert seen.serving_failures == {"v2": (rollout_handler.builders.REASON_DIGEST_MISMATCH, "v2: digest sha256:1 != sha256:0")}
    projected = modelcache.project_serving_pod(pod)
    assert "spec" not in projected and "podIP" not in projected["status"]


def test_an_unbound_index_is_a_clear_error(bound):
    modelcache.indexes._indexes.clear()
    with pytest.raises(RuntimeError, match="modelversions_by_model index is not bound"):
        modelcache.indexes.model_versions(NS, "chat")


def verify_job(state: str | None) -> dict:
    conditions = [{"type": state, "status": "True", "reason": "BackoffLimitExceeded", "message": "failed"}] if state else []
    return padded({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "chat-v1-verify", "labels": {"finetune.ai/verify-of": "chat-v1"},
                     "ownerReferences": [{"apiVersion": "finetune.ai/v1alpha1", "kind": "ModelVersion", "name": "chat-v1", "uid": "uid-chat-v1"}]},
        "spec": {"template": {}},
        "status": {"conditions": conditions, "active": 0 if state else 1},
    })


def test_verify_job_index_entry_is_keyed_by_its_version():
    entry = mv_handler.verify_jobs(body=verify_job("Complete"), namespace=NS)
    assert list(entry) == [(NS, "chat-v1")]
    assert mv_handler.verify_jobs(body={"metadata": {"name": "orphan"}}, namespace=NS) is None


@pytest.mark.parametrize(("state", "expected"), [
    (None, {"finished": False}),
    ("Complete", {"finished": True, "succeeded": True}),
])
def test_the_artifact_checks_outcome_is_read_from_the_job_index(bound, state, expected):
    bound(verify_jobs={(NS, "chat-v1"): [watchcache.project_job(verify_job(state))]})
    outcome = mv_handler._verify_outcome(NS, "chat-v1", "chat-v1-verify")
    assert outcome is not None
    assert {key: getattr(outcome, key) for key in expected} == expected


def test_an_artifact_check_not_in_the_index_is_not_there(bound):
    bound(verify_jobs={(NS, "chat-v1"): [watchcache.project_job(verify_job(None))]})
    assert mv_handler._verify_outcome(NS, "chat-v2", "chat-v2-verify") is None
    # A Job of another name (a renamed check) is not this check's outcome.
    assert mv_handler._verify_outcome(NS, "chat-v1", "chat-v1-verify-2") is None


def test_retention_acts_once_per_model_and_interval():
    passes = mv_handler._Passes()
    assert passes.due((NS, "chat"), 150, now=1000.0)
    assert not passes.due((NS, "chat"), 150, now=1100.0)  # another version's timer, same model
    assert passes.due((NS, "code"), 150, now=1100.0)
    assert passes.due((NS, "chat"), 150, now=1150.0)


@pytest.mark.parametrize(("marked", "removed"), [
    ((1, 2), []),  # settled: a pass makes no request at all
    ((1,), ["chat-v2"]),  # one more past retention: its cleanup and its condition, once
    ((), ["chat-v2"]),  # chat-v1 is the Rollout's stable version: kept
])
def test_retention_reads_versions_and_rollouts_from_the_indexes(bound, monkeypatch, marked, removed):
    retained = [{"type": "ArtifactRetained", "status": "False", "reason": "RetentionExpired", "message": "removed",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    versions = {f"chat-v{i}": model_version(f"chat-v{i}", "chat", f"v{i}", phase="Approved",
                                            conditions=retained if i in marked else [])
                for i in range(1, 6)}
    rollout = padded({"apiVersion": "finetune.ai/v1alpha1", "kind": "Rollout", "metadata": {"name": "chat"},
                      "spec": {"modelName": "chat"}, "status": {"stableVersion": "v1"} if not marked else {}})
    bound(
        modelversion_bodies={(NS, n): [modelcache.project_body(mv)] for n, mv in versions.items()},
        modelversions_by_model={(NS, "chat"): list(versions)},
        rollout_bodies={(NS, "chat"): [modelcache.project_body(rollout)]},
    )
    monkeypatch.setattr(mv_handler, "_retention_passes", mv_handler._Passes())

    class Settings:
        retain_versions = 3
        trainer_image = "trainer"
        allowed_host_paths = ()
        s3_endpoint = ""

    monkeypatch.setattr(mv_handler.operator_config, "current", lambda: Settings())

    requests: list[tuple[str, str]] = []
    monkeypatch.setattr(mv_handler.apply, "create_if_absent", lambda job: requests.append(("cleanup", job["metadata"]["name"])))
    monkeypatch.setattr(mv_handler.status, "apply", lambda _r, _ns, name, *_: requests.append(("status", name)))
    monkeypatch.setattr(mv_handler.events, "record", lambda mv, *_: requests.append(("event", mv["metadata"]["name"])))
    kwargs = {**dict(modelcache.indexes._indexes), "rollouts_by_model": {(NS, "chat"): ["chat"]}}
    mv_handler.retention(body=versions["chat-v5"], namespace=NS, **kwargs)
    assert sorted(name for kind, name in requests if kind == "status") == removed
    assert [kind for kind, _ in requests] == ["cleanup", "status", "event"] * len(removed)
    # The next version's timer in the same interval: the model was looked at, nothing more.
    requests.clear()
    mv_handler.retention(body=versions["chat-v4"], namespace=NS, **kwargs)
    assert requests == []


# --- writes only what changed ------------------------------------------------------------------

def track_service(version: str) -> dict:
    from finetune_operator.api.rollout import RolloutSpec
    from finetune_operator.builders import rollout as builders

    spec = RolloutSpec.model_validate({"modelName": "chat", "track": "LatestApproved"})
    return builders.track_service(builders.Owner(name="chat", namespace=NS, uid="u"), spec, "stable", version)


def as_served(service: dict) -> dict:
    """The Service as the API server returns it: defaults filled in, other managers' labels."""
    served = copy.deepcopy(service)
    served["metadata"]["labels"]["team"] = "search"
    served["spec"]["ports"][0]["protocol"] = "TCP"
    served["spec"]["type"] = "ClusterIP"
    served["spec"]["clusterIP"] = "10.0.0.7"
    return served


@pytest.mark.parametrize(
    ("watched", "applied"),
    [
        pytest.param(None, True, id="not-there-yet"),
        pytest.param("v2", False, id="already-as-it-should-be"),
        pytest.param("v1", True, id="selects-another-version"),
    ],
)
def test_a_service_is_applied_only_when_the_watched_one_differs(bound, monkeypatch, watched, applied):
    calls = []
    monkeypatch.setattr(serving.apply, "apply", lambda obj: calls.append(obj) or obj)
    services = {}
    if watched is not None:
        services[(NS, "chat-stable")] = [modelcache.project_service(as_served(track_service(watched)))]
    bound(rollout_services=services)
    serving.apply_service(track_service("v2"))
    assert bool(calls) == applied


def test_a_deployment_is_applied_when_its_digest_or_someone_elses_edit_says_so(monkeypatch):
    monkeypatch.setattr(serving, "applied_generations", {"uid-d": 3})

    def watched(digest: str, generation: int, uid: str = "uid-d") -> dict:
        return {"metadata": {"uid": uid, "generation": generation,
                             "annotations": {serving.builders.APPLIED_DIGEST_ANNOTATION: digest}}}

    assert serving.needs_apply(None, "abc")
    assert not serving.needs_apply(watched("abc", 3), "abc"), "as applied, and nobody changed it"
    assert serving.needs_apply(watched("old", 3), "abc"), "what it should be changed"
    assert serving.needs_apply(watched("abc", 4), "abc"), "someone else changed its spec"
    assert serving.needs_apply(watched("abc", 3, uid="other"), "abc"), "not applied by this process yet"


def test_the_applied_digest_covers_spec_and_labels_but_not_itself():
    from finetune_operator.builders import rollout as builders

    deployment = {"metadata": {"labels": {"a": "1"}, "annotations": {}}, "spec": {"replicas": 1}}
    digest = builders.applied_digest(deployment)
    with_itself = copy.deepcopy(deployment)
    with_itself["metadata"]["annotations"][builders.APPLIED_DIGEST_ANNOTATION] = digest
    assert builders.applied_digest(with_itself) == digest
    assert builders.applied_digest({**deployment, "spec": {"replicas": 2}}) != digest
    assert builders.applied_digest({**deployment, "metadata": {"labels": {"a": "2"}}}) != digest
