"""Canary analysis against a real Prometheus scraping real (fake-model) servers.

First without a cluster: two servers on their own loopback addresses behind a file_sd job, one
healthy and one failing 30% of its requests, load from the load generator, and the analysis
loop (provider + logic) run as the Rollout controller runs it. Then with the dev cluster: a
serving Pod is discovered through the serving scrape job (Kubernetes Pod discovery and its
relabelling), its series carry the target labels the query templates select on, and the
built-in error-rate query measures it.
"""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from benchmarks import loadgen
from finetune_operator.analysis import MeasureResult
from finetune_operator.api.rollout import AnalysisMetric, AnalysisPhase, AnalysisStatus, MeasurementPhase
from finetune_operator.logic import analysis
from finetune_operator.logic.analysis import Measured, QueryVars
from tests.helpers import restricted, wait_for
from tests.prometheus import PrometheusServer, prometheus_factory  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, ROLLOUT = "prod", "summarizer"
GOOD, BAD = "v1", "v2"
TRAFFIC = 300


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def start_fake_server(address: str, version: str, error_rate: float, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port(address)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hack.prometheus.fake_server", "--host", address, "--port", str(port),
             "--model", ROLLOUT, "--model-version", version, "--error-rate", str(error_rate), "--latency", "0.002"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://{address}:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"fake server {url} exited with {proc.returncode}: {log.read_text()}")
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:  # noqa: S310 - local
            return response.status == 200

    wait_for(healthy, 30, f"fake server {url}")
    return proc, url


@pytest.fixture
def two_servers(tmp_path) -> Iterator[dict[str, str]]:
    """A healthy server (GOOD, no errors) on 127.0.8.1 and a failing one (BAD, 30% errors) on 127.0.8.2."""
    procs, urls = [], {}
    try:
        for address, version, error_rate in (("127.0.8.1", GOOD, 0.0), ("127.0.8.2", BAD, 0.3)):
            proc, url = start_fake_server(address, version, error_rate, tmp_path / f"{version}.log")
            procs.append(proc)
            urls[version] = url
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def run_analysis(
    metrics: Sequence[AnalysisMetric], measure, variables: QueryVars, timeout: float = 60
) -> AnalysisStatus:
    """The analysis loop as the Rollout controller runs it: measure what is due, record, wait."""
    now = datetime.datetime.now(datetime.UTC)
    status = analysis.start_run(metrics, 0, now)
    deadline = time.monotonic() + timeout
    while status.phase == AnalysisPhase.RUNNING:
        assert time.monotonic() < deadline, f"analysis still running after {timeout}s: {status}"
        now = datetime.datetime.now(datetime.UTC)
        measured = {}
        for metric in analysis.due_metrics(metrics, status, now):
            result: MeasureResult = measure(analysis.render_query(metric.query, variables))
            measured[metric.name] = Measured(result.value, result.error)
        status = analysis.advance(metrics, status, measured, now)
        next_at = analysis.next_due(metrics, status)
        if next_at is not None:
            time.sleep(max(0.0, (next_at - datetime.datetime.now(datetime.UTC)).total_seconds()))
    return status


def wait_for_total(prometheus: PrometheusServer, promql: str, expected: float, timeout: float = 60) -> None:
    """Polls until `promql` (one number) equals `expected`: the last requests have been scraped."""

    def reached() -> bool:
        result = prometheus.query(promql)
        current = float(result[0]["value"][1]) if result else None
        # An exception is what wait_for shows as "last seen" when it gives up.
        assert current == expected, f"{promql} is {current}"
        return True

    wait_for(reached, timeout, f"{promql} == {expected:g}")


def error_rate_metric(**overrides) -> AnalysisMetric:
    fields = {"name": "error-rate", "query": analysis.error_rate_query(), "thresholds": {"max": 0.05},
              "interval": "1s", "count": 3, "failureLimit": 2}
    fields.update(overrides)
    return AnalysisMetric.model_validate(fields)


def test_error_rate_analysis_on_real_prometheus(prometheus_factory, two_servers):  # noqa: F811
    prometheus: PrometheusServer = prometheus_factory(static=True)
    prometheus.set_targets([
        {"targets": [url.removeprefix("http://")],
         "labels": {"namespace": NAMESPACE, "rollout": ROLLOUT, "model_version": version,
                    "track": "stable" if version == GOOD else "canary"}}
        for version, url in two_servers.items()
    ])
    prometheus.wait_for_series('count(up{job="static"} == 1) == 2', what="both fake servers scraped")

    report = loadgen.LoadGenerator(
        loadgen.StaticSource([loadgen.Backend(v, 1, (url,)) for v, url in two_servers.items()]),
        concurrency=4, seed=7,
    ).run(requests=TRAFFIC)
    assert report.sent == TRAFFIC and report.unrouted == 0
    assert report.backends[GOOD].http_errors == 0
    assert report.backends[BAD].http_errors > 0
    # Wait until Prometheus has scraped the last request, then measure the rates.
    wait_for_total(prometheus, f'sum(finetune_serve_requests_total{{namespace="{NAMESPACE}"}})', TRAFFIC)

    provider = prometheus.provider()
    metric = error_rate_metric()

    good = run_analysis([metric], provider.measure, QueryVars(NAMESPACE, ROLLOUT, canary=GOOD, stable=BAD))
    [good_result] = good.metrics
    assert good.phase == AnalysisPhase.SUCCESSFUL, good
    assert (good_result.successful, good_result.failed, good_result.error) == (3, 0, 0)
    assert all(m.value == 0.0 for m in good_result.measurements)

    bad = run_analysis([metric], provider.measure, QueryVars(NAMESPACE, ROLLOUT, canary=BAD, stable=GOOD))
    [bad_result] = bad.metrics
    assert bad.phase == AnalysisPhase.FAILED, bad
    assert bad_result.failed == metric.count > metric.failure_limit
    assert all(m.phase == MeasurementPhase.FAILED and 0.2 < m.value < 0.45 for m in bad_result.measurements)
    assert bad.message.startswith("metric error-rate failed: 3 of 3 measurements failed (failureLimit 2)")
    assert "> max 0.05" in bad.message

    # No series for a version nobody serves: inconclusive (pause), never failed.
    empty = run_analysis([error_rate_metric(count=1, inconclusiveLimit=0)], provider.measure,
                         QueryVars(NAMESPACE, ROLLOUT, canary="v-nobody-serves"))
    assert empty.phase == AnalysisPhase.INCONCLUSIVE, empty
    [empty_measurement] = empty.metrics[0].measurements
    assert empty_measurement.phase == MeasurementPhase.INCONCLUSIVE
    assert empty_measurement.value is None and "no data" in empty_measurement.message

    # The canary's p95 latency relative to the stable's: the same fake latency, so about 1.
    latency = provider.measure(analysis.render_query(
        analysis.latency_p95_ratio_query(), QueryVars(NAMESPACE, ROLLOUT, canary=BAD, stable=GOOD)))
    assert latency.error is None and 0.3 < latency.value < 3.0, latency


def test_provider_errors_from_real_prometheus(prometheus_factory, two_servers):  # noqa: F811
    prometheus = prometheus_factory(static=True)
    prometheus.set_targets([{"targets": [u.removeprefix("http://") for u in two_servers.values()]}])
    prometheus.wait_for_series('count(up{job="static"} == 1) == 2', what="both fake servers scraped")
    provider = prometheus.provider()

    several = provider.measure('up{job="static"}')
    assert several.value is None
    assert several.error.startswith("the query returned 2 series (up{")
    assert "aggregate them" in several.error

    assert provider.measure('sum(up{job="static"})') == MeasureResult(value=2.0)
    assert provider.measure("scalar(sum(up{job=\"static\"}))") == MeasureResult(value=2.0)
    assert provider.measure('up{job="nothing"}') == MeasureResult()

    nan = provider.measure("0/0")
    assert nan.error is None and nan.value != nan.value  # NaN passes through; logic makes it Inconclusive

    bad = provider.measure("sum(rate(x[1m]")
    assert bad.value is None
    assert bad.error.startswith(f"prometheus {prometheus.url} rejected the query (bad_data): ")

    matrix = provider.measure('up{job="static"}[1m]')
    assert "range vector" in matrix.error

    prometheus.stop()
    down = provider.measure("sum(up)")
    assert down.error.startswith(f"prometheus {prometheus.url}: cannot connect")


# ---- the dev cluster

HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"


def serving_pod(name: str, version: str, track: str, port: int, serve: bool = True) -> dict:
    labels = {"app": f"serve-{track}" if serve else "other", "finetune.ai/rollout": ROLLOUT,
              "finetune.ai/model-version": version, "finetune.ai/track": track}
    if serve:
        labels["finetune.ai/serve"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "server",
                "image": "busybox",
                "command": ["python", "-m", "hack.prometheus.fake_server", "--port", str(port),
                            "--model", ROLLOUT, "--model-version", version, "--latency", "0.002"],
                "ports": [{"name": "http", "containerPort": port}, {"name": "debug", "containerPort": port + 1}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
            }],
        },
    }


def service(name: str, app: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


@pytest.mark.cluster
def test_kubernetes_discovery_and_default_query(cluster, namespace, prometheus_factory):  # noqa: F811
    port = free_port("127.0.0.1")
    manifests = [
        serving_pod("serve-canary", "v2", "canary", port),
        serving_pod("serve-stable", "v1", "stable", port),
        serving_pod("not-serving", "v9", "canary", port, serve=False),
        service("summarizer-canary", "serve-canary"),
        service("summarizer-stable", "serve-stable"),
    ]
    cluster.apply(restricted("\n---\n".join(json.dumps(m) for m in manifests)), namespace)
    cluster.wait_for_condition(["pod/serve-canary", "pod/serve-stable"], "Ready", namespace=namespace, timeout=90)

    prometheus = prometheus_factory(static=False, kubernetes=cluster, namespaces=[namespace])
    prometheus.wait_for_series(
        f'finetune_serve_info{{job="finetune-serving", namespace="{namespace}"}}', timeout=60,
        what="the serving Pods discovered in the dev cluster and scraped",
    )
    wait_for(lambda: len(prometheus.query(f'finetune_serve_info{{namespace="{namespace}"}}')) == 2, 30,
             "both serving Pods scraped")
    series = prometheus.query(f'finetune_serve_info{{namespace="{namespace}"}}')
    labels = sorted((s["metric"] for s in series), key=lambda m: m["pod"])
    pods = {p["metadata"]["name"]: p for p in cluster.list("pods", namespace)}
    for got, (pod, version, track) in zip(labels, [("serve-canary", "v2", "canary"), ("serve-stable", "v1", "stable")]):
        assert got["pod"] == pod
        assert got["model_version"] == version and got["exported_model_version"] == version
        assert got["track"] == track and got["rollout"] == ROLLOUT and got["namespace"] == namespace
        # Scraped at the Pod's own address on the port named http (not the debug port).
        assert got["instance"] == f"{pods[pod]['status']['podIP']}:{port}"
    targets = [t for t in prometheus.active_targets() if t["labels"].get("namespace") == namespace]
    assert sorted(t["labels"]["pod"] for t in targets) == ["serve-canary", "serve-stable"]

    # Load split by the route's weights, resolved Service -> Pods -> Pod IPs, then the
    # built-in error-rate query measures the canary.
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": ROLLOUT, "namespace": namespace},
        "spec": {"rules": [{"backendRefs": [{"name": "summarizer-stable", "port": 80, "weight": 75},
                                            {"name": "summarizer-canary", "port": 80, "weight": 25}]}]},
    }
    has_route_crd = cluster.kubectl("get", "crd", HTTPROUTE_CRD, check=False).returncode == 0
    if has_route_crd:
        cluster.apply(json.dumps(route), namespace)
    source = loadgen.HTTPRouteSource(cluster.kubeconfig, namespace, ROLLOUT,
                                     get_route=None if has_route_crd else (lambda: route))
    report = loadgen.LoadGenerator(source, concurrency=2, seed=3).run(requests=200)
    assert report.unrouted == 0 and report.sent == 200
    assert report.weights_seen[0] == {"summarizer-stable": 75, "summarizer-canary": 25}
    assert 20 <= report.counts()["summarizer-canary"] <= 80, report.as_dict()
    assert all(s.ok == s.requests for s in report.backends.values())
    wait_for_total(prometheus, f'sum(finetune_serve_requests_total{{namespace="{namespace}"}})', 200)

    status = run_analysis([error_rate_metric(count=2)], prometheus.provider().measure,
                          QueryVars(namespace, ROLLOUT, canary="v2", stable="v1"))
    assert status.phase == AnalysisPhase.SUCCESSFUL, status
    assert [m.value for m in status.metrics[0].measurements] == [0.0, 0.0]
