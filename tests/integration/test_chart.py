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


@pytest.mark.parametrize("namespaced", [False, True], ids=["clusterwide", "namespaced-with-peering"])
def test_chart_is_accepted_by_the_api_server(cluster, namespace, namespaced):
    values = ["--set", "peering.enabled=true"] if namespaced else ["--set", "clusterWide=true"]
    # The chart's own CRDs (ours and kopf's peering) go in first, as Helm installs crds/ first.
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    rendered = helm(cluster, "template", "ft", str(CHART), "--namespace", namespace, "--kube-version", "1.36.3", *values)
    kinds = {line.split(":", 1)[1].strip() for line in rendered.splitlines() if line.startswith("kind:")}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ValidatingAdmissionPolicy"} <= kinds
    assert ("ClusterRoleBinding" in kinds and "RoleBinding" not in kinds) if not namespaced else {"Role", "RoleBinding"} <= kinds
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered)


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
        ("watch", "pods"),
    ]
    assert [(v, r) for v, r in needed if can(v, r) != "yes"] == []
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
