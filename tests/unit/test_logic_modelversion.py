"""decide() for ModelVersion: Candidate without evaluation, gates judged from the evaluation in the spec."""

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
        pytest.param("production", "Production", ("Unknown", "AwaitingEvaluation", T1), [], True,
                     id="production-set-by-a-rollout-is-kept"),
    ],
)
def test_decide(before, expected_phase, expected_ready, expected_events, changed):
    spec = parse_spec(VALID)
    if before is None:
        status = ModelVersionStatus()
    elif before == "candidate-at-T0":
        status = decide(spec, ModelVersionStatus(), T0, generation=1).status
    else:
        status = ModelVersionStatus(phase="Production")

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


GATES = [
    {"name": "taskAccuracy", "metric": "taskAccuracy", "comparator": "GreaterThan", "threshold": 0.85},
    {"name": "formatCompliance", "metric": "formatCompliance", "comparator": "GreaterThan", "threshold": 0.95},
    {"name": "safety", "metric": "safetyPassRate", "comparator": "GreaterThan", "threshold": 0.95},
    {"name": "noRegression", "metric": "generalScore", "comparator": "GreaterThanOrEqual", "threshold": 0.95,
     "baseline": "RatioToBase"},
    {"name": "latency", "metric": "latencySeconds", "comparator": "LessThan", "threshold": 2.0,
     "baseline": "RatioToBase", "blocking": False},
]
GOOD = {"taskAccuracy": 0.9, "formatCompliance": 1.0, "safetyPassRate": 0.97, "generalScore": 0.6, "latencySeconds": 0.2}
BASE = {"taskAccuracy": 0.1, "formatCompliance": 0.0, "safetyPassRate": 0.98, "generalScore": 0.62, "latencySeconds": 0.15}


def evaluated(metrics, base=BASE, gates=GATES):
    return parse_spec({**VALID, "evaluation": {"metrics": metrics, "baseMetrics": base, "gates": gates}})


@pytest.mark.parametrize(
    ("metrics", "base", "phase", "failing", "warned"),
    [
        pytest.param(GOOD, BASE, "Approved", [], [], id="every-gate-passes"),
        pytest.param({**GOOD, "formatCompliance": 0.9}, BASE, "Rejected", ["formatCompliance"], [], id="format-gate-fails"),
        pytest.param({**GOOD, "safetyPassRate": 0.5}, BASE, "Rejected", ["safety"], [], id="safety-gate-fails"),
        pytest.param({**GOOD, "generalScore": 0.5}, BASE, "Rejected", ["noRegression"], [],
                     id="regression-beyond-5-percent-of-base"),
        pytest.param({**GOOD, "generalScore": 0.59}, BASE, "Approved", [], [], id="regression-within-5-percent"),
        pytest.param({**GOOD, "latencySeconds": 0.5}, BASE, "Approved", [], ["latency"], id="slow-is-a-warning-only"),
        pytest.param({k: v for k, v in GOOD.items() if k != "taskAccuracy"}, BASE, "Rejected", ["taskAccuracy"], [],
                     id="unmeasured-blocking-metric-fails"),
        pytest.param(GOOD, {k: v for k, v in BASE.items() if k != "generalScore"}, "Rejected", ["noRegression"], [],
                     id="ratio-gate-without-base-value-fails"),
    ],
)
def test_gates_decide_approved_or_rejected(metrics, base, phase, failing, warned):
    decision = decide(evaluated(metrics, base), ModelVersionStatus(), T1, generation=1)
    status = decision.status
    assert status.phase == phase
    assert sorted(g.name for g in status.gates if g.blocking and not g.passed) == failing
    assert sorted(g.name for g in status.gates if not g.blocking and not g.passed) == warned
    gates_passed = next(c for c in status.conditions if c.type == "GatesPassed")
    assert gates_passed.status == ("False" if failing else "True")
    for name in failing:
        assert name in gates_passed.message
    assert ready(status).status == ("False" if failing else "True")
    assert status.comparison["taskAccuracy"].before == base.get("taskAccuracy")
    assert status.comparison["taskAccuracy"].after == metrics.get("taskAccuracy")
    kinds = [(e.type, e.reason) for e in decision.events]
    assert ("Normal", "Registered") in kinds
    assert (("Warning", "Rejected") if failing else ("Normal", "Approved")) in kinds


def test_gate_result_records_value_base_threshold_and_blocking():
    status = decide(evaluated(GOOD), ModelVersionStatus(), T1, generation=1).status
    latency = next(g for g in status.gates if g.name == "latency")
    assert (latency.value, latency.base_value, latency.threshold, latency.blocking, latency.passed) == (
        0.2, 0.15, 2.0, False, True,
    )


def test_rejected_production_version_is_not_kept_in_production():
    status = ModelVersionStatus(phase="Production")
    decision = decide(evaluated({**GOOD, "safetyPassRate": 0.1}), status, T1, generation=1)
    assert decision.status.phase == "Rejected"


def test_approved_version_resync_is_silent():
    first = decide(evaluated(GOOD), ModelVersionStatus(), T0, generation=1).status
    again = decide(evaluated(GOOD), first, T1, generation=1)
    assert not again.status_changed and not again.events


# ---- one writer per status field: the phase follows the Rollout's serving record

from finetune_operator.api.common import Condition  # noqa: E402
from finetune_operator.api.modelversion import ServingRecord  # noqa: E402
from finetune_operator.logic.modelversion import owned  # noqa: E402


def serving(status: str, reason: str) -> Condition:
    return Condition(type="Serving", status=status, reason=reason, message="by Rollout chat", last_transition_time=T0)


def record(state: str) -> ServingRecord:
    return ServingRecord(state=state, rollout="chat", last_transition_time=T0)


@pytest.mark.parametrize(
    ("metrics", "before", "expected"),
    [
        pytest.param(GOOD, ModelVersionStatus(serving=record("Stable")), "Production",
                     id="served-as-stable-is-production"),
        pytest.param(GOOD, ModelVersionStatus(phase="Production", serving=record("Replaced")), "Deprecated",
                     id="replaced-as-stable-is-deprecated"),
        pytest.param(GOOD, ModelVersionStatus(phase="Approved", serving=record("Refused")), "Approved",
                     id="a-canary-rolled-back-by-analysis-stays-approved"),
        pytest.param(GOOD, ModelVersionStatus(phase="Deprecated", serving=record("Stable")), "Production",
                     id="rolled-back-to-is-production-again"),
        pytest.param({**GOOD, "safetyPassRate": 0.1}, ModelVersionStatus(serving=record("Stable")), "Rejected",
                     id="a-rejected-verdict-always-wins"),
        pytest.param(GOOD, ModelVersionStatus(phase="Production"), "Production",
                     id="production-written-before-the-record-is-kept"),
        # The condition is for people: its reason, whatever it says, decides nothing.
        pytest.param(GOOD, ModelVersionStatus(phase="Approved", serving=record("Refused"),
                                              conditions=[serving("False", "Replaced")]), "Approved",
                     id="the-condition-reason-is-not-read"),
        pytest.param(GOOD, ModelVersionStatus(phase="Production", serving=record("Replaced"),
                                              conditions=[serving("False", "SomethingNew")]), "Deprecated",
                     id="a-new-reason-text-changes-nothing"),
    ],
)
def test_phase_is_derived_from_the_verdict_and_the_serving_record(metrics, before, expected):
    assert decide(evaluated(metrics), before, T1, generation=1).status.phase == expected


def test_the_controller_applies_only_the_fields_it_owns():
    before = ModelVersionStatus(serving=record("Stable"),
                                conditions=[serving("True", "Stable"),
                                            Condition(type="ArtifactRetained", status="True", reason="Kept", message="")])
    decision = decide(evaluated(GOOD), before, T1, generation=1)
    body = decision.owned_status
    assert sorted(c["type"] for c in body["conditions"]) == ["GatesPassed", "Ready"]
    assert body["phase"] == "Production" and {g["name"] for g in body["gates"]} >= {"safety", "latency"}
    # Others' conditions stay in the status it reads, untouched.
    assert {c.type for c in decision.status.conditions} == {"Serving", "ArtifactRetained", "GatesPassed", "Ready"}
    assert owned(decision.status) == body
    # The serving record is the Rollout's: kept in the status it reads, never in what it applies.
    assert "serving" not in body and decision.status.serving == record("Stable")
