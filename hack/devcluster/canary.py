"""What a Rollout needs around it on the dev cluster, shared by its tests, its demo and its benchmark.

The dev cluster has no Gateway data plane, so an HTTPRoute is only an object whose weights the
operator writes; `TrafficLoop` plays the gateway (benchmarks/loadgen.py) and sends requests to
the stable and canary Pods in the proportion the route says, so the serving Pods' metrics in
Prometheus reflect the split. A "bad" version is an adapter directory carrying the dev server's
fault file (`finetune-serve-faults.json`): every request to it fails, as a broken build would.

Everything here builds manifests (dicts) or runs in-process helpers; applying them is the
caller's business (tests go through their cluster fixture, the demo through `kubectl`).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import controlplane

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_IMAGE = "ghcr.io/finetune-operator/server:0.1.0"
FAULTS_FILE = "finetune-serve-faults.json"
HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"
SERVING_PORT = 8000



def error_rate_query(window: str = "10s") -> str:
    """The canary's error ratio over `window`; empty (inconclusive) until it served a request."""
    labels = '{namespace="{{namespace}}", rollout="{{rollout}}", model_version="{{canary}}"}'
    return (
        "(sum(rate(finetune_serve_request_errors_total" + labels + "[" + window + "])) or vector(0))"
        " / sum(rate(finetune_serve_requests_total" + labels + "[" + window + "]))"
    )


DEFAULT_STEPS: tuple[dict[str, Any], ...] = (
    {"setWeight": 30}, {"analysis": {}}, {"setWeight": 60}, {"analysis": {}}, {"setWeight": 100},
)


# ---- models


def make_adapter(base: Path, directory: Path, seed: int, *, faulty: bool = False, identity: bool = False) -> Path:
    """A LoRA adapter for `base` in `directory`: random weights from `seed`, or the identity.

    `faulty` adds the dev server's fault file: the server answers every request to it with a 500.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=identity),
    )
    model.save_pretrained(directory)
    if faulty:
        mark_faulty(directory)
    return directory


def mark_faulty(directory: Path, error_rate: float = 1.0) -> Path:
    (directory / FAULTS_FILE).write_text(json.dumps({"errorRate": error_rate}))
    return directory


# ---- manifests


def model_version(model: str, version: str, artifact: Path, base: Path, *, metrics: Mapping[str, float],
                  base_metrics: Mapping[str, float] | None = None, gates: Sequence[Mapping[str, Any]] | None = None,
                  digest: str | None = None) -> dict[str, Any]:
    """A ModelVersion registered with its evaluation figures; the operator judges the gates."""
    return {
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {
            "name": f"{model}-{version}",
            "labels": {"finetune.ai/model-name": model, "finetune.ai/version-number": version.lstrip("v")},
        },
        "spec": {
            "modelName": model,
            "version": version,
            "baseModel": {"uri": str(base)},
            "artifact": {"uri": str(artifact), "digest": digest or f"sha256:{'0' * 64}", "type": "adapter"},
            "evaluation": {
                "metrics": dict(metrics),
                "baseMetrics": dict(base_metrics if base_metrics is not None else metrics),
                "gates": list(gates or [
                    {"name": "formatCompliance", "metric": "formatCompliance", "comparator": "GreaterThan",
                     "threshold": 0.95},
                ]),
            },
        },
    }


def httproute(name: str, hostname: str | None = None) -> dict[str, Any]:
    """The route a Rollout's Gateway API router weights: stable 100, canary 0 to begin with."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "inference-gateway"}],
            "hostnames": [hostname or f"{name}.example.internal"],
            "rules": [{"backendRefs": [
                {"name": f"{name}-stable", "port": SERVING_PORT, "weight": 100},
                {"name": f"{name}-canary", "port": SERVING_PORT, "weight": 0},
            ]}],
        },
    }


def rollout(name: str, model: str, prometheus_url: str, *, selector: Mapping[str, str] | None = None,
            steps: Sequence[Mapping[str, Any]] = DEFAULT_STEPS, interval_s: int = 2, count: int = 3,
            failure_limit: int = 0, max_error_rate: float = 0.2, scale_down_delay_s: int = 0,
            window: str = "10s", cpu: str | None = None, max_increase: float | None = None) -> dict[str, Any]:
    """A Rollout of `model` on the dev server, routed by the HTTPRoute `name`, analysed by error rate.

    `max_increase` judges the canary's error rate relative to stable's (the same query for both
    versions; at most this much higher) instead of the absolute `max_error_rate`.
    """
    thresholds = {"maxIncrease": max_increase} if max_increase is not None else {"max": max_error_rate}
    return {
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "modelName": model,
            **dict(selector or {"track": "LatestApproved"}),
            "scaleDownDelaySeconds": scale_down_delay_s,
            "serving": {
                "type": "custom",
                "image": SERVER_IMAGE,
                "args": ["--model", "$(BASE_MODEL)", "--adapter", "$(MODEL_NAME)=$(ADAPTER_PATH)",
                         "--version", "$(MODEL_VERSION)", "--port", "$(PORT)", "--served-model-name", "base"],
                "resources": {"gpus": 0, **({"cpu": cpu} if cpu else {})},
            },
            "trafficRouter": {"gatewayAPI": {"httpRoute": name}},
            "analysis": {
                "prometheus": {"address": prometheus_url},
                "metrics": [{
                    "name": "error-rate",
                    "query": error_rate_query(window),
                    "thresholds": thresholds,
                    "interval": f"{interval_s}s",
                    "count": count,
                    "failureLimit": failure_limit,
                    "inconclusiveLimit": 20,
                }],
            },
            "strategy": {"canary": {"steps": [dict(step) for step in steps]}},
        },
    }


def route_weights(route: Mapping[str, Any]) -> dict[str, int]:
    """backendRef name -> weight of an HTTPRoute object (Gateway API's default weight is 1)."""
    return {ref["name"]: ref.get("weight", 1) for ref in route["spec"]["rules"][0]["backendRefs"]}


def httproute_crd_file() -> Path:
    """The Gateway API HTTPRoute CRD, from its Go module (`make thirdparty-crds` fetches it once)."""
    return next((controlplane.thirdparty_crds_dir() / "gateway-api").glob("*httproutes*.yaml"))


def install_httproute_crd(state: controlplane.ClusterState) -> None:
    """Applies the HTTPRoute CRD and waits until it is Established (its status may not exist yet)."""
    controlplane.kubectl(state, "apply", "--server-side", "--force-conflicts", "-f", str(httproute_crd_file()))
    controlplane.wait_for_condition(state, [f"customresourcedefinition/{HTTPROUTE_CRD}"], "Established")


# ---- traffic


class TrafficLoop:
    """Steady requests through the HTTPRoute in short bounded runs, in a thread, until stopped."""

    def __init__(self, kubeconfig: str, namespace: str, route: str, *, model: str, concurrency: int = 2,
                 max_tokens: int = 4, run_seconds: float = 2.0, limit_seconds: float = 1800):
        from benchmarks import loadgen

        source = loadgen.HTTPRouteSource(kubeconfig, namespace, route)
        self.load = loadgen.LoadGenerator(source, concurrency=concurrency, max_tokens=max_tokens, refresh=0.5,
                                          seed=1, model=model)
        self.run_seconds, self.limit_seconds = run_seconds, limit_seconds
        self.reports: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TrafficLoop:
        def loop() -> None:
            deadline = time.monotonic() + self.limit_seconds
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.reports.append(self.load.run(duration=self.run_seconds))

        self._thread = threading.Thread(target=loop, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def sent(self) -> int:
        return sum(report.sent for report in self.reports)

    def backends(self) -> set[str]:
        return {name for report in self.reports for name in report.counts()}
