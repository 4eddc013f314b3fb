"""examples/gitops/support-tickets against the real API server: every manifest the Application
syncs passes a server-side dry run (schema, CEL rules, admission policies) with the Gateway
API CRDs installed, as Argo CD's own dry run before a sync would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from devcluster import controlplane

ROOT = Path(__file__).resolve().parents[2]
SYNCED = ROOT / "examples" / "gitops" / "support-tickets"


@pytest.fixture(scope="module")
def gateway_crds(cluster) -> None:
    try:
        directory = controlplane.thirdparty_crds_dir()
    except controlplane.ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    files = sorted((directory / "gateway-api").glob("*.yaml"))
    assert files, directory
    for f in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    controlplane.wait_for_crds(cluster.state, files)


def manifests() -> list[str]:
    return yaml.safe_load((SYNCED / "kustomization.yaml").read_text())["resources"]


@pytest.mark.parametrize("name", manifests())
def test_server_side_dry_run_accepts_every_synced_manifest(cluster, namespace, gateway_crds, name):
    result = cluster.kubectl("apply", "--dry-run=server", "--server-side", "-n", namespace, "-f", str(SYNCED / name),
                             "-o", "json", check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["metadata"]["namespace"] == namespace


def test_the_dry_run_rejects_a_broken_manifest(cluster, namespace):
    manifest = yaml.safe_load((SYNCED / "rollout.yaml").read_text())
    manifest["spec"]["strategy"]["canary"]["steps"][0] = {"setWeight": 120}
    result = cluster.kubectl("apply", "--dry-run=server", "--server-side", "-n", namespace, "-f", "-",
                             input=json.dumps(manifest), check=False)
    assert result.returncode != 0 and "setWeight" in result.stderr, result.stderr
