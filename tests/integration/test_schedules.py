"""Scheduled retraining on the dev cluster: the chart's CronJob, its ServiceAccount, and a real run.

The chart is rendered with one schedule and applied to a namespace (its CronJob, ConfigMap,
ServiceAccount, Role and RoleBinding, with the API server's admission). Then the CronJob's
command runs here as that ServiceAccount (a token from the TokenRequest API in a kubeconfig of its
own), with the template from the rendered ConfigMap and the run's time given: it creates the
month's FineTuneJob, a retry the same day creates nothing, and next month's run makes the next job
of the same model. The ServiceAccount may create FineTuneJobs and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.test_chart import CHART, helm

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = {
    "name": "monthly-tickets",
    "schedule": "0 3 1 * *",
    "template": {
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "tickets"},
        "spec": {
            "baseModel": {"uri": "/models/base"},
            "dataset": {"uri": "/data/tickets-${MONTH}.jsonl"},
            "resources": {"gpusPerNode": 1},
            "suspend": True,  # the test needs the job, not a run
        },
    },
}


def rendered(cluster, namespace) -> list[dict]:
    text = helm(cluster, "template", "ft", str(CHART), "--namespace", namespace, "--kube-version", "1.36.3",
                "--set-json", f"schedules={json.dumps([SCHEDULE])}")
    return [d for d in yaml.safe_load_all(text) if d]


def token_kubeconfig(cluster, namespace, service_account, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a short-lived token)."""
    token = cluster.kubectl("create", "token", service_account, "-n", namespace, "--duration=10m").stdout.strip()
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    config["users"] = [{"name": "scheduler", "user": {"token": token}}]
    context["context"]["user"] = "scheduler"
    config["contexts"] = [context]
    path.write_text(yaml.safe_dump(config))
    return path


def retrain(kubeconfig: Path, template: Path, namespace: str, now: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "trainer-image"))}
    return subprocess.run(
        [sys.executable, "-m", "finetune_operator.retrain", "--template", str(template), "--schedule",
         SCHEDULE["name"], "--namespace", namespace, "--now", now],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_a_schedule_makes_this_months_job_once_as_its_own_service_account(cluster, namespace, tmp_path):
    docs = rendered(cluster, namespace)
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    cronjob = by_kind[("CronJob", "ft-finetune-operator-monthly-tickets")]
    assert cronjob["spec"]["schedule"] == "0 3 1 * *" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ft-finetune-operator-scheduler"
    assert pod["containers"][0]["command"][:3] == ["python", "-m", "finetune_operator.retrain"]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    config_map = by_kind[("ConfigMap", "ft-finetune-operator-schedule-monthly-tickets")]

    # What a schedule needs, applied for real (the restricted namespace admits the CronJob's Pods).
    wanted = [d for d in docs if (d["kind"], d["metadata"]["name"]) in {
        ("ServiceAccount", "ft-finetune-operator-scheduler"), ("Role", "ft-finetune-operator-scheduler"),
        ("RoleBinding", "ft-finetune-operator-scheduler"), ("ConfigMap", config_map["metadata"]["name"]),
        ("CronJob", cronjob["metadata"]["name"])}]
    assert len(wanted) == 5
    applied = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(wanted))
    assert "Warning" not in applied.stderr, applied.stderr

    sa = f"system:serviceaccount:{namespace}:ft-finetune-operator-scheduler"
    can = {(verb, what): cluster.kubectl("auth", "can-i", verb, what, "-n", namespace, f"--as={sa}", check=False).stdout.strip()
           for verb, what in [("create", "finetunejobs.finetune.ai"), ("get", "finetunejobs.finetune.ai"),
                              ("delete", "finetunejobs.finetune.ai"), ("create", "jobs"), ("get", "secrets")]}
    assert can == {("create", "finetunejobs.finetune.ai"): "yes", ("get", "finetunejobs.finetune.ai"): "no",
                   ("delete", "finetunejobs.finetune.ai"): "no", ("create", "jobs"): "no", ("get", "secrets"): "no"}, can

    template = tmp_path / "template.yaml"
    template.write_text(config_map["data"]["template.yaml"])
    kubeconfig = token_kubeconfig(cluster, namespace, "ft-finetune-operator-scheduler", tmp_path / "kubeconfig")

    first = retrain(kubeconfig, template, namespace, "2026-12-01T03:00:07Z")
    assert first.returncode == 0, first.stderr
    assert f"created FineTuneJob {namespace}/tickets-20261201" in first.stdout
    job = cluster.get("finetunejob", "tickets-20261201", namespace)
    assert job["metadata"]["labels"]["finetune.ai/schedule"] == "monthly-tickets"
    assert job["spec"]["dataset"]["uri"] == "/data/tickets-2026-12.jsonl"
    assert job["spec"]["output"]["modelName"] == "tickets"

    again = retrain(kubeconfig, template, namespace, "2026-12-01T03:05:00Z")
    assert again.returncode == 0 and "exists already" in again.stdout, again.stdout + again.stderr

    january = retrain(kubeconfig, template, namespace, "2027-01-01T03:00:02Z")
    assert january.returncode == 0, january.stderr
    jobs = cluster.list("finetunejobs", namespace, selector="finetune.ai/schedule=monthly-tickets")
    assert sorted(j["metadata"]["name"] for j in jobs) == ["tickets-20261201", "tickets-20270101"]
    assert {j["spec"]["output"]["modelName"] for j in jobs} == {"tickets"}

    # A template the API server refuses: the exit status says so, with the API's message.
    bad = tmp_path / "bad.yaml"
    bad.write_text(template.read_text().replace("gpusPerNode: 1", "gpusPerNode: 99"))
    refused = retrain(kubeconfig, bad, namespace, "2027-02-01T03:00:00Z")
    assert refused.returncode == 1 and "spec.resources.gpusPerNode" in refused.stderr, refused.stderr
