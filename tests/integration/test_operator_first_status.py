"""The operator against the real control plane: a FineTuneJob gets its first honest status.

What a user sees after `kubectl apply`: status.observedGeneration catches up with the object's
generation, phase Preparing, the Accepted and Succeeded conditions, and an Event on the object;
an edit moves observedGeneration without resetting lastTransitionTime or repeating the Event;
a spec the CRD accepts but the operator cannot work with is reported as InvalidSpec.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 60

VALID_JOB = """
apiVersion: finetune.ai/v1alpha1
kind: FineTuneJob
metadata:
  name: {name}
spec:
  baseModel:
    uri: hf://HuggingFaceTB/SmolLM2-135M-Instruct
  dataset:
    inline:
      - instruction: "Summarize the ticket as JSON: printer on floor 3 jams on every job"
        output: '{{"category": "hardware", "priority": "medium"}}'
  resources:
    gpusPerNode: 0
  image: ghcr.io/finetune-operator/trainer-noop:slow
"""

# Passes the CRD's pattern (an s3:// URI) but names no valid bucket: only the operator can say so.
INVALID_JOB = VALID_JOB.replace("hf://HuggingFaceTB/SmolLM2-135M-Instruct", "s3://Not_A_Bucket/models/llama")


def get_job(cluster, namespace, name):
    return json.loads(cluster.kubectl("get", "finetunejob", name, "-n", namespace, "-o", "json").stdout)


def caught_up(cluster, namespace, name, generation=None):
    """The job once status.observedGeneration == metadata.generation (and == `generation` if given)."""

    def check():
        job = get_job(cluster, namespace, name)
        observed = (job.get("status") or {}).get("observedGeneration")
        if observed == job["metadata"]["generation"] and generation in (None, observed):
            return job
        return None

    return check


def events_of(cluster, namespace, name, reason):
    selector = f"involvedObject.kind=FineTuneJob,involvedObject.name={name},reason={reason}"
    listed = cluster.kubectl("get", "events", "-n", namespace, "--field-selector", selector, "-o", "json").stdout
    return json.loads(listed)["items"]


def sample(metrics_text, name, **labels):
    """The value of one sample in Prometheus text format, or None."""
    for family in text_string_to_metric_families(metrics_text):
        for metric in family.samples:
            if metric.name == name and all(metric.labels.get(k) == v for k, v in labels.items()):
                return metric.value
    return None


def conditions_by_type(job):
    return {condition["type"]: condition for condition in job["status"]["conditions"]}


def test_valid_job_gets_first_status_event_and_metrics(cluster, namespace, operator):
    name = "support-summarizer"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=VALID_JOB.format(name=name))

    job = wait_for(caught_up(cluster, namespace, name), TIMEOUT, "status.observedGeneration == generation")
    cluster.wait_for_condition([f"finetunejob/{name}"], "Accepted", namespace=namespace, timeout=30)

    # Work starts at once: Preparing (Pending for a moment while the artifact claim binds).
    assert job["status"]["phase"] in ("Pending", "Preparing", "Training")
    conditions = conditions_by_type(job)
    assert (conditions["Accepted"]["status"], conditions["Accepted"]["reason"]) == ("True", "SpecValid")
    assert conditions["Succeeded"]["status"] == "Unknown"
    assert conditions["Succeeded"]["reason"] in ("Unschedulable", "Preparing", "Training")
    for condition in conditions.values():
        assert condition["observedGeneration"] == job["metadata"]["generation"]
        assert condition["lastTransitionTime"]
    accepted = wait_for(lambda: events_of(cluster, namespace, name, "Accepted"), TIMEOUT, "an Accepted event")
    assert accepted[0]["type"] == "Normal"
    assert accepted[0]["reportingComponent"] == "finetune-operator"
    # kopf's bookkeeping stays out of status and under our own annotation prefix.
    assert "kopf" not in job["status"]
    assert not any(key.startswith("kopf.zalando.org/") for key in job["metadata"].get("annotations", {}))

    def reconciled_jobs():
        return sample(operator.metrics(), "finetune_operator_reconcile_total", kind="FineTuneJob", result="success")

    assert wait_for(reconciled_jobs, TIMEOUT, "the FineTuneJob reconcile counter on /metrics") >= 1
    metrics = operator.metrics()
    assert sample(metrics, "finetune_operator_reconcile_duration_seconds_count", kind="FineTuneJob") >= 1
    in_progress = [sample(metrics, "finetune_operator_finetunejobs", phase=p) or 0 for p in ("Pending", "Preparing", "Training", "Evaluating", "Succeeded")]
    assert sum(in_progress) >= 1
    assert sample(metrics, "finetune_operator_build_info") == 1
    # API requests are counted: kopf's watch of FineTuneJobs and the reconcile's status write. The
    # reconcile reads the job and its children from the watch cache: no GET, no label-selected LIST.
    assert sample(metrics, "finetune_operator_api_requests_total", verb="watch", resource="finetunejobs", code="200") >= 1
    assert sample(metrics, "finetune_operator_api_requests_total", verb="patch", resource="finetunejobs", code="200") >= 1
    assert sample(metrics, "finetune_operator_api_requests_total", verb="get", resource="finetunejobs", code="200") is None

    # An edit: a new generation is observed; the verdict did not flip, so neither does the time.
    cluster.kubectl(
        "patch", "finetunejob", name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"hyperparameters": {"epochs": 2}}}),
    )
    generation = job["metadata"]["generation"] + 1
    edited = wait_for(caught_up(cluster, namespace, name, generation), TIMEOUT, f"observedGeneration {generation}")
    edited_conditions = conditions_by_type(edited)
    assert edited_conditions["Accepted"]["lastTransitionTime"] == conditions["Accepted"]["lastTransitionTime"]
    assert edited_conditions["Accepted"]["observedGeneration"] == generation
    assert len(events_of(cluster, namespace, name, "Accepted")) == 1


def test_spec_the_crd_accepts_but_the_operator_cannot_use_is_invalid_spec(cluster, namespace, operator):
    name = "bad-bucket"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=INVALID_JOB.format(name=name))

    job = wait_for(caught_up(cluster, namespace, name), TIMEOUT, "status.observedGeneration == generation")

    assert job["status"]["phase"] == "Failed"
    accepted = conditions_by_type(job)["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidSpec")
    assert "spec.baseModel.uri" in accepted["message"] and "bucket" in accepted["message"]
    succeeded = conditions_by_type(job)["Succeeded"]
    assert (succeeded["status"], succeeded["reason"]) == ("False", "InvalidSpec")
    warnings = wait_for(lambda: events_of(cluster, namespace, name, "InvalidSpec"), TIMEOUT, "an InvalidSpec event")
    assert warnings[0]["type"] == "Warning"
    assert "spec.baseModel.uri" in warnings[0]["message"]
