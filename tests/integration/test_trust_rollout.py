"""No request is lost at a promotion or a rollback, and nothing refused is served, on the dev cluster.

Steady load goes through the HTTPRoute (canary.TrafficLoop plays the gateway) while a Rollout
promotes v2 over v1 and then `kubectl finetune rollback` goes back to v1: the stable Service is
re-pointed only once the target's Deployment is Available, and the old Pods go only after the
Services stopped selecting them (and they drain on SIGTERM), so not one request fails. Then a
version whose artifact is not the registered bytes never gets traffic, and a rollback to it is
refused: checked at registration (a version the operator can mount is Rejected and says it was
refused), or, for one it cannot mount, by the serving Pods' own check.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devcluster import canary
from finetune_trainer.artifacts import digest_files
from finetune_trainer.testing import make_tiny_model
from tests.helpers import wait_for
from tests.prometheus import prometheus_factory  # noqa: F401 - fixture

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RO = "trust"
MODEL = "trust-model"
PASSING = {"taskAccuracy": 0.9, "formatCompliance": 1.0, "safetyPassRate": 1.0, "generalScore": 1.0, "latencySeconds": 0.1}
STEPS = ({"setWeight": 50}, {"pause": {"duration": "3s"}}, {"setWeight": 100}, {"pause": {"duration": "3s"}})


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("trust-serving")
    base = make_tiny_model(root / "base")
    # v4 lies outside the host paths the test operator may mount (its check happens at serving).
    unchecked = Path(tempfile.mkdtemp(prefix="trust-unchecked-"))
    (unchecked / "base").symlink_to(base)
    yield {"v1": canary.make_adapter(base, root / "v1", 1), "v2": canary.make_adapter(base, root / "v2", 2),
           "v3": canary.make_adapter(base, root / "v3", 3), "v4": canary.make_adapter(base, unchecked / "v4", 4)}
    shutil.rmtree(unchecked, ignore_errors=True)


@pytest.fixture(scope="module")
def trust_namespace(cluster):
    name = f"trust-{int(time.time()) % 100000}"
    cluster.kubectl("create", "namespace", name)
    wait_for(lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0, 60, "default SA")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def stack(cluster, trust_namespace, _operator_process, models):
    canary.install_httproute_crd(cluster.state)
    cluster.apply(yaml.safe_dump(canary.httproute(RO)), trust_namespace)
    return cluster, trust_namespace, models


def status(cluster, ns) -> dict:
    return cluster.get("rollout.finetune.ai", RO, ns).get("status") or {}


def register(cluster, ns, models, version: str, digest: str | None = None) -> None:
    path = models[version]
    manifest = canary.model_version(MODEL, version, path, path.parent / "base", metrics=PASSING,
                                    digest=digest or digest_files(path))
    cluster.apply(yaml.safe_dump(manifest), ns)


def wait_status(cluster, ns, check, timeout, what):
    try:
        return wait_for(lambda: (s := status(cluster, ns)) and check(s) and s, timeout, what)
    except AssertionError as exc:
        s = status(cluster, ns)
        raise AssertionError(f"{exc}\nRollout: phase {s.get('phase')}, message {s.get('message')!r}") from None


def plugin(cluster, ns, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "bin" / "kubectl-finetune"), "--kubeconfig", cluster.kubeconfig, "-n", ns, *args],
                          capture_output=True, text=True)


def failed(traffic: canary.TrafficLoop) -> dict[str, int]:
    totals = {"failures": 0, "http_errors": 0, "unrouted": 0}
    for report in traffic.reports:
        totals["unrouted"] += report.unrouted
        for stats in report.backends.values():
            totals["failures"] += stats.failures
            totals["http_errors"] += stats.http_errors
    return totals


def test_no_request_is_lost_across_a_promotion_and_a_rollback(stack):
    cluster, ns, models = stack
    register(cluster, ns, models, "v1")
    manifest = canary.rollout(RO, MODEL, "http://127.0.0.1:9", steps=STEPS, scale_down_delay_s=0)
    manifest["spec"]["analysis"] = {"none": True}  # explicit opt-out: these tests are not about analysis
    cluster.apply(yaml.safe_dump(manifest), ns)
    wait_status(cluster, ns, lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "v1", 180, "v1 healthy")
    traffic = canary.TrafficLoop(cluster.kubeconfig, ns, RO, model=MODEL, limit_seconds=600).start()
    try:
        wait_for(lambda: traffic.sent() > 20, 60, "steady load on v1")
        register(cluster, ns, models, "v2")
        wait_status(cluster, ns, lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "v2", 240,
                    "v2 promoted")
        # v1's serving goes once traffic left it; keep the load on through that.
        wait_for(lambda: not cluster.list("deployments", ns, selector="finetune.ai/model-version=v1"), 60, "v1 scaled down")
        sent_before_rollback = traffic.sent()
        wait_for(lambda: traffic.sent() > sent_before_rollback + 20, 60, "load on v2")
        answer = plugin(cluster, ns, "rollback", RO, "--reason", "trust test")
        assert answer.returncode == 0, answer.stderr
        wait_status(cluster, ns, lambda s: s.get("phase") == "RolledBack" and s.get("stableVersion") == "v1", 180,
                    "rolled back to v1")
        wait_for(lambda: not cluster.list("deployments", ns, selector="finetune.ai/model-version=v2"), 120, "v2 scaled down")
        sent_after = traffic.sent()
        wait_for(lambda: traffic.sent() > sent_after + 20, 60, "load on v1 again")
    finally:
        traffic.stop()
    totals = failed(traffic)
    assert traffic.sent() > 100
    assert totals == {"failures": 0, "http_errors": 0, "unrouted": 0}, totals


def test_a_version_whose_bytes_differ_never_serves_and_a_rollback_to_it_is_refused(stack):
    cluster, ns, models = stack
    before = status(cluster, ns)
    assert before.get("stableVersion") == "v1"
    # Checked at registration: other bytes than the digest says -> Rejected, never a candidate.
    register(cluster, ns, models, "v3", digest="sha256:" + "1" * 64)
    wait_for(lambda: mv_condition(cluster, ns, "v3", "ArtifactVerified"), 120, "v3's artifact checked")
    verified = mv_condition(cluster, ns, "v3", "ArtifactVerified")
    assert (verified["status"], verified["reason"]) == ("False", "ArtifactDigestMismatch"), verified
    wait_for(lambda: cluster.get("modelversion", f"{MODEL}-v3", ns)["status"].get("phase") == "Rejected", 30, "v3 Rejected")
    s = status(cluster, ns)
    assert s["stableVersion"] == "v1" and not s.get("candidateVersion")
    assert all("v3" not in (h.get("from"), h.get("to")) for h in s.get("history") or [])
    assert not cluster.list("deployments", ns, selector="finetune.ai/model-version=v3")
    assert canary.route_weights(cluster.get("httproute", RO, ns))[f"{RO}-canary"] == 0
    refused = plugin(cluster, ns, "rollback", RO, "--to", "v3")
    assert refused.returncode == 1 and "v3" in refused.stderr and "digest mismatch" in refused.stderr, refused
    assert status(cluster, ns)["stableVersion"] == "v1"
    events = cluster.kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={RO},reason=RollbackRefused",
                             "-o", "name").stdout
    assert events.strip()
    # The refused version says so itself, under the Rollout's field manager.
    wait_for(lambda: (mv_condition(cluster, ns, "v3", "Serving") or {}).get("reason") == "Refused", 30, "v3 Serving=False/Refused")
    serving = mv_condition(cluster, ns, "v3", "Serving")
    assert serving["status"] == "False" and RO in serving["message"] and "v3" in serving["message"], serving

    # Checked where it is served: a node path the operator may not mount is not checked at
    # registration; the serving Pods' own check refuses it, and it never gets traffic.
    register(cluster, ns, models, "v4", digest="sha256:" + "1" * 64)
    s = wait_status(cluster, ns, lambda s: s.get("phase") == "Degraded" and s.get("history", [{}])[-1].get("from") == "v4",
                    180, "v4 refused for its digest when served")
    ready = next(c for c in s["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ArtifactDigestMismatch" and "digest mismatch" in ready["message"], ready
    assert s["stableVersion"] == "v1" and not s.get("candidateVersion")
    assert canary.route_weights(cluster.get("httproute", RO, ns))[f"{RO}-canary"] == 0
    assert mv_condition(cluster, ns, "v4", "ArtifactVerified")["reason"] == "NotMountable"
    serving = mv_condition(cluster, ns, "v4", "Serving")
    assert (serving["status"], serving["reason"]) == ("False", "ArtifactDigestMismatch")


def mv_condition(cluster, ns, version: str, type_: str) -> dict | None:
    mv = cluster.get("modelversion", f"{MODEL}-{version}", ns)
    return next((c for c in (mv.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)
