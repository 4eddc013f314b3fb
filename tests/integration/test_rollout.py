"""A Rollout on the dev cluster: real serving Pods, a real Prometheus, traffic split by an HTTPRoute.

The serving Pods run the OpenAI-compatible dev server on a tiny model with a LoRA adapter per
ModelVersion; Prometheus discovers and scrapes them; a load generator sends requests to the
stable and canary Services' Pods in the proportion the HTTPRoute's weights say. A "bad"
version carries the server's test-only fault file, so every request to it fails.

The tests run in order and share one Rollout, like a day in the life of a model:
first version -> good canary promoted -> bad canary rolled back by analysis -> emergency
abort -> operator restart mid-canary -> declarative rollback by pinning an earlier version.
"""

from __future__ import annotations

import json
import subprocess
import time
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
RO = "chat"
MODEL = "chat-model"
INTERVAL_S = 2
FAILURE_LIMIT = 0
PASSING = {"taskAccuracy": 0.9, "formatCompliance": 1.0, "safetyPassRate": 1.0, "generalScore": 1.0, "latencySeconds": 0.1}


def rollout(prometheus_url: str, selector: dict[str, str] | None = None, pause: bool = False) -> str:
    steps = list(canary.DEFAULT_STEPS)
    if pause:
        steps.insert(1, {"pause": {}})
    # The canary's error rate is judged against stable's: the same query for both versions.
    return yaml.safe_dump(canary.rollout(RO, MODEL, prometheus_url, selector=selector, steps=steps,
                                         interval_s=INTERVAL_S, failure_limit=FAILURE_LIMIT, max_increase=0.2))


class Stack:
    def __init__(self, cluster, namespace, operator, prometheus, models: dict[str, Path]):
        self.cluster, self.namespace, self.operator, self.prometheus = cluster, namespace, operator, prometheus
        self.models = models
        self.traffic: canary.TrafficLoop | None = None

    def status(self) -> dict:
        return self.cluster.get("rollout.finetune.ai", RO, self.namespace).get("status") or {}

    def wait(self, check, timeout: float, what: str):
        """`wait_for`, with the Rollout's phase, message and analysis in the failure."""
        try:
            return wait_for(check, timeout, what)
        except AssertionError as exc:
            s = self.status()
            raise AssertionError(f"{exc}\nRollout: phase {s.get('phase')}, message {s.get('message')!r}, "
                                 f"weights {self.weights()}, analysis {json.dumps(s.get('analysis'))[:3000]}") from None

    def weights(self) -> dict[str, int]:
        return canary.route_weights(self.cluster.get("httproute", RO, self.namespace))

    def register(self, version: str) -> None:
        # Serving Pods check the artifact against the registered digest: register the real one.
        path = self.models[version]
        manifest = canary.model_version(MODEL, version, path, path.parent / "base", metrics=PASSING,
                                        digest=digest_files(path))
        self.cluster.apply(yaml.safe_dump(manifest), self.namespace)

    def mv_phase(self, version: str) -> str | None:
        return (self.cluster.get("modelversion", f"{MODEL}-{version}", self.namespace).get("status") or {}).get("phase")

    def wait_mv_phase(self, version: str, phase: str, timeout: float = 30) -> None:
        """The ModelVersion controller derives the phase from the Rollout's serving record."""
        self.wait(lambda: self.mv_phase(version) == phase, timeout, f"{MODEL}-{version} to be {phase}")

    def start_load(self) -> None:
        """Steady traffic through the route, in short bounded runs until the scenario ends."""
        self.traffic = canary.TrafficLoop(self.cluster.kubeconfig, self.namespace, RO, model=MODEL,
                                          limit_seconds=900).start()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serving")
    base = make_tiny_model(root / "base")
    return {
        "v1": canary.make_adapter(base, root / "v1", 1),
        "v2": canary.make_adapter(base, root / "v2", 2),
        "v3": canary.make_adapter(base, root / "v3", 3, faulty=True),
        "v4": canary.make_adapter(base, root / "v4", 4),
        "v5": canary.make_adapter(base, root / "v5", 5),
    }


@pytest.fixture(scope="module")
def gateway_api_crds(cluster):
    canary.install_httproute_crd(cluster.state)


@pytest.fixture(scope="module")
def module_namespace(cluster):
    name = f"rollout-{int(time.time()) % 100000}"
    cluster.kubectl("create", "namespace", name)
    wait_for(lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0, 60, "default SA")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def stack(cluster, module_namespace, _operator_process, gateway_api_crds, models, tmp_path_factory):
    from hack.prometheus.server import PrometheusError, start_serving_prometheus

    try:
        prometheus = start_serving_prometheus(cluster.kubeconfig, [module_namespace], tmp_path_factory.mktemp("prometheus"))
    except PrometheusError as exc:
        pytest.fail(str(exc))
    s = Stack(cluster, module_namespace, _operator_process, prometheus, models)
    cluster.apply(yaml.safe_dump(canary.httproute(RO, "chat.example.internal")), module_namespace)
    yield s
    if s.traffic:
        s.traffic.stop()
    prometheus.stop()


def test_first_version_becomes_stable_without_a_canary(stack):
    stack.register("v1")
    stack.cluster.apply(rollout(stack.prometheus.url), stack.namespace)
    status = stack.wait(lambda: (s := stack.status()).get("phase") == "Healthy" and s, 180, "the first version to serve")
    assert status["stableVersion"] == "v1" and not status.get("candidateVersion")
    stack.wait_mv_phase("v1", "Production")
    assert stack.weights() == {f"{RO}-stable": 100, f"{RO}-canary": 0}
    ready = [c for c in status["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "True" and ready["observedGeneration"] == 1
    stack.start_load()
    stack.wait(lambda: stack.prometheus.query(f'finetune_serve_requests_total{{namespace="{stack.namespace}", model_version="v1"}}'),
             60, "Prometheus to scrape v1's request counter")


def test_good_candidate_goes_through_every_step_to_100(stack):
    stack.register("v2")
    seen_weights = set()

    def promoted():
        s = stack.status()
        if s.get("candidateVersion") == "v2":
            seen_weights.add(s.get("canaryWeight"))
        return s.get("phase") == "Healthy" and s.get("stableVersion") == "v2" and s

    status = stack.wait(promoted, 240, "v2 to be promoted")
    assert {30, 60} <= seen_weights, seen_weights
    assert status["history"][-1]["action"] == "promote" and status["history"][-1]["to"] == "v2"
    stack.wait_mv_phase("v2", "Production")
    stack.wait_mv_phase("v1", "Deprecated")
    assert stack.weights() == {f"{RO}-stable": 100, f"{RO}-canary": 0}
    # Real requests reached the canary through the route while it was weighted in.
    counts = stack.prometheus.query(f'sum(finetune_serve_requests_total{{namespace="{stack.namespace}", model_version="v2"}})')
    assert counts and float(counts[0]["value"][1]) > 0


def test_bad_candidate_is_rolled_back_automatically(stack):
    stack.register("v3")
    # Timed from the analysis step: the setWeight step before it is done only once v3's Pods are
    # Available (after their artifact check) and the HTTPRoute carries the weight.
    started = stack.wait(
        lambda: (s := stack.status()).get("candidateVersion") == "v3" and s.get("canaryWeight", 0) > 0
        and (s.get("currentStepIndex") or 0) >= 1 and time.monotonic(),
        120, "v3's canary to get traffic and its analysis to start",
    )
    status = stack.wait(lambda: (s := stack.status()).get("phase") == "Degraded" and s, 120, "v3 to be rolled back")
    elapsed = time.monotonic() - started
    # The first measurement is taken once the analysis step starts; failureLimit 0 fails on the
    # first failed measurement; allow the query window to see errors and 10 s of slack.
    assert elapsed <= INTERVAL_S * (FAILURE_LIMIT + 1) + 10 + 10, f"rolled back after {elapsed:.1f}s"
    assert status["stableVersion"] == "v2" and not status.get("candidateVersion")
    assert "error-rate" in status["message"] and "> maxIncrease 0.2" in status["message"]
    # Judged against stable: both values, the test and the decision are in status.
    judgement = status["judgement"]
    assert (judgement["candidate"], judgement["stable"], judgement["verdict"], judgement["decision"]) == (
        "v3", "v2", "Failed", "rollback")
    assert "canary 1 vs stable 0" in judgement["figures"][0], judgement
    failed = status["analysis"]["metrics"][0]["measurements"][-1]
    assert failed["value"] == 1.0 and failed["stableValue"] == 0.0
    assert stack.weights() == {f"{RO}-stable": 100, f"{RO}-canary": 0}
    assert status["history"][-1]["action"] == "rollback" and status["history"][-1]["from"] == "v3"
    # The version itself records what happened to it.
    mv = stack.cluster.get("modelversion", f"{MODEL}-v3", stack.namespace)
    serving = next(c for c in mv["status"]["conditions"] if c["type"] == "Serving")
    assert (serving["status"], serving["reason"]) == ("False", "AnalysisFailed") and "error-rate" in serving["message"]
    assert (mv["status"]["serving"]["state"], mv["status"]["serving"]["rollout"]) == ("Refused", RO)
    # Tracking does not retry the version it rolled back.
    assert stack.status().get("candidateVersion") is None


def test_emergency_abort_puts_all_traffic_on_stable_within_5s(stack):
    stack.cluster.apply(rollout(stack.prometheus.url, pause=True), stack.namespace)
    stack.register("v4")
    stack.wait(lambda: (s := stack.status()).get("phase") == "Paused" and s.get("candidateVersion") == "v4", 120, "v4 paused at 30%")
    assert stack.weights()[f"{RO}-canary"] == 30
    plugin = [str(ROOT / "bin" / "kubectl-finetune"), "--kubeconfig", stack.cluster.kubeconfig, "-n", stack.namespace]
    started = time.monotonic()
    subprocess.run([*plugin, "abort", RO, "--reason", "pager went off"], check=True, capture_output=True)
    stack.wait(lambda: stack.weights()[f"{RO}-canary"] == 0, 5, "the canary weight to drop to 0")
    assert time.monotonic() - started <= 5
    status = stack.wait(lambda: (s := stack.status()).get("phase") == "Degraded" and s, 10, "Degraded after abort")
    assert status["history"][-1]["action"] == "abort" and "pager went off" in status["history"][-1]["reason"]
    history = subprocess.run([*plugin, "history", RO], check=True, capture_output=True, text=True).stdout
    assert "abort" in history and "promote" in history


def test_operator_restart_mid_rollout_continues_from_the_recorded_step(stack):
    stack.register("v5")
    before = stack.wait(
        lambda: (s := stack.status()).get("phase") == "Paused" and s.get("candidateVersion") == "v5" and s, 120, "v5 paused"
    )
    stack.operator.restart(stack.cluster.kubeconfig)
    after = stack.wait(lambda: (s := stack.status()).get("observedGeneration") and s, 30, "status after restart")
    assert after["currentStepIndex"] == before["currentStepIndex"]
    assert after["canaryWeight"] == before["canaryWeight"] == 30
    plugin = [str(ROOT / "bin" / "kubectl-finetune"), "--kubeconfig", stack.cluster.kubeconfig, "-n", stack.namespace]
    subprocess.run([*plugin, "promote", RO], check=True, capture_output=True)
    status = stack.wait(lambda: (s := stack.status()).get("phase") == "Healthy" and s.get("stableVersion") == "v5" and s,
                      180, "v5 promoted after the restart")
    assert status["history"][-1]["action"] == "promote"


def test_pinning_an_earlier_version_rolls_back_without_analysis(stack):
    before = stack.cluster.get("rollout.finetune.ai", RO, stack.namespace)
    assert before["status"]["stableVersion"] == "v5"
    assert next(c for c in before["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"
    stack.cluster.apply(rollout(stack.prometheus.url, selector={"version": "v2"}), stack.namespace)
    # CI waits with plain kubectl: the previous run's Ready=True (an older observedGeneration) must not match.
    stack.cluster.kubectl("wait", "--for=condition=Ready", f"rollout.finetune.ai/{RO}", "-n", stack.namespace,
                          "--timeout=60s")
    waited = stack.cluster.get("rollout.finetune.ai", RO, stack.namespace)
    assert waited["metadata"]["generation"] > before["metadata"]["generation"]
    assert waited["status"]["observedGeneration"] == waited["metadata"]["generation"]
    assert waited["status"]["stableVersion"] == "v2"
    status = stack.wait(lambda: (s := stack.status()).get("stableVersion") == "v2" and s.get("phase") == "RolledBack" and s,
                      60, "the pinned earlier version to serve")
    assert not status.get("candidateVersion") and not status.get("analysis")
    assert status["history"][-1]["action"] == "rollback" and "pinned" in status["history"][-1]["reason"]
    assert stack.weights() == {f"{RO}-stable": 100, f"{RO}-canary": 0}
    stack.wait_mv_phase("v2", "Production")
    stack.wait_mv_phase("v5", "Deprecated")
    stack.traffic.stop()
    sent, backends = stack.traffic.sent(), stack.traffic.backends()
    assert sent > 0 and {f"{RO}-stable", f"{RO}-canary"} <= backends, backends
