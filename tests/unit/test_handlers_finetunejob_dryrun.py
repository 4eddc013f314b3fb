"""Which children a new FineTuneJob tries as server-side dry runs before the first one exists."""

from __future__ import annotations

import pytest

from finetune_operator import config as operator_config
from finetune_operator.builders import finetunejob as builders
from finetune_operator.handlers import finetunejob as handler
from finetune_operator.logic import finetunejob
from finetune_operator.logic.spec import InvalidSpec, SpecProblem

SPEC = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "dataset": {"uri": "s3://data/t.jsonl"},
}
OWNER = builders.Owner(name="ft", namespace="team", uid="uid-1")


@pytest.fixture
def tried(monkeypatch):
    seen: list[tuple[str, str]] = []

    def refusals(objects):
        seen.extend((obj["kind"], obj["metadata"]["name"]) for obj in objects)
        return ()

    monkeypatch.setattr(handler.dryrun, "refusals", refusals)
    monkeypatch.setattr(operator_config, "_current", operator_config.OperatorConfig())
    return seen


def _jobs(seen):
    return sorted(name for kind, name in seen if kind == "Job")


def test_the_evaluation_job_is_tried_when_the_spec_evaluates(tried):
    spec = finetunejob.parse_spec({**SPEC, "evaluation": {"enabled": True}})
    assert handler._refused_children(spec, OWNER) is None
    assert _jobs(tried) == ["ft-eval-1", "ft-prepare", "ft-train"]


def test_no_evaluation_job_is_tried_when_none_will_run(tried):
    spec = finetunejob.parse_spec({**SPEC, "evaluation": {"enabled": False}})
    assert handler._refused_children(spec, OWNER) is None
    assert _jobs(tried) == ["ft-prepare", "ft-train"]
    # The objects made from the name alone are never tried (dryrun.NAME_ONLY_KINDS).
    assert not {kind for kind, _ in tried} & handler.dryrun.NAME_ONLY_KINDS


def test_a_refusal_becomes_an_invalid_spec(monkeypatch, tried):
    problem = SpecProblem("spec.resources.nodeSelector", "the API server refuses the Job ft-train made from it: bad key", "use label keys")
    monkeypatch.setattr(handler.dryrun, "refusals", lambda objects: (problem,))
    found = handler._refused_children(finetunejob.parse_spec(SPEC), OWNER)
    assert isinstance(found, InvalidSpec)
    assert problem in found.problems
