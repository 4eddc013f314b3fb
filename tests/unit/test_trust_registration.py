"""Trust at registration and in the record: the artifact check's Job and verdict, retention of
node-path artifacts, refusals visible on the ModelVersion, and Events named by their transition.

Tables over the pure parts (builders, logic) and the naming of Events; the dev-cluster side is
tests/integration/test_trust_registration.py.
"""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from finetune_operator.api.common import Condition
from finetune_operator.api.modelversion import ModelVersionStatus
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.builders import security
from finetune_operator.k8s import events
from finetune_operator.logic import modelversion as mv_logic
from finetune_operator.logic import rollout as logic
from tests.unit.rollout_fixtures import Cluster, rollback, spec, version

T0 = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
DIGEST = "sha256:" + "a" * 64
ALLOWED = ("/srv/models",)


def mv(uri: str) -> dict:
    return {
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "chat-v1", "namespace": "team-a", "uid": "uid-1", "generation": 1},
        "spec": {"modelName": "chat", "version": "v1", "baseModel": {"uri": "hf://org/base"},
                 "artifact": {"uri": uri, "digest": DIGEST}},
    }


# ---- the artifact check's Job


@pytest.mark.parametrize(
    ("uri", "volume", "path"),
    [
        pytest.param("pvc://store/runs/chat-1/adapter", {"persistentVolumeClaim": {"claimName": "store", "readOnly": True}},
                     "/mnt/pvc/store/runs/chat-1/adapter", id="claim-mounted-read-only"),
        pytest.param("/srv/models/chat-1/adapter", {"hostPath": {"path": "/srv/models/chat-1", "type": "Directory"}},
                     "/srv/models/chat-1/adapter", id="allowed-node-path-parent-mounted"),
        pytest.param("file:///srv/models/adapter", {"hostPath": {"path": "/srv/models", "type": "Directory"}},
                     "/srv/models/adapter", id="file-uri-normalised"),
        pytest.param("/srv/models/../etc/adapter", None, None, id="dot-dot-refused"),
        pytest.param("/var/lib/kubelet/adapter", None, None, id="node-path-not-allowed-not-mounted"),
        pytest.param("s3://bucket/chat/v1", None, None, id="object-store-left-to-the-server"),
        pytest.param("pvc://store", None, None, id="bare-claim-root-refused"),
    ],
)
def test_verify_job(uri, volume, path):
    job = mv_builders.verify_job(mv(uri), "trainer:1", ALLOWED)
    if volume is None:
        assert job is None
        return
    assert job["metadata"]["name"] == "chat-v1-verify"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "finetune_trainer.artifacts", "verify", path, DIGEST]
    assert {k: v for k, v in pod["volumes"][0].items() if k != "name"} == volume
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] == "artifact")
    # A mismatch (exit 3) is final: no retry of a verdict about the bytes.
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [mv_builders.VERIFY_EXIT_MISMATCH]


def test_verify_job_on_a_claim_passes_pod_security_restricted():
    job = mv_builders.verify_job(mv("pvc://store/runs/chat-1/adapter"), "trainer:1", ALLOWED)
    assert security.violations(job["spec"]["template"]["spec"]) == []


# ---- retention frees node-path artifacts the operator allows


@pytest.mark.parametrize(
    ("uri", "allowed", "removed"),
    [
        pytest.param("/srv/models/chat-1/adapter", ALLOWED, "/srv/models/chat-1/adapter", id="allowed-node-path-freed"),
        pytest.param("/srv/models/chat-1/adapter", (), None, id="no-allowed-prefixes-nothing-removed"),
        pytest.param("/var/lib/kubelet/adapter", ALLOWED, None, id="node-path-outside-the-prefixes-kept"),
        pytest.param("pvc://store/runs/chat-1/adapter", (), "/mnt/pvc/store/runs/chat-1/adapter", id="claim-freed"),
    ],
)
def test_retention_job_gets_the_allowed_host_paths(uri, allowed, removed):
    job = mv_builders.artifact_cleanup_job(mv(uri), "trainer:1", allowed)
    if removed is None:
        assert job is None
        return
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == removed


# ---- ArtifactVerified from the check's outcome, and what it does to the phase


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        pytest.param(mv_logic.VerifyOutcome(), None, id="running-no-condition-yet"),
        pytest.param(mv_logic.VerifyOutcome(finished=True, succeeded=True), ("True", "DigestMatches"), id="bytes-match"),
        pytest.param(mv_logic.VerifyOutcome(finished=True, mismatch=True, message="artifact digest mismatch: x"),
                     ("False", "ArtifactDigestMismatch"), id="bytes-differ"),
        pytest.param(mv_logic.VerifyOutcome(finished=True, message="DeadlineExceeded: too slow"),
                     ("Unknown", "CheckFailed"), id="job-failed-without-a-verdict"),
        pytest.param(None, ("Unknown", "NotMountable"), id="not-mountable-by-the-operator"),
    ],
)
def test_artifact_verified(outcome, expected):
    found = mv_logic.artifact_verified(outcome, uri="pvc://store/x", digest=DIGEST)
    assert (found and (str(found[0]), found[1])) == expected


def evaluated(**extra) -> dict:
    raw = dict(mv("pvc://store/runs/chat-1/adapter")["spec"])
    raw["evaluation"] = {"metrics": {"formatCompliance": 1.0}, "baseMetrics": {"formatCompliance": 0.5},
                         "gates": [{"name": "format", "metric": "formatCompliance", "comparator": "GreaterThan",
                                    "threshold": 0.9}]}
    return raw | extra


def verified(value: str, message: str = "") -> ModelVersionStatus:
    return ModelVersionStatus(conditions=[Condition(type="ArtifactVerified", status=value, reason="R", message=message,
                                                    last_transition_time=T0)])


@pytest.mark.parametrize(
    ("status", "awaiting", "phase", "ready_reason"),
    [
        pytest.param(ModelVersionStatus(), True, "Candidate", "AwaitingArtifactCheck", id="passed-gates-wait-for-the-check"),
        pytest.param(ModelVersionStatus(), False, "Approved", "Approved", id="nothing-to-check-approved"),
        pytest.param(verified("True"), False, "Approved", "Approved", id="bytes-match-approved"),
        pytest.param(verified("False", "digest mismatch: x"), False, "Rejected", "ArtifactUnverified",
                     id="bytes-differ-rejected-whatever-the-gates"),
    ],
)
def test_phase_follows_the_artifact_check(status, awaiting, phase, ready_reason):
    decision = mv_logic.decide(mv_logic.parse_spec(evaluated()), status, T0, generation=1,
                               awaiting_artifact_check=awaiting)
    assert str(decision.status.phase) == phase
    ready = next(c for c in decision.status.conditions if c.type == "Ready")
    assert ready.reason == ready_reason
    # The check's condition is not this controller's to send.
    assert all(c["type"] != "ArtifactVerified" for c in decision.owned_status.get("conditions", []))


# ---- a Rollout never serves a version whose check said no, and the version says it was refused


def unverified(number: int) -> logic.VersionInfo:
    return dataclasses.replace(version(number, "Rejected"), artifact_problem="artifact digest mismatch: /a has sha256:1")


def test_latest_approved_never_picks_a_version_whose_bytes_differ():
    c = Cluster(spec(), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    c.versions.append(dataclasses.replace(version(2), artifact_problem="digest mismatch"))
    decision = c.reconcile(10)
    assert decision.status.candidate_version is None and "v2" not in decision.serve


def test_rollback_to_an_unverified_version_is_refused_naming_the_digest_problem_and_the_version_says_so():
    c = Cluster(spec(), versions=[version(1), unverified(2)], ready={"v1"})
    c.reconcile(0)
    c.request(**rollback(100, to="v2"))
    decision = c.reconcile(100)
    accepted = next(x for x in decision.status.conditions if x.type == "RollbackAccepted")
    assert str(accepted.status) == "False" and "v2" in accepted.message and "digest mismatch" in accepted.message
    assert decision.status.stable_version == "v1"
    refused = decision.version_serving["chat-v2"]
    assert (refused.state, refused.condition_status, refused.reason) == ("Refused", "False", "Refused")
    assert "Rollout chat" in refused.message and "v2" in refused.message


def test_a_pin_to_a_refused_version_marks_it_refused_once():
    c = Cluster(spec(), versions=[version(1), unverified(2)], ready={"v1"})
    c.reconcile(0)
    c.edit_spec(spec(version="v2"))
    first = c.reconcile(10)
    assert str(first.status.phase) == "Degraded" and "digest mismatch" in first.status.message
    assert (first.version_serving["chat-v2"].state, first.version_serving["chat-v2"].reason) == ("Refused", "Refused")
    again = c.reconcile(20)
    assert "chat-v2" not in again.version_serving  # written once, not on every reconcile
    assert again.status.stable_version == "v1"


def test_whether_a_refusal_is_new_is_read_from_the_versions_serving_record():
    # Refused by another Rollout (or by none): this Rollout says so on it too; by itself: once is enough.
    c = Cluster(spec(), versions=[version(1), dataclasses.replace(unverified(2), refused_by="other")], ready={"v1"})
    c.reconcile(0)
    c.edit_spec(spec(version="v2"))
    assert c.reconcile(10).version_serving["chat-v2"].state == "Refused"
    record = {"state": "Refused", "rollout": "chat", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    mv = {"metadata": {"name": "chat-v2"}, "spec": {"version": "v2"}, "status": {"serving": record}}
    assert logic.VersionInfo.from_object(mv).refused_by == "chat"
    assert logic.VersionInfo.from_object({**mv, "status": {"serving": {**record, "state": "Stable"}}}).refused_by is None


# ---- Events named by their transition


BODY = {"apiVersion": "finetune.ai/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "chat", "namespace": "team-a", "uid": "uid-1"}}


def test_an_event_name_is_the_same_for_the_same_transition_and_differs_otherwise():
    old = {"phase": "Training", "observedGeneration": 1}
    key = events.transition_key(old, "evaluating")
    name = events.event_name(BODY, "Evaluating", key)
    # A reconcile re-run after a kill starts from the same status: the same name.
    assert events.event_name(BODY, "Evaluating", events.transition_key(dict(old), "evaluating")) == name
    assert events.event_name(BODY, "Evaluating", events.transition_key(old | {"kopf": {"x": 1}}, "evaluating")) == name
    # Another transition, another object (same name, new uid), another reason: another Event.
    assert events.event_name(BODY, "Evaluating", events.transition_key(old | {"phase": "Preparing"}, "evaluating")) != name
    other = {**BODY, "metadata": {**BODY["metadata"], "uid": "uid-2"}}
    assert events.event_name(other, "Evaluating", key) != name
    assert events.event_name(BODY, "Failed", key) != name
    assert name.startswith("chat.") and len(name) <= 253


def test_force_never_serves_other_bytes_than_the_registered_ones():
    c = Cluster(spec(), versions=[version(1), unverified(2)], ready={"v1"})
    c.reconcile(0)
    c.request(**rollback(100, to="v2"))
    c.status.rollback_request.force = True
    decision = c.reconcile(100)
    assert decision.status.stable_version == "v1" and "v2" not in decision.serve
    accepted = next(x for x in decision.status.conditions if x.type == "RollbackAccepted")
    assert str(accepted.status) == "False" and "digest mismatch" in accepted.message
    c.edit_spec(spec(version="v2"))
    c.force_version = "v2"
    pinned = c.reconcile(110)
    assert pinned.status.stable_version == "v1" and "v2" not in pinned.serve and str(pinned.status.phase) == "Degraded"
