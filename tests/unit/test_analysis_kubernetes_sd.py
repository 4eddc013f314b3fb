"""The Kubernetes Pod discovery bridge and the serving scrape job it stands in for."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from hack.prometheus import kubernetes_sd
from tests.prometheus import SERVING_SCRAPE_CONFIG, serving_scrape_job

M = "__meta_kubernetes_"


def pod(ports=None, ip="127.1.0.5", labels=None, init=False) -> dict:
    containers = [{"name": "server", "image": "busybox", **({"ports": ports} if ports is not None else {})}]
    spec = {"nodeName": "gpu-node-0", "containers": containers}
    if init:
        spec["initContainers"] = [{"name": "fetch", "image": "busybox"}]
    return {
        "metadata": {"name": "serve-v2", "namespace": "prod", "uid": "u1",
                     "labels": labels or {"finetune.ai/model-version": "v2", "finetune.ai/serve": "true"},
                     "annotations": {"a/b": "c"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]},
        "spec": spec,
        "status": {"phase": "Running", "hostIP": "127.0.0.1", **({"podIP": ip} if ip else {}),
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.mark.parametrize(
    ("the_pod", "addresses"),
    [
        pytest.param(pod([{"name": "http", "containerPort": 8000}, {"name": "grpc", "containerPort": 9000}]),
                     ["127.1.0.5:8000", "127.1.0.5:9000"], id="one-target-per-port"),
        pytest.param(pod([]), ["127.1.0.5"], id="container-without-ports-is-one-target"),
        pytest.param(pod([{"name": "http", "containerPort": 8000}], init=True), ["127.1.0.5:8000"],
                     id="init-container-without-ports-skipped"),
        pytest.param(pod([{"name": "http", "containerPort": 8000}], ip="fd00::5"), ["[fd00::5]:8000"], id="ipv6"),
        pytest.param(pod([{"name": "http", "containerPort": 8000}], ip=None), [], id="pod-without-ip-skipped"),
    ],
)
def test_targets(the_pod, addresses):
    groups = kubernetes_sd.target_groups([the_pod])
    assert [t for g in groups for t in g["targets"]] == addresses


def test_meta_labels_match_prometheus_pod_role():
    [group] = kubernetes_sd.target_groups([pod([{"name": "http", "containerPort": 8000}])])
    labels = group["labels"]
    assert labels[f"{M}namespace"] == "prod"
    assert labels[f"{M}pod_name"] == "serve-v2"
    assert labels[f"{M}pod_ip"] == "127.1.0.5"
    assert labels[f"{M}pod_label_finetune_ai_model_version"] == "v2"
    assert labels[f"{M}pod_labelpresent_finetune_ai_serve"] == "true"
    assert labels[f"{M}pod_annotation_a_b"] == "c"
    assert labels[f"{M}pod_ready"] == "true"
    assert labels[f"{M}pod_phase"] == "Running"
    assert labels[f"{M}pod_controller_kind"] == "ReplicaSet"
    assert labels[f"{M}pod_container_name"] == "server"
    assert labels[f"{M}pod_container_port_name"] == "http"
    assert labels[f"{M}pod_container_port_number"] == "8000"
    assert labels[f"{M}pod_container_init"] == "false"


def test_to_http_sd_carries_namespaces_and_selectors():
    job = serving_scrape_job("/k/kubeconfig", ["ns-a", "ns-b"])
    bridged = kubernetes_sd.to_http_sd(job, "http://127.0.0.1:1234")
    assert "kubernetes_sd_configs" not in bridged
    assert bridged["http_sd_configs"] == [{
        "url": "http://127.0.0.1:1234/pods?namespace=ns-a&namespace=ns-b&labelSelector=finetune.ai%2Fserve%3Dtrue",
        "refresh_interval": "1s",
    }]
    assert bridged["relabel_configs"] == job["relabel_configs"]
    assert job["kubernetes_sd_configs"][0]["kubeconfig_file"] == "/k/kubeconfig"  # the input is untouched


def test_bridge_refuses_other_roles():
    with pytest.raises(ValueError, match="Pods only"):
        kubernetes_sd.to_http_sd({"kubernetes_sd_configs": [{"role": "endpoints"}]}, "http://x")


def test_serving_scrape_job_adds_the_contract_labels():
    job = yaml.safe_load(SERVING_SCRAPE_CONFIG.read_text())
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"namespace", "pod", "rollout", "model_version", "track", "__address__"} <= targets


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (hack/prometheus/install.sh)")
def test_scrape_configs_pass_promtool(tmp_path):
    """The bridged job always; the shipped kubernetes_sd job where this Prometheus build has it."""
    from tests.prometheus import supports_kubernetes_sd

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    job = serving_scrape_job(str(kubeconfig), ["prod"])
    jobs = [kubernetes_sd.to_http_sd(job, "http://127.0.0.1:1")]
    if supports_kubernetes_sd():
        jobs.append({**job, "job_name": "kubernetes"})
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": jobs}))
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
