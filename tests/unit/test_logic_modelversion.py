"""decide() for ModelVersion: a new version is a Candidate with Ready=Unknown; verdicts are kept."""

from __future__ import annotations

import datetime

import pytest

from finetune_operator.api.modelversion import ModelVersionStatus
from finetune_operator.logic.modelversion import decide, parse_spec
from finetune_operator.logic.spec import InvalidSpec

T0 = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)

VALID = {
    "modelName": "support-summarizer",
    "version": "v1",
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "artifact": {"uri": "s3://models/support-summarizer/v1", "digest": "sha256:" + "0" * 64},
}


def ready(status):
    return next(c for c in status.conditions if c.type == "Ready")


def test_valid_spec_parses():
    assert not isinstance(parse_spec(VALID), InvalidSpec)


@pytest.mark.parametrize(
    ("before", "expected_phase", "expected_ready", "expected_events", "changed"),
    [
        pytest.param(None, "Candidate", ("Unknown", "AwaitingEvaluation", T1), [("Normal", "Registered")], True,
                     id="new-version-is-a-candidate"),
        pytest.param("candidate-at-T0", "Candidate", ("Unknown", "AwaitingEvaluation", T0), [], False,
                     id="resync-changes-nothing"),
        pytest.param("approved", "Approved", None, [], True, id="verdict-of-the-gates-is-kept"),
    ],
)
def test_decide(before, expected_phase, expected_ready, expected_events, changed):
    spec = parse_spec(VALID)
    if before is None:
        status = ModelVersionStatus()
    elif before == "candidate-at-T0":
        status = decide(spec, ModelVersionStatus(), T0, generation=1).status
    else:
        status = ModelVersionStatus(phase="Approved")

    decision = decide(spec, status, T1, generation=1)

    assert decision.status.phase == expected_phase
    assert decision.status.observed_generation == 1
    if expected_ready:
        condition = ready(decision.status)
        assert (condition.status, condition.reason, condition.last_transition_time) == expected_ready
    assert [(e.type, e.reason) for e in decision.events] == expected_events
    assert decision.status_changed is changed


def test_invalid_spec_makes_ready_false_and_names_the_field():
    spec = parse_spec({**VALID, "artifact": {"uri": "s3://models/x"}})
    assert isinstance(spec, InvalidSpec)

    decision = decide(spec, ModelVersionStatus(), T1, generation=1)

    condition = ready(decision.status)
    assert (condition.status, condition.reason) == ("False", "InvalidSpec")
    assert "spec.artifact.digest" in condition.message
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "InvalidSpec")]
