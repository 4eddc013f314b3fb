"""The Helm chart renders, the API server accepts everything in it, and its RBAC is enough.

The operator's ServiceAccount must be able to do exactly what the controllers do — create the
Jobs, ConfigMaps, Roles and Deployments of the pipeline, register ModelVersions, patch route
weights — and no more than that: it must not read Secrets or touch Nodes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from devcluster import controlplane

pytestmark = pytest.mark.cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "finetune-operator"


def helm(cluster, *args: str) -> str:
    binary = Path(cluster.state.bin_dir) / "helm"
    result = subprocess.run([str(binary), *args], capture_output=True, text=True)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def test_chart_lints(cluster):
    helm(cluster, "lint", str(CHART))


@pytest.mark.parametrize(
    ("namespaced", "values"),
    [
        (False, ["--set", "clusterWide=true"]),
        (True, ["--set", "peering.enabled=true", "--set", "leaderElection.enabled=false", "--set", "replicaCount=1"]),
        (True, []),
    ],
    ids=["clusterwide", "namespaced-with-peering", "default-two-replicas-leader-election"],
)
def test_chart_is_accepted_by_the_api_server(cluster, namespace, namespaced, values):
    # The chart's own CRDs (ours and kopf's peering) go in first, as Helm installs crds/ first.
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    rendered = helm(cluster, "template", "ft", str(CHART), "--namespace", namespace, "--kube-version", "1.36.3", *values)
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ValidatingAdmissionPolicy"} <= kinds
    # The operator's own rules: a ClusterRole cluster-wide, else a Role per watched namespace and
    # no cluster-scoped grant at all (a namespaced operator scans neither Namespaces nor CRDs); the
    # leader-election Role (one Lease in the release namespace) either way when it is on.
    operator_bindings = {d["metadata"]["name"] for d in docs if d["kind"] == "RoleBinding"} - {"ft-finetune-operator-leader-election"}
    if namespaced:
        assert operator_bindings
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, sorted(kinds)
    else:
        assert {"ClusterRole", "ClusterRoleBinding"} <= kinds and not operator_bindings
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered)


def rendered_docs(cluster, namespace, *values: str) -> dict[tuple[str, str], dict]:
    rendered = helm(cluster, "template", "ft", str(CHART), "--namespace", namespace, "--kube-version", "1.36.3", *values)
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}


def test_default_install_is_two_replicas_one_active_with_a_disruption_budget(cluster):
    docs = rendered_docs(cluster, "ops")
    deployment = docs[("Deployment", "ft-finetune-operator")]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["FINETUNE_LEADER_ELECTION"], env["FINETUNE_LEADER_ELECTION_NAMESPACE"], env["FINETUNE_LEADER_ELECTION_NAME"]) == \
        ("on", "ops", "ft-finetune-operator")
    assert (env["FINETUNE_LEASE_DURATION_SECONDS"], env["FINETUNE_LEASE_RENEW_DEADLINE_SECONDS"],
            env["FINETUNE_LEASE_RETRY_PERIOD_SECONDS"], env["FINETUNE_PEERING"]) == ("15", "10", "2", "off")
    budget = docs[("PodDisruptionBudget", "ft-finetune-operator")]
    assert budget["spec"] == {"minAvailable": 1, "selector": deployment["spec"]["selector"]}
    role = docs[("Role", "ft-finetune-operator-leader-election")]
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["ft-finetune-operator"],
         "verbs": ["get", "update"]},
    ]
    assert docs[("RoleBinding", "ft-finetune-operator-leader-election")]["roleRef"]["name"] == "ft-finetune-operator-leader-election"


@pytest.mark.parametrize(
    ("values", "replicas", "strategy"),
    [
        (["--set", "replicaCount=1"], 1, "RollingUpdate"),
        (["--set", "leaderElection.enabled=false"], 1, "Recreate"),
        (["--set", "podDisruptionBudget.enabled=false"], 2, "RollingUpdate"),
    ],
    ids=["one-replica", "no-leader-election-one-replica-recreate", "budget-off"],
)
def test_no_disruption_budget_without_a_second_replica_or_when_off(cluster, values, replicas, strategy):
    docs = rendered_docs(cluster, "ops", *values)
    deployment = docs[("Deployment", "ft-finetune-operator")]
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]["type"]) == (replicas, strategy)
    assert not [key for key in docs if key[0] == "PodDisruptionBudget"]
    lease_role = ("Role", "ft-finetune-operator-leader-election") in docs
    assert lease_role == ("leaderElection.enabled=false" not in values)


def test_peering_and_leader_election_together_are_refused(cluster):
    binary = Path(cluster.state.bin_dir) / "helm"
    result = subprocess.run([str(binary), "template", "ft", str(CHART), "--kube-version", "1.36.3", "--set", "peering.enabled=true"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "leaderElection.enabled=false" in result.stderr


def install_httproute_crd(cluster) -> None:
    crd = next((controlplane.thirdparty_crds_dir() / "gateway-api").glob("*httproutes*.yaml"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    controlplane.wait_for_crds(cluster.state, [crd])


def test_operator_rbac_allows_what_the_controllers_do_and_no_more(cluster, namespace):
    install_httproute_crd(cluster)
    rendered = helm(cluster, "template", "ft", str(CHART), "--namespace", namespace, "--kube-version", "1.36.3",
                    "--set", "fullnameOverride=ft-" + namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rendered)
    sa = f"system:serviceaccount:{namespace}:ft-{namespace}"

    def can(verb, resource, where=namespace):
        out = cluster.kubectl("auth", "can-i", verb, resource, "-n", where, f"--as={sa}", check=False)
        return out.stdout.strip()

    needed = [
        ("create", "jobs.batch"), ("delete", "jobs.batch"), ("create", "configmaps"), ("create", "roles.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io"), ("create", "serviceaccounts"),
        ("create", "persistentvolumeclaims"), ("create", "modelversions.finetune.ai"),
        ("patch", "finetunejobs.finetune.ai/status"), ("patch", "rollouts.finetune.ai/status"),
        ("patch", "deployments.apps"), ("patch", "httproutes.gateway.networking.k8s.io"), ("create", "events"),
        ("watch", "pods"), ("create", "leases.coordination.k8s.io"), ("update", f"leases.coordination.k8s.io/ft-{namespace}"),
    ]
    assert [(v, r) for v, r in needed if can(v, r) != "yes"] == []
    # Leader election: its one Lease only.
    assert can("update", "leases.coordination.k8s.io/another-lease") == "no"
    forbidden = [("get", "secrets"), ("list", "secrets"), ("delete", "nodes"), ("create", "pods"), ("delete", "modelversions.finetune.ai"),
                 ("update", "jobs.batch"), ("delete", "roles.rbac.authorization.k8s.io"),
                 ("list", "namespaces")]
    assert [(v, r) for v, r in forbidden if can(v, r) != "no"] == []
    # Server-side apply of a new serving Deployment (the API server checks patch and create).
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "srv", "namespace": namespace},
                  "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
                           "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    cluster.kubectl("apply", "--server-side", "--field-manager=finetune-operator", "--dry-run=server", f"--as={sa}",
                    "-f", "-", input=json.dumps(deployment))
    # Namespaced by default: nothing it needs is granted outside the release namespace.
    assert [(v, r) for v, r in needed if can(v, r, "kube-system") != "no"] == []
    cluster.kubectl("delete", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/instance=ft", check=False)
