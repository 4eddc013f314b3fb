"""The API server's refusal of a child, turned into problems naming the FineTuneJob's fields."""

from __future__ import annotations

import json

import pytest

from finetune_operator.k8s import dryrun

JOB = {"kind": "Job", "metadata": {"name": "ft-prepare"}}


def refusal(*causes: tuple[str, str]) -> str:
    return json.dumps({"kind": "Status", "code": 422, "message": "Job.batch is invalid",
                       "details": {"causes": [{"field": f, "message": m} for f, m in causes]}})


@pytest.mark.parametrize(
    "child_field, spec_field",
    [
        ("spec.template.spec.tolerations[0].operator", "spec.resources.tolerations"),
        ("spec.template.spec.nodeSelector", "spec.resources.nodeSelector"),
        ("spec.template.spec.affinity.nodeAffinity", "spec.resources.affinity"),
        ("spec.template.spec.priorityClassName", "spec.resources.priorityClassName"),
        ("spec.template.spec.containers[0].resources.limits[cpu]", "spec.resources"),
        ("spec.template.spec.containers[0].image", "spec.image"),
        ("metadata.name", "metadata.name"),
        ("spec.template.labels", "metadata.name"),
        ("spec.somethingElse", "spec"),
    ],
)
def test_child_fields_map_to_spec_fields(child_field, spec_field):
    [problem] = dryrun.problems_of_refusal(JOB, refusal((child_field, "Invalid value")))
    assert problem.field == spec_field
    assert "Job ft-prepare" in problem.problem and "Invalid value" in problem.problem


def test_a_refusal_without_causes_still_names_something():
    [problem] = dryrun.problems_of_refusal(JOB, json.dumps({"message": "bad request"}))
    assert problem.field == "spec" and "bad request" in problem.problem


def test_the_same_problem_twice_is_reported_once():
    body = refusal(("spec.template.spec.nodeSelector", "x"), ("spec.template.spec.nodeSelector", "x"))
    assert len(dryrun.problems_of_refusal(JOB, body)) == 1
