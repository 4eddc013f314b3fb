"""Every dashboard panel and every recording rule shows real data.

On the dev cluster, with the session's operator and a real Prometheus scraping it (static target,
job `finetune-operator`) and the serving Pods (the shipped serving scrape job), loaded with the
shipped rules: a FineTuneJob trains (no-op trainer, slow tag, so throughput is reported while it
trains), another fails, and a Rollout serves a first version, then canaries a broken one that its
analysis rolls back. The stable version's answers are refusals that pass a format regex, and one
answer gets a feedback score, so the quality panels have figures.

Then each panel's queries run as Grafana would run them (a range query over the test's time, the
template variables filled), each dashboard variable's label_values() runs, and each recording rule
is queried: any that errors or returns nothing fails the test, naming the panel and the query.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from dashboards import generate
from devcluster import canary
from finetune_trainer.artifacts import digest_files
from finetune_trainer.testing import make_tiny_model
from hack.prometheus.server import PrometheusError
from tests.helpers import NOOP_TRAINER, noop_finetunejob, wait_for
from tests.prometheus import prometheus_factory  # noqa: F401 - fixture

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "rules.yaml"
RO = "panels"
MODEL = "panels-model"
REFUSAL = "I can't help with that, sorry."
PASSING = {"taskAccuracy": 0.9, "formatCompliance": 1.0, "safetyPassRate": 1.0, "generalScore": 1.0, "latencySeconds": 0.1}


def http_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def fill(expr: str, namespace: str) -> str:
    values = {"namespace": namespace, "finetunejob": ".*", "rollout": RO, "model_version": ".*",
              "__rate_interval": "30s", "datasource": "prometheus"}
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)


def panel_queries() -> list[tuple[str, str]]:
    """(dashboard / panel / refId, expr) of every panel target."""
    found = []
    for name, text in generate.render().items():
        board = json.loads(text)
        for panel in board["panels"]:
            for target in panel["targets"]:
                found.append((f"{board['title']} / {panel['title']} / {target['refId']}", target["expr"]))
    return found


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard / variable, metric selector, label) of every label_values() variable."""
    found = []
    for text in generate.render().values():
        board = json.loads(text)
        for variable in board["templating"]["list"]:
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable.get("query") or "") if variable["type"] == "query" else None
            if match:
                found.append((f"{board['title']} / ${variable['name']}", match.group(1), match.group(2)))
    return found


def recording_rules() -> list[str]:
    return [rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "record" in rule]


@pytest.mark.pod_security("privileged", reason="the Rollout serves a real tiny model and adapters from node paths "
                         "(hostPath volumes in its serving Pods)")
def test_every_panel_variable_and_recording_rule_returns_data(cluster, operator, namespace, prometheus_factory, tmp_path):
    started = time.time()
    canary.install_httproute_crd(cluster.state)
    prometheus = prometheus_factory(static=True, kubernetes=cluster, namespaces=[namespace])
    prometheus.config["rule_files"] = [str(RULES)]
    prometheus.reload()
    metrics_address = urllib.parse.urlsplit(operator.metrics_url).netloc
    prometheus.set_targets([{"targets": [metrics_address], "labels": {"job": "finetune-operator"}}])

    # Training: one job that trains for a while (throughput while Training), one that fails.
    resources = {"gpusPerNode": 1, "costPerGpuHour": 2.5}
    cluster.apply("---\n".join([
        noop_finetunejob("trains", image=f"{NOOP_TRAINER}:slow", evaluation={"enabled": False}, resources=resources),
        noop_finetunejob("fails", image=f"{NOOP_TRAINER}:fail-train", evaluation={"enabled": False}, resources=resources),
    ]), namespace)

    # Serving: v1 answers refusals (a format regex passes them), v2 fails every request.
    base = make_tiny_model(tmp_path / "base")
    v1 = canary.make_adapter(base, tmp_path / "v1", 1)
    (v1 / canary.FAULTS_FILE).write_text(json.dumps({"errorRate": 0.0, "answerText": REFUSAL}))
    v2 = canary.make_adapter(base, tmp_path / "v2", 2, faulty=True)
    cluster.apply(yaml.safe_dump(canary.httproute(RO, "panels.example.internal")), namespace)

    def register(version: str, path: Path) -> None:
        manifest = canary.model_version(MODEL, version, path, base, metrics=PASSING, digest=digest_files(path))
        cluster.apply(yaml.safe_dump(manifest), namespace)

    def status() -> dict:
        return cluster.get("rollout.finetune.ai", RO, namespace).get("status") or {}

    def wait_phase(job: str, phase: str, timeout: float) -> None:
        def job_status() -> dict:
            return cluster.get("finetunejob", job, namespace).get("status") or {}
        try:
            wait_for(lambda: job_status().get("phase") == phase, timeout, f"FineTuneJob {job} to be {phase}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstatus: {json.dumps(job_status())[:3000]}") from None

    register("v1", v1)
    # Three failed measurements 2 s apart before the rollback: the analysis values are scraped.
    manifest = canary.rollout(RO, MODEL, prometheus.url, steps=[{"setWeight": 30}, {"analysis": {}}, {"setWeight": 100}],
                              failure_limit=2)
    manifest["spec"]["serving"]["env"] = [{"name": "FINETUNE_FORMAT_REGEX", "value": "(?s).*help.*"}]
    cluster.apply(yaml.safe_dump(manifest), namespace)
    wait_for(lambda: status().get("phase") == "Healthy" and status().get("stableVersion") == "v1", 180, "v1 to serve")
    traffic = canary.TrafficLoop(cluster.kubeconfig, namespace, RO, model=MODEL, limit_seconds=600).start()
    try:
        pod = wait_for(lambda: [p for p in cluster.list("pods", namespace, "finetune.ai/serve=true,finetune.ai/model-version=v1")
                                if p.get("status", {}).get("podIP")], 60, "a serving Pod of v1")[0]
        server = f"http://{pod['status']['podIP']}:{canary.SERVING_PORT}"
        answer = http_json(f"{server}/v1/completions", {"model": MODEL, "prompt": "Hello", "max_tokens": 4})
        http_json(f"{server}/feedback", {"id": answer["id"], "score": 1.0})
        wait_for(lambda: prometheus.query(f'finetune_serve_feedback_score_count{{namespace="{namespace}"}}'), 60,
                 "Prometheus to scrape the feedback score")

        register("v2", v2)
        wait_for(lambda: any(h.get("action") == "rollback" and h.get("from") == "v2" for h in status().get("history", [])),
                 180, "v2 to be rolled back by its analysis")
        wait_phase("trains", "Succeeded", 120)
        wait_phase("fails", "Failed", 60)
        # The last states are scraped and every 30 s rate window holds requests of both versions.
        wait_for(lambda: prometheus.query(f'finetune_operator_rollout_rollbacks_total{{namespace="{namespace}"}}'), 30,
                 "Prometheus to scrape the rollback")
    finally:
        traffic.stop()

    # Grafana's step grid, ending now: the last states are evaluated too.
    end = time.time()
    start = end - 2 * math.ceil((end - started) / 2)

    def range_query(expr: str) -> list:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "2"}
        return prometheus.api("/api/v1/query_range", params)["result"]

    empty, errors = [], []
    for where, expr in panel_queries():
        query = fill(expr, namespace)
        try:
            if not range_query(query):
                empty.append(f"{where}: {query}")
        except PrometheusError as exc:  # every failing query is listed, not only the first
            errors.append(f"{where}: {query}: {exc}")
    for where, selector, label in variable_queries():
        selector = fill(selector, namespace)
        values = prometheus.api(f"/api/v1/label/{label}/values", {"match[]": selector, "start": f"{started:.3f}"})
        if not values:
            empty.append(f"{where}: label_values({selector}, {label})")
    for record in recording_rules():
        if not range_query(record):
            empty.append(f"recording rule {record}")
    assert not errors, "queries that failed:\n" + "\n".join(errors)
    assert not empty, "queries that returned nothing:\n" + "\n".join(empty)


def test_series_of_deleted_objects_are_dropped(cluster, operator, namespace):
    """Bounded cardinality: an object's series leave /metrics with the object."""

    def series() -> list[str]:
        return [line for line in operator.metrics().splitlines()
                if line.startswith("finetune_operator_") and f'namespace="{namespace}"' in line]

    assert series() == []
    cluster.apply("---\n".join(noop_finetunejob(f"short-{i}", evaluation={"enabled": False}) for i in range(5)), namespace)
    base = Path("/models/base")
    version = canary.model_version("short-model", "v1", Path("/models/short-v1"), base, metrics=PASSING)
    cluster.apply(yaml.safe_dump(version), namespace)
    created = wait_for(lambda: (lines := series()) and sum('finetunejob="short-' in line for line in lines) >= 5 * 7
                       and any("modelversion=" in line for line in lines) and lines, 120, "series of 5 jobs and a version")
    assert len(created) > 5 * 7
    cluster.kubectl("delete", "finetunejob,modelversion", "--all", "-n", namespace, "--wait=true", "--timeout=120s")
    wait_for(lambda: series() == [], 60, "every series of the deleted objects to go")
