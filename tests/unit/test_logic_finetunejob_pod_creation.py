"""decide() when the API refuses a Job's Pods: the Job controller's FailedCreate Event surfaces.

A ResourceQuota exceeded, a LimitRange violated, an admission webhook or policy or a Pod Security
level refusing the trainer Pod leaves the Job at active=0 with no Pod at all; the only trace is a
FailedCreate Event on the Job. Each row is the Job, its Pods and those Events, and what the
FineTuneJob's status must then say.
"""

from __future__ import annotations

import pytest

from finetune_operator.logic import finetunejob, finetunejob_children
from finetune_operator.logic.finetunejob import Children
from tests.unit.pipeline_fixtures import job, pod
from tests.unit.test_logic_finetunejob_pipeline import PREPARE, SPEC, SUSPENDED, TRAIN, run
from tests.unit.test_logic_finetunejob_pipeline import S as PIPELINE

QUOTA = (
    'Error creating: pods "ft-prepare-x7k2p" is forbidden: exceeded quota: no-pods, requested: pods=1, '
    "used: pods=0, limited: pods=0"
)
LIMIT_RANGE = (
    'Error creating: pods "ft-train-0-q8w1z" is forbidden: maximum memory usage per Container is 1Gi, but limit is 16Gi'
)


def failed_create(job_name: str, message: str, at: str = "2025-01-01T11:05:00Z", *, uid: str | None = None,
                  event_time: bool = False) -> dict:
    """A core/v1 Event as the Job controller records it (or, event_time, as an events.k8s.io writer)."""
    involved = {"kind": "Job", "name": job_name, "namespace": "team", **({"uid": uid} if uid else {})}
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{job_name}.17f3", "namespace": "team"},
             "involvedObject": involved, "reason": "FailedCreate", "type": "Warning", "message": message}
    if event_time:
        event["eventTime"] = at.replace("Z", ".000000Z")
    else:
        event.update(firstTimestamp=at, lastTimestamp=at, count=3)
    return event


PREPARE_WAITING = job(PREPARE)  # created, active=0: no Pod could be made
PREPARED = PIPELINE["prepared"]

CASES = {
    "prepare-refused-by-a-quota": Children(jobs=(PREPARE_WAITING,), creation_failures=(failed_create(PREPARE, QUOTA),)),
    "prepare-refused-recorded-through-events-k8s-io": Children(
        jobs=(PREPARE_WAITING,), creation_failures=(failed_create(PREPARE, QUOTA, event_time=True),)),
    "train-refused-by-a-limit-range": Children(
        jobs=(*PREPARED.jobs, job(TRAIN)), pods=PREPARED.pods, creation_failures=(failed_create(TRAIN, LIMIT_RANGE),)),
    "refused-then-created-after-the-quota-was-raised": Children(
        jobs=(job(PREPARE, active=1),), pods=(pod(PREPARE, created="2025-01-01T11:06:00Z"),),
        creation_failures=(failed_create(PREPARE, QUOTA, "2025-01-01T11:05:00Z"),)),
    "a-retry-refused-after-the-first-pod-failed": Children(
        jobs=(job(TRAIN, failed=1), *PREPARED.jobs), pods=(*PREPARED.pods, pod(TRAIN, created="2025-01-01T11:02:00Z",
                                                                                 terminated=dict(exitCode=1))),
        creation_failures=(failed_create(TRAIN, LIMIT_RANGE, "2025-01-01T11:07:00Z"),)),
    "an-event-of-another-job": Children(
        jobs=(PREPARE_WAITING,), creation_failures=(failed_create("other-prepare", QUOTA),)),
    "an-event-of-an-earlier-job-of-the-same-name": Children(
        jobs=({**PREPARE_WAITING, "metadata": {**PREPARE_WAITING["metadata"], "uid": "job-2"}},),
        creation_failures=(failed_create(PREPARE, QUOTA, uid="job-1"),)),
}
REFUSED_PREPARE = finetunejob.MSG_POD_CREATION_FAILED.format(
    job=PREPARE, detail='pods "ft-prepare-x7k2p" is forbidden: exceeded quota: no-pods, requested: pods=1, used: pods=0, limited: pods=0')
REFUSED_TRAIN = finetunejob.MSG_POD_CREATION_FAILED.format(
    job=TRAIN, detail='pods "ft-train-0-q8w1z" is forbidden: maximum memory usage per Container is 1Gi, but limit is 16Gi')


@pytest.mark.parametrize(
    "situation, phase, reason, message",
    [
        ("prepare-refused-by-a-quota", "Pending", "PodCreationFailed", REFUSED_PREPARE),
        ("prepare-refused-recorded-through-events-k8s-io", "Pending", "PodCreationFailed", REFUSED_PREPARE),
        ("train-refused-by-a-limit-range", "Pending", "PodCreationFailed", REFUSED_TRAIN),
        ("refused-then-created-after-the-quota-was-raised", "Preparing", "Preparing", finetunejob.MSG_PREPARING),
        ("a-retry-refused-after-the-first-pod-failed", "Pending", "PodCreationFailed", REFUSED_TRAIN),
        ("an-event-of-another-job", "Preparing", "Preparing", finetunejob.MSG_PREPARING),
        ("an-event-of-an-earlier-job-of-the-same-name", "Preparing", "Preparing", finetunejob.MSG_PREPARING),
    ],
)
def test_pod_creation_refusals(situation, phase, reason, message):
    decision = run(SPEC, CASES[situation])
    status = decision.status
    succeeded = next(c for c in status.conditions if c.type == "Succeeded")
    assert (status.phase, succeeded.reason, status.message) == (phase, reason, message)
    assert succeeded.status == "Unknown", "a refusal is waited out, never a failure: the Job retries by itself"
    assert decision.create == ()


def test_the_refusal_is_announced_once_as_a_warning_event():
    first = run(SPEC, CASES["prepare-refused-by-a-quota"])
    assert [(e.type, e.reason, e.message) for e in first.events if e.reason == "PodCreationFailed"] == [
        ("Warning", "PodCreationFailed", REFUSED_PREPARE)
    ]
    again = run(SPEC, CASES["prepare-refused-by-a-quota"], first.status)
    assert again.events == () and not again.status_changed


def test_suspension_wins_over_an_old_refusal():
    assert run(SUSPENDED, Children(jobs=(job(PREPARE, suspend=True),), creation_failures=CASES[
        "prepare-refused-by-a-quota"].creation_failures)).status.phase == "Suspended"


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("Error creating: denied\nby\x1b[31m policy\t x", "denied by policy x"),
        ("Error creating: " + "a" * 500, "a" * (finetunejob.SHOWN_API_MESSAGE_CHARS - 1) + "…"),
        ("admission webhook \"pods.policy\" denied the request", "admission webhook \"pods.policy\" denied the request"),
    ],
    ids=["one-line-without-control-characters", "at-most-300-characters", "other-messages-as-they-are"],
)
def test_the_api_message_is_shown_short_and_on_one_line(raw, shown):
    assert finetunejob_children.shown_api_message(raw) == shown
