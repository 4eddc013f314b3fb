"""Many FineTuneJobs at once, and an operator that dies mid-training: never a duplicate Job.

These use the no-op trainer image (the trainer's contract, no ML) so that hundreds of Pods
cost seconds, not hours.
"""

from __future__ import annotations

import collections
import json

import pytest

from tests.helpers import NOOP_TRAINER, noop_finetunejob, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

def phases(cluster, namespace):
    return collections.Counter(
        (f.get("status") or {}).get("phase") for f in cluster.list("finetunejobs", namespace)
    )


def train_jobs_per_owner(cluster, namespace):
    per_owner = collections.Counter()
    for job in cluster.list("jobs", namespace, selector="finetune.ai/stage=train"):
        per_owner[job["metadata"]["labels"]["finetune.ai/finetunejob"]] += 1
    return per_owner


def test_50_finetunejobs_at_once_each_get_exactly_one_training_job(cluster, namespace, operator):
    # 50 at once (150 Pods on 2 cores) keeps the suite within its time; benchmarks/operator_latency.py
    # measures 100 and 1000.
    count = 50
    cluster.apply("---\n".join(noop_finetunejob(f"bulk-{i:03d}", evaluation={"enabled": False}) for i in range(count)), namespace)

    wait_for(
        lambda: phases(cluster, namespace).get("Succeeded", 0) == count,
        600,
        f"all {count} FineTuneJobs to succeed",
        interval=2,
    )
    per_owner = train_jobs_per_owner(cluster, namespace)
    assert len(per_owner) == count
    assert set(per_owner.values()) == {1}
    prepare_jobs = cluster.list("jobs", namespace, selector="finetune.ai/stage=prepare")
    assert len(prepare_jobs) == count


def test_operator_restarted_mid_training_no_duplicates_and_status_keeps_updating(cluster, namespace, operator):
    cluster.apply(noop_finetunejob("survivor", image=f"{NOOP_TRAINER}:slow"), namespace)

    def step():
        status = cluster.get("finetunejob", "survivor", namespace).get("status") or {}
        return (status.get("progress") or {}).get("step") if status.get("phase") == "Training" else None

    before = wait_for(step, 120, "survivor to report training progress")
    operator.restart(cluster.kubeconfig)

    after = wait_for(lambda: (s := step()) and s > before and s, 120, "progress to keep updating after the restart")
    assert after > before
    status = wait_for(
        lambda: (s := cluster.get("finetunejob", "survivor", namespace).get("status") or {}).get("phase") == "Succeeded" and s,
        180,
        "survivor to succeed",
    )
    assert status["progress"]["percent"] == 100
    names = sorted(j["metadata"]["name"] for j in cluster.list("jobs", namespace, selector="finetune.ai/finetunejob=survivor"))
    assert names == ["survivor-eval-1", "survivor-prepare", "survivor-train"]
    pods = cluster.list("pods", namespace, selector="job-name=survivor-train")
    assert len(pods) == 1, "the restart must not start a second trainer"
    assert json.loads(pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["message"])["status"] == "Succeeded"


def test_a_finished_job_is_deleted_when_its_ttl_passes(cluster, namespace, operator):
    # No timer ticks for a finished job: its watch event sets the deadline, one thread deletes it.
    cluster.apply(noop_finetunejob("short-lived", evaluation={"enabled": False}, ttlSecondsAfterFinished=3), namespace)
    status = wait_for(lambda: (s := (cluster.get("finetunejob", "short-lived", namespace).get("status") or {}))
                      .get("phase") in ("Succeeded", "Failed") and s, 120, "short-lived to finish")
    assert status["phase"] == "Succeeded", status.get("message")
    wait_for(lambda: cluster.kubectl("get", "finetunejob", "short-lived", "-n", namespace, check=False).returncode != 0,
             30, "short-lived to be deleted 3 s after it finished")
