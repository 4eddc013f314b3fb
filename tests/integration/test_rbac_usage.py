"""The chart's RBAC is derived from the API calls the operator makes, and tested against them.

The dev cluster's API server writes an audit log (hack/devcluster/controlplane.py AUDIT_POLICY).
This test runs last in the session (see `runs_last` in tests/integration/conftest.py), after the
pipeline and rollout tests, runs a FineTuneJob of its own, and then collects every request the
operator issued (its user agents: kopf's and `finetune_operator.k8s.client.USER_AGENT`):

- every call the operator made must be granted by the chart's default (namespaced) install;
- every rule the chart grants must have been used, or be listed in BEYOND_ONE_PIPELINE with the
  code that needs it (a rule nothing needs is removed from the chart instead).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest
import yaml

from finetune_operator.k8s.client import USER_AGENT
from tests.helpers import noop_finetunejob, wait_for
from tests.integration.test_chart import CHART, helm

pytestmark = [pytest.mark.cluster, pytest.mark.runs_last]

OPERATOR_AGENTS = ("kopf/", USER_AGENT)

# Granted and needed by the code, but not by the one pipeline this test runs (the rest of the
# suite exercises most): (group, resource, verb) -> the call that needs it.
BEYOND_ONE_PIPELINE = {
    ("finetune.ai", "finetunejobs", "delete"): "handlers.finetunejob: delete after spec.ttlSecondsAfterFinished",
    ("finetune.ai", "finetunejobs", "get"): "handlers.finetunejob._read: a GET only where resourceVersions cannot be ordered (k8s.watchcache.Stale); reconciles read the index",
    ("finetune.ai", "rollouts", "get"): "handlers.rollout: get_namespaced_custom_object (abort/pin requests)",
    ("finetune.ai", "rollouts", "patch"): "kopf: the Rollout's finalizer and last-handled annotation",
    ("finetune.ai", "rollouts/status", "patch"): "k8s.status.patch of a Rollout",
    ("finetune.ai", "modelversions", "get"): "handlers.modelversion: get_namespaced_custom_object",
    ("batch", "jobs", "patch"): "k8s.apply.set_job_suspended (spec.suspend, Kueue)",
    ("", "configmaps", "get"): "none by the operator: granted to each trainer's Role (RBAC escalation check)",
    ("", "configmaps", "patch"): "none by the operator: granted to each trainer's Role (RBAC escalation check)",
    ("", "services", "create"): "handlers.finetunejob: create_if_absent of a multi-node job's headless Service",
    ("", "services", "patch"): "k8s.serving: server-side apply of the version and track Services (when they differ)",
    ("", "services", "delete"): "k8s.serving: apply.delete of a retired version's Service",
    ("apps", "deployments", "get"): "routers.replicaratio via k8s.serving.read_targets (the Deployments' replicas)",
    ("apps", "deployments", "patch"): "k8s.serving: server-side apply of a version's Deployment (when it differs)",
    ("apps", "deployments", "create"): "k8s.serving: the same apply of a new Deployment (audited as patch)",
    ("apps", "deployments", "delete"): "k8s.serving: apply.delete of a retired version's Deployment",
    ("gateway.networking.k8s.io", "httproutes", "get"): "k8s.serving: reads the HTTPRoute's weights",
    ("gateway.networking.k8s.io", "httproutes", "patch"): "k8s.serving.route: server-side apply of the weights",
    ("networking.istio.io", "virtualservices", "get"): "routers.istio via k8s.serving",
    ("networking.istio.io", "virtualservices", "patch"): "routers.istio via k8s.serving",
    ("serving.kserve.io", "inferenceservices", "get"): "routers.kserve via k8s.serving",
    ("serving.kserve.io", "inferenceservices", "patch"): "routers.kserve via k8s.serving",
    # The suite's operator runs alone, without leader election (tests/integration/test_failover.py runs two with it).
    ("coordination.k8s.io", "leases", "get"): "k8s.leader: reads the leader-election Lease",
    ("coordination.k8s.io", "leases", "create"): "k8s.leader: creates the Lease the first time",
    ("coordination.k8s.io", "leases", "update"): "k8s.leader: acquires, renews and releases it (resourceVersion precondition)",
}
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions", "clusterkopfpeerings"}


def operator_calls(audit_log) -> set[tuple[str, str, str, bool]]:
    """(group, resource[/subresource], verb, namespaced) of every request the operator made."""
    calls = set()
    for line in audit_log.read_text(errors="replace").splitlines():
        if not any(f'"userAgent":"{agent}' in line for agent in OPERATOR_AGENTS):
            continue  # cheap: most of a session's log is other clients
        try:
            event = json.loads(line)
        except ValueError:
            continue
        ref = event.get("objectRef")
        agent = event.get("userAgent") or ""
        if not ref or not agent.startswith(OPERATOR_AGENTS):
            continue
        # The test operator runs with the admin's credentials; a Pod that uses the operator's client
        # library in-cluster (the dev cluster's own tests do) authenticates as its ServiceAccount.
        if ((event.get("user") or {}).get("username") or "").startswith("system:serviceaccount:"):
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        calls.add((ref.get("apiGroup") or "", resource, event["verb"], bool(ref.get("namespace"))))
    return calls


def expand(rules: Iterable[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
            for v in rule.get("verbs", [])}


def rendered_rules(cluster, namespace, kind, *values: str) -> set[tuple[str, str, str]]:
    rendered = helm(cluster, "template", "ft", str(CHART), "--namespace", namespace, "--kube-version", "1.36.3", *values)
    return set().union(*(expand(d["rules"]) for d in yaml.safe_load_all(rendered) if d and d["kind"] == kind))


def granted(cluster, namespace) -> tuple[set, set]:
    """(namespaced, cluster-scoped) grants: the namespaced rules of the default install into
    `namespace`, the cluster-scoped ones of a cluster-wide install (the test operator watches
    every namespace; a namespaced install has no cluster-scoped grant, checked below)."""
    namespaced = rendered_rules(cluster, namespace, "Role")
    cluster_scoped = {(g, r, v) for g, r, v in rendered_rules(cluster, namespace, "ClusterRole", "--set", "clusterWide=true")
                      if r.split("/")[0] in CLUSTER_SCOPED}
    return namespaced, cluster_scoped


def test_a_namespaced_install_grants_nothing_cluster_scoped(cluster, namespace):
    assert rendered_rules(cluster, namespace, "ClusterRole") == set()


def test_the_chart_grants_what_the_operator_uses_and_nothing_else(cluster, namespace, operator):
    audit_log = cluster.dir / "audit.log"
    assert audit_log.exists(), f"no audit log at {audit_log}: start the dev cluster with the current controlplane.py"
    # A pipeline of its own, so the FineTuneJob and ModelVersion calls are there however the
    # test is run.
    cluster.apply(noop_finetunejob("usage", output={}), namespace)
    wait_for(lambda: (cluster.get("finetunejob", "usage", namespace).get("status") or {}).get("phase") == "Succeeded",
             240, "the FineTuneJob usage to succeed")
    cluster.kubectl("delete", "finetunejob", "usage", "-n", namespace)

    def calls():
        found = operator_calls(audit_log)
        return found if ("finetune.ai", "finetunejobs", "patch", True) in found else None

    used = wait_for(calls, 30, "the operator's calls in the audit log")
    namespaced, cluster_scoped = granted(cluster, namespace)

    # The test operator watches every namespace, so its lists and watches of namespaced kinds are
    # cluster-wide requests: a namespaced install makes the same ones per watched namespace.
    missing = sorted((g, r, v) for g, r, v, _ in used
                     if (g, r, v) not in (cluster_scoped if r.split("/")[0] in CLUSTER_SCOPED else namespaced))
    assert missing == [], f"the operator made calls the chart does not grant: {missing}"

    used_rules = {(g, r, v) for g, r, v, _ in used}
    grants = namespaced | cluster_scoped
    unused = sorted(grants - used_rules - set(BEYOND_ONE_PIPELINE))
    assert unused == [], f"the chart grants what no call used: {unused}\nused: {sorted(used_rules)}"
    stale = sorted(set(BEYOND_ONE_PIPELINE) - grants)
    assert stale == [], f"BEYOND_ONE_PIPELINE names rules the chart no longer grants: {stale}"
