"""Which child events reach a FineTuneJob reconcile: fingerprints, and coalescing of bursts."""

from __future__ import annotations

import copy

from finetune_operator.handlers.locks import Fingerprints, Pending
from finetune_operator.logic.finetunejob_children import child_fingerprint

POD = {
    "kind": "Pod",
    "metadata": {"name": "ft-train-abcde", "uid": "u1", "resourceVersion": "10"},
    "status": {
        "phase": "Running",
        "podIP": "127.1.0.7",
        "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}],
        "containerStatuses": [{"name": "trainer", "restartCount": 0, "ready": True,
                               "state": {"running": {"startedAt": "2025-01-01T11:00:00Z"}}}],
    },
}


def changed(edit) -> bool:
    pod = copy.deepcopy(POD)
    edit(pod)
    return child_fingerprint("Pod", pod) != child_fingerprint("Pod", POD)


def test_pod_events_that_change_nothing_decide_reads_are_noise():
    assert not changed(lambda p: p["metadata"].update(resourceVersion="11"))
    assert not changed(lambda p: p["status"].update(podIP="127.1.0.8"))
    assert not changed(lambda p: p["status"]["conditions"][0].update(lastProbeTime="2025-01-01T11:01:00Z"))


def test_pod_events_that_matter():
    assert changed(lambda p: p["status"].update(phase="Succeeded"))
    assert changed(lambda p: p["metadata"].update(deletionTimestamp="2025-01-01T11:05:00Z"))
    assert changed(lambda p: p["status"]["conditions"][0].update(status="False", reason="Unschedulable"))
    assert changed(lambda p: p["status"]["containerStatuses"][0].update(restartCount=1))
    assert changed(lambda p: p["status"]["containerStatuses"][0].update(
        state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    assert changed(lambda p: p["status"]["containerStatuses"][0].update(
        state={"waiting": {"reason": "ErrImagePull", "message": "pull access denied"}}))


def test_job_fingerprint_follows_its_status_and_suspension():
    job = {"kind": "Job", "metadata": {"resourceVersion": "3"}, "spec": {"suspend": False}, "status": {"active": 1}}
    same = copy.deepcopy(job)
    same["metadata"]["resourceVersion"] = "4"
    assert child_fingerprint("Job", same) == child_fingerprint("Job", job)
    for edit in ({"status": {"active": 0, "succeeded": 1}}, {"spec": {"suspend": True}}):
        assert child_fingerprint("Job", {**job, **edit}) != child_fingerprint("Job", job)


def test_anything_else_always_matters():
    first = {"metadata": {"resourceVersion": "1"}, "data": {"progress": "{}"}}
    second = {"metadata": {"resourceVersion": "2"}, "data": {"progress": "{}"}}
    assert child_fingerprint("ConfigMap", first) != child_fingerprint("ConfigMap", second)


def test_fingerprints_drop_repeats_and_forget_deleted_objects():
    seen = Fingerprints()
    assert seen.changed("u1", ("a",))
    assert not seen.changed("u1", ("a",))
    assert seen.changed("u1", ("b",))
    assert seen.changed("u1", ("b",), gone=True)  # a deletion always counts
    assert seen.changed("u1", ("b",))  # and the uid starts afresh


def test_pending_lets_one_reconcile_wait_per_object():
    pending = Pending()
    key = ("ns", "ft")
    assert pending.claim(key)
    assert not pending.claim(key)  # covered by the one already waiting
    assert pending.claim(("ns", "other"))
    pending.release(key)  # the waiting one took the lock: later events need their own
    assert pending.claim(key)
