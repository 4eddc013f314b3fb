"""The chart's monitoring objects: off by default; when on, accepted by the API server under the
prometheus-operator CRDs (from their Go module, `make thirdparty-crds`) and carrying what the
dashboards and rules need."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from devcluster import controlplane

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "finetune-operator"
MONITORING = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
              "--set", "metrics.servingPodMonitor.enabled=true", "--set", "grafana.dashboards.enabled=true"]


def template(cluster, namespace: str, *values: str) -> list[dict]:
    binary = Path(cluster.state.bin_dir) / "helm"
    result = subprocess.run([str(binary), "template", "ft", str(CHART), "--namespace", namespace,
                             "--kube-version", "1.36.3", *values], capture_output=True, text=True)
    assert result.returncode == 0, f"helm template:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_monitoring_objects_are_off_by_default(cluster, namespace):
    docs = template(cluster, namespace)
    assert not [d["kind"] for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})]


def test_monitoring_objects_are_accepted_under_the_prometheus_operator_crds(cluster, namespace):
    crds = sorted((controlplane.thirdparty_crds_dir() / "prometheus-operator").glob("*.yaml"))
    assert {c.name for c in crds} >= {"monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_podmonitors.yaml",
                                      "monitoring.coreos.com_prometheusrules.yaml"}
    for crd in crds:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    controlplane.wait_for_crds(cluster.state, crds)

    docs = template(cluster, namespace, *MONITORING)
    monitoring = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert sorted(d["kind"] for d in monitoring) == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(dashboards) == 4
    for configmap in dashboards:
        (text,) = configmap["data"].values()
        assert json.loads(text)["panels"], configmap["metadata"]["name"]
    rule = next(d for d in monitoring if d["kind"] == "PrometheusRule")
    shipped = yaml.safe_load((ROOT / "config" / "prometheus" / "rules.yaml").read_text())
    assert rule["spec"] == shipped

    # A field the schema does not know is refused (strict validation), so acceptance means something.
    broken = json.loads(json.dumps(rule))
    broken["spec"]["groups"][0]["rules"][0]["expresion"] = "1"
    refused = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                              input=yaml.safe_dump(broken), check=False)
    assert refused.returncode != 0 and "expresion" in refused.stderr

    cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump_all(monitoring + dashboards))
