"""The decision framework (logic/advice.py): one row per rule of thumb, and the admission policy
that states the same rules with the same numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.finetunejob import SUITE_DEFAULT_GATE, SUITE_METRICS, DataReport, FineTuneJobSpec
from finetune_operator.logic import advice

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "config" / "admission" / "finetunejob-advice.yaml"

# Follows every rule: LoRA r16, lr 2e-4, 3 epochs, a validation split, early stopping on.
GOOD = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "dataset": {"uri": "s3://datasets/tickets.jsonl"},
    "hyperparameters": {"learningRate": 2e-4},
}


def job(**changes) -> FineTuneJobSpec:
    raw = {**GOOD}
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return FineTuneJobSpec.model_validate(raw)


def inline(count: int, dpo: bool = False) -> dict:
    record = {"prompt": "q", "chosen": "a", "rejected": "b"} if dpo else {"instruction": "q", "output": "a"}
    return {"uri": None, "inline": [record] * count}


@pytest.mark.parametrize(
    ("changes", "records", "reasons"),
    [
        pytest.param({}, None, [], id="follows-every-rule-count-unknown"),
        pytest.param({}, 5_000, [], id="follows-every-rule"),
        pytest.param({}, 499, ["FewExamples"], id="fewer-than-500-examples"),
        pytest.param({}, 500, [], id="500-examples-are-enough"),
        pytest.param({"adaptation": {"type": "full"}, "hyperparameters": {"learningRate": 2e-5}}, 9_999,
                     ["FullFineTuningFewExamples"], id="full-fine-tuning-under-10000"),
        pytest.param({"adaptation": {"type": "full"}, "hyperparameters": {"learningRate": 2e-5}}, 10_000, [],
                     id="full-fine-tuning-with-10000"),
        pytest.param({"adaptation": {"type": "full"}, "hyperparameters": {"learningRate": 2e-5}}, 100,
                     ["FewExamples", "FullFineTuningFewExamples"], id="full-fine-tuning-on-100"),
        pytest.param({"adaptation": {"rank": 4}}, None, ["LoRARankOutOfRange"], id="rank-4"),
        pytest.param({"adaptation": {"rank": 128}}, None, ["LoRARankOutOfRange"], id="rank-128"),
        pytest.param({"adaptation": {"rank": 8}}, None, [], id="rank-8"),
        pytest.param({"adaptation": {"rank": 64}}, None, [], id="rank-64"),
        pytest.param({"adaptation": {"type": "full", "rank": 4}, "hyperparameters": {"learningRate": 2e-5}}, None, [],
                     id="rank-ignored-for-full"),
        pytest.param({"hyperparameters": {"learningRate": 2e-5}}, None, ["LearningRateOutOfRange"], id="lora-lr-too-low"),
        pytest.param({"hyperparameters": {"learningRate": 1e-3}}, None, ["LearningRateOutOfRange"], id="lora-lr-too-high"),
        pytest.param({"adaptation": {"type": "full"}, "hyperparameters": {"learningRate": 2e-4}}, None,
                     ["LearningRateOutOfRange"], id="full-lr-too-high"),
        pytest.param({"hyperparameters": {"learningRate": 2e-4, "epochs": 8}}, None, ["TooManyEpochs"], id="8-epochs"),
        pytest.param({"hyperparameters": {"learningRate": 2e-4, "epochs": 5}}, None, [], id="5-epochs"),
        pytest.param({"method": "dpo", "dataset": {"format": "preference"}, "hyperparameters": {"learningRate": 5e-6}},
                     999, ["FewPreferencePairs"], id="dpo-under-1000-pairs"),
        pytest.param({"method": "dpo", "dataset": {"format": "preference"}, "hyperparameters": {"learningRate": 5e-6}},
                     1_000, [], id="dpo-1000-pairs-lr-rule-not-for-dpo"),
        pytest.param({"dataset": {"split": {"train": 0.9, "validation": 0.0, "test": 0.1}}, "earlyStopping": {"enabled": False}},
                     None, ["NoValidationNoEarlyStopping"], id="no-validation-no-early-stopping"),
        pytest.param({"earlyStopping": {"enabled": False}}, None, [], id="validation-split-without-early-stopping"),
        pytest.param({"adaptation": {"rank": 4}, "hyperparameters": {"epochs": 8},
                      "dataset": {"split": {"train": 0.9, "validation": 0.0, "test": 0.1}}, "earlyStopping": {"enabled": False}},
                     None, ["LoRARankOutOfRange", "TooManyEpochs", "NoValidationNoEarlyStopping"], id="several-rules"),
    ],
)
def test_rules(changes, records, reasons):
    found = advice.advise(job(**changes), records)
    assert [a.reason for a in found] == reasons
    for item in found:
        # Each says why and what to do instead, with the chapter's numbers.
        assert any(word in item.message for word in ("Use", "Try", "Collect", "Keep"))


def test_messages_carry_the_numbers():
    (few,) = advice.advise(job(), 120)
    assert few.message.startswith("120 training examples, fewer than 500") and "prompting" in few.message and "RAG" in few.message
    (rate,) = advice.advise(job(hyperparameters={"learningRate": 2e-5}), None)
    assert "learning rate 2e-05 is outside 0.0001-0.0005, the range for LORA" in rate.message
    (full,) = advice.advise(job(adaptation={"type": "full"}, hyperparameters={"learningRate": 1e-3}), None)
    assert "outside 1e-05-5e-05, the range for full fine-tuning" in full.message


def test_record_count_comes_from_the_data_report_else_inline_records():
    assert advice.record_count(job(), None) is None
    assert advice.record_count(job(dataset=inline(3)), None) == 3
    report = DataReport(total_records=900, valid_records=820)
    assert advice.record_count(job(dataset=inline(3)), report) == 820


@pytest.mark.parametrize(
    ("changes", "report", "expected"),
    [
        pytest.param({}, None, (ConditionStatus.FALSE, "NoAdvice", advice.MSG_NO_ADVICE), id="no-advice"),
        pytest.param({}, DataReport(valid_records=120), (ConditionStatus.TRUE, "FewExamples", None), id="prepared-count"),
        pytest.param({"adaptation": {"rank": 4}, "hyperparameters": {"epochs": 8}}, None,
                     (ConditionStatus.TRUE, "LoRARankOutOfRange,TooManyEpochs", None), id="reasons-joined"),
    ],
)
def test_condition(changes, report, expected):
    status, reason, message = advice.condition(job(**changes), report)
    assert (status, reason) == expected[:2]
    if expected[2] is not None:
        assert message == expected[2]
    else:
        found = advice.advise(job(**changes), advice.record_count(job(**changes), report))
        assert message == "; ".join(a.message for a in found)


def test_the_admission_policy_warns_with_the_same_rules_and_numbers():
    policy, binding = list(yaml.safe_load_all(POLICY.read_text()))
    assert binding["spec"]["validationActions"] == ["Warn"]
    assert policy["spec"]["failurePolicy"] == "Ignore"  # advice never blocks an apply
    rules = {}
    for validation in policy["spec"]["validations"]:
        text = validation.get("messageExpression") or validation["message"]
        reason = text.strip().lstrip("'").split(":")[0]
        rules[reason] = validation["expression"]
    assert set(rules) == {
        advice.REASON_FEW_EXAMPLES, advice.REASON_FULL_FINE_TUNING_FEW_EXAMPLES,
        advice.REASON_LORA_RANK, advice.REASON_LEARNING_RATE, advice.REASON_MANY_EPOCHS, advice.REASON_FEW_DPO_PAIRS,
        advice.REASON_NO_VALIDATION, advice.REASON_UNMEASURED_GATE,
    }
    assert f">= {advice.MIN_EXAMPLES}" in rules[advice.REASON_FEW_EXAMPLES]
    assert f">= {advice.MIN_FULL_FINE_TUNING_EXAMPLES}" in rules[advice.REASON_FULL_FINE_TUNING_FEW_EXAMPLES]
    low, high = advice.LORA_RANK_RANGE
    assert f">= {low}" in rules[advice.REASON_LORA_RANK] and f"<= {high}" in rules[advice.REASON_LORA_RANK]
    bounds = {float(n) for n in re.findall(r"\d+(?:\.\d+)?e-\d+", rules[advice.REASON_LEARNING_RATE])}
    assert bounds == {bound for pair in advice.LEARNING_RATE_RANGES.values() for bound in pair}
    assert f"<= {advice.MAX_EPOCHS}.0" in rules[advice.REASON_MANY_EPOCHS]
    assert f">= {advice.MIN_DPO_PAIRS}" in rules[advice.REASON_FEW_DPO_PAIRS]
    # The admission text for a rule without numbers to fill in is the status text.
    static = next(v for v in policy["spec"]["validations"] if "message" in v)
    assert " ".join(static["message"].split()) == f"{advice.REASON_NO_VALIDATION}: {advice.MSG_NO_VALIDATION}"


@pytest.mark.parametrize(
    ("evaluation", "suites_warned"),
    [
        pytest.param({}, [], id="every-suite-on"),
        pytest.param({"suites": {"pii": False}}, ["pii"], id="pii-off-default-gate-blocks"),
        pytest.param({"suites": {"pii": False, "bias": False}}, ["pii", "bias"], id="two-suites-off"),
        pytest.param({"suites": {"pii": False}, "gates": [{"name": "piiLeakage", "enabled": False}]}, [],
                     id="its-gate-disabled-too"),
        pytest.param({"suites": {"pii": False}, "gates": [{"name": "piiLeakage", "blocking": False}]}, [],
                     id="its-gate-a-warning"),
        pytest.param({"suites": {"pii": False}, "gates": [{"name": "piiLeakage", "metric": "toxicityMean"}]}, [],
                     id="its-gate-on-another-metric"),
        pytest.param({"suites": {"general": False}, "gates": [{"name": "noRegression", "enabled": False},
                      {"name": "generalFloor", "metric": "generalScore", "comparator": "GreaterThan", "threshold": 0.2}]},
                     ["general"], id="a-custom-gate-on-its-metric"),
        pytest.param({"suites": {"safety": False}, "gates": [{"name": "latency", "metric": "jailbreakRefusalRate"}]},
                     ["safety"], id="default-safety-gate-still-there"),
        pytest.param({"enabled": False, "suites": {"pii": False}}, [], id="no-evaluation-no-gates"),
    ],
)
def test_a_suite_off_under_a_blocking_gate_is_advised(evaluation, suites_warned):
    found = advice.unmeasured_gates(job(evaluation=evaluation))
    assert [a.reason for a in found] == [advice.REASON_UNMEASURED_GATE] * len(suites_warned)
    assert [a.message.split()[0] for a in found] == [f"evaluation.suites.{s}" for s in suites_warned]


def test_unmeasured_gates_appear_once_in_the_conditions_reason():
    status, reason, message = advice.condition(job(evaluation={"suites": {"pii": False, "bias": False}}), None)
    assert (status, reason) == (ConditionStatus.TRUE, advice.REASON_UNMEASURED_GATE)
    assert "evaluation.suites.pii" in message and "evaluation.suites.bias" in message


def test_the_admission_policy_says_the_same_about_unmeasured_gates():
    policy, _ = list(yaml.safe_load_all(POLICY.read_text()))
    texts = [" ".join(v["message"].split()) for v in policy["spec"]["validations"]
             if v.get("message", "").startswith(advice.REASON_UNMEASURED_GATE)]
    expected = [f"{advice.REASON_UNMEASURED_GATE}: " + advice.MSG_UNMEASURED_GATE.format(
        suite=suite, metrics=", ".join(metrics), gate=SUITE_DEFAULT_GATE[suite]) for suite, metrics in SUITE_METRICS.items()]
    assert texts == expected
    rules = [v["expression"] for v in policy["spec"]["validations"] if v.get("message", "").startswith(advice.REASON_UNMEASURED_GATE)]
    for rule, (suite, metrics) in zip(rules, SUITE_METRICS.items(), strict=True):
        assert f"variables.{suite}Off" in rule and f"g.name == '{SUITE_DEFAULT_GATE[suite]}'" in rule
        assert all(f"'{metric}'" in rule for metric in metrics)
