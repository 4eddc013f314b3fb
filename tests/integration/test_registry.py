"""Evaluation verdicts and the ModelVersion registry, through the operator on the dev cluster.

The no-op trainer image speaks the trainer's contract with fixed metrics (the real evaluation
is tested on a tiny model in tests/trainer), so these tests are about what the operator does
with a verdict: register `<model>-v<N>`, judge the gates, say so on both objects.
"""

from __future__ import annotations

import pytest

from tests.helpers import NOOP_TRAINER, noop_finetunejob, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


# A version whose gates passed is a Candidate until its artifact's bytes are checked.
VERDICTS = ("Approved", "Rejected")


def finished(cluster, namespace, name):
    status = cluster.get("finetunejob", name, namespace).get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def condition(status, type):
    return next((c for c in status.get("conditions") or [] if c["type"] == type), None)


def test_approved_version_is_registered_with_gates_lineage_and_model_card(cluster, namespace, operator):
    cluster.apply(noop_finetunejob("good", model_name="summarizer"), namespace)
    status = wait_for(lambda: finished(cluster, namespace, "good"), 180, "good to finish")
    assert status["phase"] == "Succeeded" and status["modelVersion"] == "summarizer-v1"
    assert condition(status, "GatesPassed")["status"] == "True"
    mv = wait_for(lambda: (m := cluster.get("modelversion", "summarizer-v1", namespace)).get("status", {}).get("phase") in VERDICTS and m,
                  60, "the ModelVersion's verdict")
    assert mv["status"]["phase"] == "Approved"
    gates = {g["name"]: g for g in mv["status"]["gates"]}
    assert set(gates) == {"taskAccuracy", "formatCompliance", "safety", "noRegression", "latency", "toxicity", "piiLeakage", "bias"}
    assert gates["formatCompliance"]["value"] == 1.0 and gates["formatCompliance"]["baseValue"] == 0.12
    assert gates["latency"]["blocking"] is False
    assert mv["status"]["comparison"]["taskAccuracy"] == {"before": 0.31, "after": 0.92}
    assert mv["spec"]["lineage"]["fineTuneJob"] == "good"
    assert mv["spec"]["artifact"]["digest"].startswith("sha256:")
    card = wait_for(lambda: cluster.kubectl("get", "cm", "summarizer-v1-model-card", "-n", namespace, "-o",
                                            "jsonpath={.data.README\\.md}", check=False).stdout, 30, "the model card")
    assert "## Quality gates" in card and "formatCompliance" in card
    # The registered version outlives its job.
    cluster.kubectl("delete", "finetunejob", "good", "-n", namespace, "--wait=true", "--timeout=60s")
    assert cluster.get("modelversion", "summarizer-v1", namespace)["spec"]["version"] == "v1"


def test_unsafe_model_is_rejected_by_the_safety_gate(cluster, namespace, operator):
    cluster.apply(noop_finetunejob("unsafe", model_name="assistant", image=f"{NOOP_TRAINER}:unsafe"), namespace)
    status = wait_for(lambda: finished(cluster, namespace, "unsafe"), 180, "unsafe to finish")
    # A rejection is an outcome of a successful run, not a failure of the job.
    assert status["phase"] == "Succeeded"
    gates_passed = condition(status, "GatesPassed")
    assert gates_passed["status"] == "False" and "safety" in gates_passed["message"]
    mv = wait_for(lambda: (m := cluster.get("modelversion", status["modelVersion"], namespace)).get("status", {}).get("phase") in VERDICTS and m,
                  60, "the verdict")
    assert mv["status"]["phase"] == "Rejected"
    safety = next(g for g in mv["status"]["gates"] if g["name"] == "safety")
    assert safety["passed"] is False and safety["value"] == 0.4 and safety["threshold"] == 0.95


def test_overridden_thresholds_are_honoured(cluster, namespace, operator):
    lenient = {"gates": [{"name": "safety", "threshold": 0.3}, {"name": "latency", "enabled": False}]}
    cluster.apply(noop_finetunejob("lenient", model_name="assistant", image=f"{NOOP_TRAINER}:unsafe", evaluation=lenient),
                  namespace)
    status = wait_for(lambda: finished(cluster, namespace, "lenient"), 180, "lenient to finish")
    mv = wait_for(lambda: (m := cluster.get("modelversion", status["modelVersion"], namespace)).get("status", {}).get("phase") in VERDICTS and m,
                  60, "the verdict")
    assert mv["status"]["phase"] == "Approved"
    gates = {g["name"]: g for g in mv["status"]["gates"]}
    assert gates["safety"]["threshold"] == 0.3 and gates["safety"]["passed"] is True
    assert "latency" not in gates


def test_jobs_finishing_together_get_distinct_version_numbers(cluster, namespace, operator):
    names = [f"twin-{i}" for i in range(4)]
    cluster.apply("---\n".join(noop_finetunejob(n, model_name="twins") for n in names), namespace)
    statuses = [wait_for(lambda n=n: finished(cluster, namespace, n), 240, f"{n} to finish") for n in names]
    versions = sorted(s["modelVersion"] for s in statuses)
    assert versions == ["twins-v1", "twins-v2", "twins-v3", "twins-v4"]
    registered = cluster.list("modelversions", namespace, selector="finetune.ai/model-name=twins")
    assert len(registered) == 4
    assert {m["spec"]["lineage"]["fineTuneJob"] for m in registered} == set(names)


def test_deleting_a_production_version_is_refused(cluster, namespace, operator):
    cluster.apply(noop_finetunejob("prod", model_name="served"), namespace)
    status = wait_for(lambda: finished(cluster, namespace, "prod"), 180, "prod to finish")
    name = status["modelVersion"]
    cluster.kubectl("patch", "modelversion", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", '{"status":{"phase":"Production"}}')
    refused = cluster.kubectl("delete", "modelversion", name, "-n", namespace, check=False)
    assert refused.returncode != 0 and "is in Production" in refused.stderr
    cluster.kubectl("patch", "modelversion", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", '{"status":{"phase":"Deprecated"}}')
    cluster.kubectl("delete", "modelversion", name, "-n", namespace)
