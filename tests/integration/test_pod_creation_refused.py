"""A Job whose Pods the API refuses surfaces the API's reason in the FineTuneJob's status.

A ResourceQuota of `pods: 0` in the namespace makes the API server refuse every Pod the Job
controller tries to create for the data-preparation Job: the Job stays at active=0, no Pod exists,
and the only trace is the Job controller's FailedCreate Event on the Job. Within a minute the
FineTuneJob must say so (phase Pending, reason PodCreationFailed, naming the quota), never
Preparing forever; once the quota is raised, the Job controller's retry creates the Pod and the
job goes on to finish.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import condition, noop_finetunejob, wait_for

pytestmark = pytest.mark.cluster

QUOTA = "no-trainer-pods"


def quota(pods: int) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": QUOTA},
                       "spec": {"hard": {"pods": str(pods)}}})


def test_a_quota_refusing_the_pods_is_named_in_status_and_raising_it_lets_the_job_proceed(cluster, namespace, operator):
    name = "quota-refused"
    cluster.apply(quota(0), namespace)
    # The quota controller fills in status.used; until then the API server admits nothing under it.
    wait_for(lambda: "pods" in (cluster.get("resourcequota", QUOTA, namespace).get("status") or {}).get("used", {}),
             60, "the quota's usage to be computed")
    cluster.apply(noop_finetunejob(name), namespace)

    def refused():
        job = cluster.get("finetunejob", name, namespace)
        summary = condition(job, "Succeeded") or {}
        return summary.get("reason") == "PodCreationFailed" and job

    job = wait_for(refused, 60, f"{name} to report that its Pod is refused")
    status = job["status"]
    assert status["phase"] == "Pending"
    assert f"exceeded quota: {QUOTA}" in status["message"], status["message"]
    assert f"Job {name}-prepare" in status["message"] and "\n" not in status["message"]
    assert len(status["message"]) < 600
    assert condition(job, "Succeeded")["status"] == "Unknown"
    assert cluster.list("pods", namespace) == []
    events = json.loads(cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "json",
        "--field-selector", f"involvedObject.kind=FineTuneJob,involvedObject.name={name},reason=PodCreationFailed",
    ).stdout)["items"]
    assert events and events[0]["type"] == "Warning" and QUOTA in events[0]["message"]

    cluster.apply(quota(10), namespace)

    def moved_on():
        job = cluster.get("finetunejob", name, namespace)
        summary = condition(job, "Succeeded") or {}
        return summary.get("reason") != "PodCreationFailed" and (job.get("status") or {}).get("phase") != "Pending" and job

    wait_for(moved_on, 120, f"{name} to proceed once the quota allows its Pods")
    finished = wait_for(lambda: (j := cluster.get("finetunejob", name, namespace))["status"].get("phase") == "Succeeded" and j,
                        240, f"{name} to succeed")
    # The refusal is gone from the summary once the Pods were created (the job's own name has "quota" in it).
    assert "exceeded quota" not in finished["status"]["message"] and "PodCreationFailed" not in finished["status"]["message"]
    assert finished["status"]["message"].startswith(f"registered {name}-v1"), finished["status"]["message"]
