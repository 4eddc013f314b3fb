"""The canary judged against stable, on a real Prometheus scraping real servers under real load.

Servers on their own loopback addresses behind a file_sd job (the target labels a serving Pod
gets: namespace, rollout, model_version, track), load from the load generator, and the analysis
measured exactly as the Rollout controller measures it (`handlers.rollout.measure_metric`: the
same query for canary and stable) and decided by the same logic. The verdict is what the
Rollout does: Failed rolls back, Successful promotes, Inconclusive pauses.

* 3% errors on the canary against 1% on stable: rolled back by the relative judgement, while
  the absolute `max: 0.05` passes it;
* an equally good canary: promoted;
* a canary whose answers break the JSON format 20% of the time: rolled back by the online
  format-compliance metric (the real dev server with a tiny model checks every answer);
* a canary with too little traffic: paused inconclusive (Mann–Whitney U's minimum samples).
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
from finetune_operator.api.rollout import AnalysisMetric, AnalysisPhase, AnalysisStatus
from finetune_operator.handlers.rollout import measure_metric
from finetune_operator.logic import analysis
from finetune_operator.logic.analysis import QueryVars
from tests.helpers import wait_for
from tests.prometheus import PrometheusServer, prometheus_factory  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, ROLLOUT = "prod", "summarizer"
SCHEMA = {"type": "object", "required": ["revenue"], "properties": {"revenue": {"type": "number"}}}


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def start(command: list[str], address: str, port: int, log: Path, timeout: float = 120) -> subprocess.Popen:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{address}:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"server {url} exited with {proc.returncode}: {log.read_text()}")
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:  # noqa: S310 - local
            return response.status == 200

    wait_for(healthy, timeout, f"server {url}")
    return proc


@pytest.fixture
def servers(tmp_path) -> Iterator:
    procs: list[subprocess.Popen] = []

    def fake(address: str, version: str, error_rate: float, latency: float = 0.002) -> str:
        port = free_port(address)
        procs.append(start(
            [sys.executable, "-m", "hack.prometheus.fake_server", "--host", address, "--port", str(port),
             "--model", ROLLOUT, "--model-version", version, "--error-rate", str(error_rate),
             "--latency", str(latency)],
            address, port, tmp_path / f"{version}-{address}.log"))
        return f"http://{address}:{port}"

    def dev(address: str, version: str, model: Path) -> str:
        port = free_port(address)
        procs.append(start(
            [sys.executable, "-m", "finetune_trainer", "serve", "--model", str(model), "--host", address,
             "--port", str(port), "--version", version, "--served-model-name", ROLLOUT,
             "--format-schema", json.dumps(SCHEMA), "--drain-seconds", "0"],
            address, port, tmp_path / f"{version}-{address}.log", timeout=180))
        return f"http://{address}:{port}"

    yield fake, dev
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a keep-alive connection holds the server's last thread
            proc.kill()
            proc.wait(timeout=10)


def scrape(prometheus: PrometheusServer, urls: dict[str, str]) -> None:
    prometheus.set_targets([
        {"targets": [url.removeprefix("http://")],
         "labels": {"namespace": NAMESPACE, "rollout": ROLLOUT, "model_version": version,
                    "track": "stable" if version == "v1" else "canary"}}
        for version, url in urls.items()
    ])
    prometheus.wait_for_series(f'count(up{{job="static"}} == 1) == {len(urls)}', what="servers scraped")


def load(urls: dict[str, str], requests: int, **kwargs) -> loadgen.Report:
    report = loadgen.LoadGenerator(
        loadgen.StaticSource([loadgen.Backend(v, 1, (url,)) for v, url in urls.items()]), seed=7, **kwargs,
    ).run(requests=requests)
    assert report.sent == requests and report.unrouted == 0
    return report


def wait_scraped(prometheus: PrometheusServer, expected: float) -> None:
    promql = f'sum(finetune_serve_requests_total{{namespace="{NAMESPACE}"}})'

    def reached() -> bool:
        result = prometheus.query(promql)
        current = float(result[0]["value"][1]) if result else None
        assert current == expected, f"{promql} is {current}"
        return True

    wait_for(reached, 60, f"{promql} == {expected:g}")


def judge(metrics: Sequence[AnalysisMetric], provider, canary: str = "v2", timeout: float = 60) -> AnalysisStatus:
    """The controller's loop: measure what is due (canary and stable), record, decide, wait."""
    variables = QueryVars(NAMESPACE, ROLLOUT, canary=canary, stable="v1")
    now = datetime.datetime.now(datetime.UTC)
    status = analysis.start_run(metrics, 0, now)
    deadline = time.monotonic() + timeout
    while status.phase == AnalysisPhase.RUNNING:
        assert time.monotonic() < deadline, f"analysis still running after {timeout}s: {status}"
        now = datetime.datetime.now(datetime.UTC)
        measured = {m.name: measure_metric(provider, m, variables) for m in analysis.due_metrics(metrics, status, now)}
        status = analysis.advance(metrics, status, measured, now)
        next_at = analysis.next_due(metrics, status)
        if next_at is not None:
            time.sleep(max(0.0, (next_at - datetime.datetime.now(datetime.UTC)).total_seconds()))
    return status


SELECTOR = 'namespace="{{namespace}}", rollout="{{rollout}}", model_version="{{version}}"'
# Over the whole test's traffic, so a few thousand requests give exact shares.
ERROR_RATE = (f"sum(increase(finetune_serve_request_errors_total{{{SELECTOR}}}[10m]))"
              f" / sum(increase(finetune_serve_requests_total{{{SELECTOR}}}[10m]))")


def metric(name: str, query: str, **fields) -> AnalysisMetric:
    return AnalysisMetric.model_validate({"name": name, "query": query, "interval": "1s", "count": 2, **fields})


def test_errors_judged_against_stable(prometheus_factory, servers):  # noqa: F811
    fake, _ = servers
    prometheus = prometheus_factory(static=True)
    urls = {"v1": fake("127.0.9.1", "v1", 0.01), "v2": fake("127.0.9.2", "v2", 0.03), "v3": fake("127.0.9.3", "v3", 0.01)}
    scrape(prometheus, urls)
    report = load(urls, 6000, concurrency=8, max_tokens=1)
    assert report.backends["v1"].http_errors > 0 and report.backends["v2"].http_errors > report.backends["v1"].http_errors
    wait_scraped(prometheus, 6000)
    provider = prometheus.provider()

    relative = metric("error-rate", ERROR_RATE, thresholds={"maxIncrease": 0.01})
    absolute = metric("error-rate-absolute", ERROR_RATE, thresholds={"max": 0.05})

    worse = judge([relative], provider)
    assert worse.phase == AnalysisPhase.FAILED, worse  # rolled back
    last = worse.metrics[0].measurements[-1]
    assert 0.025 < last.value < 0.035 and 0.005 < last.stable_value < 0.015, last
    assert "canary 0.0" in last.message and "> maxIncrease 0.01" in last.message

    passed = judge([absolute], provider)
    assert passed.phase == AnalysisPhase.SUCCESSFUL, passed  # an absolute 5% would have promoted it

    # An equally good canary (v3, 1% like stable) is promoted by the same relative judgement.
    equal = judge([relative], provider, canary="v3")
    assert equal.phase == AnalysisPhase.SUCCESSFUL, equal  # promoted
    last = equal.metrics[0].measurements[-1]
    assert abs(last.value - last.stable_value) < 0.005, last


def test_too_little_traffic_pauses_never_promotes(prometheus_factory, servers):  # noqa: F811
    fake, _ = servers
    prometheus = prometheus_factory(static=True)
    urls = {"v1": fake("127.0.9.11", "v1", 0.0), "v2": fake("127.0.9.12", "v2", 0.0, latency=0.05)}
    scrape(prometheus, urls)
    latency = f"sum by (le) (increase(finetune_serve_request_duration_seconds_bucket{{{SELECTOR}}}[10m]))"
    mann_whitney = metric("latency-mann-whitney", latency, mannWhitney={"minSamples": 100}, count=1)

    load(urls, 30, concurrency=2, max_tokens=1)  # about 15 requests each: too few
    wait_scraped(prometheus, 30)
    provider = prometheus.provider()
    paused = judge([mann_whitney], provider)
    assert paused.phase == AnalysisPhase.INCONCLUSIVE, paused
    assert "too few samples" in paused.metrics[0].measurements[-1].message

    # With enough traffic the same test sees the canary's 25x latency: rolled back.
    load(urls, 400, concurrency=8, max_tokens=1)
    wait_scraped(prometheus, 430)
    slower = judge([mann_whitney], provider)
    assert slower.phase == AnalysisPhase.FAILED, slower
    assert "Mann-Whitney U=" in slower.metrics[0].measurements[-1].message


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from finetune_trainer.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def json_answering(base: Path, directory: Path, format_error_rate: float) -> Path:
    """The tiny model, its answers replaced by valid JSON (the dev server's test-only faults file),
    `format_error_rate` of them cut to broken JSON."""
    directory.mkdir()
    for item in base.iterdir():
        (directory / item.name).symlink_to(item)
    (directory / "finetune-serve-faults.json").write_text(
        json.dumps({"answerText": '{"revenue": 12.5}', "formatErrorRate": format_error_rate}))
    return directory


def test_broken_json_rolled_back_by_the_format_metric(prometheus_factory, servers, tiny_model, tmp_path):  # noqa: F811
    _, dev = servers
    prometheus = prometheus_factory(static=True)
    urls = {"v1": dev("127.0.9.21", "v1", json_answering(tiny_model, tmp_path / "v1", 0.0)),
            "v2": dev("127.0.9.22", "v2", json_answering(tiny_model, tmp_path / "v2", 0.2))}
    scrape(prometheus, urls)
    load(urls, 200, concurrency=4, max_tokens=1, path="/v1/chat/completions", model=ROLLOUT)
    wait_scraped(prometheus, 200)
    compliance = (f'sum(increase(finetune_serve_format_checks_total{{{SELECTOR}, result="pass"}}[10m]))'
                  f" / sum(increase(finetune_serve_format_checks_total{{{SELECTOR}}}[10m]))")
    status = judge([metric("format-compliance", compliance, thresholds={"maxDecrease": 0.01})], prometheus.provider())
    assert status.phase == AnalysisPhase.FAILED, status  # rolled back
    last = status.metrics[0].measurements[-1]
    assert last.stable_value == pytest.approx(1.0) and 0.65 < last.value < 0.92, last
    assert "> maxDecrease 0.01" in last.message
