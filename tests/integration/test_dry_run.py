"""Children the API server would refuse make the FineTuneJob InvalidSpec before any Pod runs.

Each row is a spec its own CRD accepts but whose Jobs the API server refuses; the operator's
server-side dry run at the first reconcile must answer InvalidSpec naming the spec field, fast,
with no Job created.
"""

from __future__ import annotations

import pytest

from tests.helpers import condition, noop_finetunejob, wait_for

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    "resources, field",
    [
        pytest.param({"gpusPerNode": 1, "tolerations": [{"operator": "Equal", "value": "x"}]},
                     "spec.resources.tolerations", id="toleration-without-key"),
        pytest.param({"gpusPerNode": 1, "nodeSelector": {"bad key!": "x"}}, "spec.resources.nodeSelector",
                     id="node-selector-key-with-space"),
    ],
)
def test_a_child_the_api_server_refuses_is_invalid_spec(cluster, namespace, operator, resources, field):
    name = "refused"
    cluster.apply(noop_finetunejob(name, resources=resources), namespace)

    def accepted():
        return condition(cluster.get("finetunejob", name, namespace), "Accepted")

    found = wait_for(lambda: (c := accepted()) and c["status"] == "False" and c, 60, f"{name} to be refused")
    assert found["reason"] == "InvalidSpec"
    assert field in found["message"], found["message"]
    assert "the API server refuses" in found["message"]
    assert cluster.list("jobs", namespace) == []
    assert cluster.list("pods", namespace) == []


def test_a_valid_job_is_not_held_up_by_the_dry_run(cluster, namespace, operator):
    cluster.apply(noop_finetunejob("fine", output={}), namespace)
    wait_for(lambda: (cluster.get("finetunejob", "fine", namespace).get("status") or {}).get("phase") == "Succeeded",
             240, "fine to succeed")


def test_an_invalid_format_schema_is_invalid_spec_before_any_pod(cluster, namespace, operator):
    """The CRD takes any object as evaluation.formatSchema; the operator checks it as a JSON Schema
    at the first reconcile, so a typo is found now, not by the evaluation after the training run."""
    name = "bad-schema"
    cluster.apply(noop_finetunejob(name, evaluation={"formatSchema": {"type": "objekt"}}), namespace)
    found = wait_for(lambda: (c := condition(cluster.get("finetunejob", name, namespace), "Accepted"))
                     and c["status"] == "False" and c, 60, f"{name} to be refused")
    assert found["reason"] == "InvalidSpec"
    assert "spec.evaluation.formatSchema is not a valid JSON Schema" in found["message"], found["message"]
    assert cluster.list("jobs", namespace) == [] and cluster.list("pods", namespace) == []
