"""Multi-task training: per-task sampling of the train split, per-task metrics, per-task gates."""

from __future__ import annotations

import pytest

from finetune_operator.api.common import Comparator, GateBaseline
from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.api.modelversion import GateRule
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders.finetunejob import Owner, Settings
from finetune_operator.logic import gates
from finetune_trainer.config import parse_config
from finetune_trainer.evaluate import Item, Scores, per_task
from finetune_trainer.modelcard import gate_rows
from finetune_trainer.prepare import sample_tasks, task_shares

ACCURACY = GateRule(name="taskAccuracy", metric="taskAccuracy", comparator=Comparator.GREATER_THAN_OR_EQUAL, threshold=0.85, per_task=True)


@pytest.mark.parametrize(
    ("mode", "temperature", "expected"),
    [
        pytest.param("proportional", 2.0, {"a": 0.8, "b": 0.2}, id="proportional"),
        pytest.param("equal", 2.0, {"a": 0.5, "b": 0.5}, id="equal"),
        pytest.param("temperature", 2.0, {"a": 2 / 3, "b": 1 / 3}, id="t2"),  # sqrt(800):sqrt(200) = 2:1
    ],
)
def test_task_shares(mode, temperature, expected):
    assert task_shares({"a": 800, "b": 200}, mode, temperature) == pytest.approx(expected)


def _config(tmp_path, mode, temperature=2.0):
    return parse_config({"model": {"uri": "/m"}, "dataset": {"source": "/d", "task_sampling": mode, "task_temperature": temperature},
                         "output": {"dir": str(tmp_path)}})


@pytest.mark.parametrize(("mode", "after"), [("proportional", {"a": 80, "b": 20}), ("equal", {"a": 20, "b": 20}),
                                             ("temperature", {"a": 40, "b": 20})])
def test_the_train_split_is_sampled_per_task_without_repeats(tmp_path, mode, after):
    rows = [(f"l{i}", {"instruction": str(i), "output": "x", "task": "a" if i < 80 else "b"}) for i in range(100)]
    kept, report = sample_tasks(_config(tmp_path, mode), rows)
    counts = {t: sum(1 for _, r in kept if r["task"] == t) for t in ("a", "b")}
    assert counts == after and report["after"] == after and report["before"] == {"a": 80, "b": 20}
    assert len({loc for loc, _ in kept}) == len(kept)  # never repeated
    assert sample_tasks(_config(tmp_path, mode), rows)[0] == kept  # seeded


def test_one_task_is_left_alone(tmp_path):
    rows = [(f"l{i}", {"instruction": str(i), "output": "x"}) for i in range(10)]
    assert sample_tasks(_config(tmp_path, "equal"), rows) == (rows, None)


def test_task_metrics_are_reported_per_task():
    items = [Item("task", str(i), [], "y", {"task": "a" if i < 3 else "b"}) for i in range(5)]
    scores = Scores(values={"taskAccuracy": [1, 1, 0, 0, 1], "formatCompliance": [1, 1, 1, 0, 1], "rougeL": [1] * 5})
    assert per_task(items, scores) == pytest.approx({
        "taskAccuracy/a": 2 / 3, "taskAccuracy/b": 0.5, "formatCompliance/a": 1.0, "formatCompliance/b": 0.5})
    assert per_task([Item("task", "0", [], "y")], scores) == {}


def test_a_per_task_gate_fails_when_any_task_fails_and_shows_the_worst():
    result = gates.judge(ACCURACY, {"taskAccuracy": 0.9, "taskAccuracy/billing": 0.95, "taskAccuracy/shipping": 0.8}, {})
    assert not result.passed and result.value == 0.8
    assert "on every task: billing 0.95, shipping 0.8; failing: shipping" in result.message
    passed = gates.judge(ACCURACY, {"taskAccuracy/billing": 0.95, "taskAccuracy/shipping": 0.88}, {})
    assert passed.passed and passed.value == 0.88  # the task closest to failing
    mean_only = gates.judge(ACCURACY.model_copy(update={"per_task": False}), {"taskAccuracy": 0.9, "taskAccuracy/shipping": 0.8}, {})
    assert mean_only.passed  # the average alone would have let it through


def test_a_per_task_gate_without_task_labels_is_not_measured():
    result = gates.judge(ACCURACY, {"taskAccuracy": 0.99}, {})
    assert not result.passed and "not measured per task" in result.message


def test_a_per_task_ratio_gate_compares_each_task_with_the_base_on_that_task():
    gate = ACCURACY.model_copy(update={"baseline": GateBaseline.RATIO_TO_BASE, "threshold": 0.95})
    metrics = {"taskAccuracy/a": 0.9, "taskAccuracy/b": 0.5}
    base = {"taskAccuracy/a": 0.9, "taskAccuracy/b": 0.6}
    result = gates.judge(gate, metrics, base)
    assert not result.passed and (result.value, result.base_value) == (0.5, 0.6)


def test_the_spec_reaches_the_trainer():
    spec = FineTuneJobSpec.model_validate({
        "baseModel": {"uri": "hf://org/base"},
        "dataset": {"uri": "s3://b/t.jsonl", "taskSampling": "temperature", "taskTemperature": 3},
        "evaluation": {"gates": [{"name": "taskAccuracy", "perTask": True}]},
    })
    rendered = builders.trainer_config_dict(Owner(name="mt", namespace="team", uid="u"), spec, Settings())
    config = parse_config(rendered)
    assert (config.dataset.task_sampling, config.dataset.task_temperature) == ("temperature", 3.0)
    gate = next(g for g in config.evaluation.gates if g.name == "taskAccuracy")
    assert gate.per_task and gate.threshold == 0.85
    assert [g for g in spec.evaluation.effective_gates() if g.per_task] == [g for g in spec.evaluation.effective_gates() if g.name == "taskAccuracy"]


def test_the_card_image_draws_a_row_per_task():
    rows = gate_rows([ACCURACY.model_dump(mode="json", by_alias=False)], {"taskAccuracy/a": 0.9, "taskAccuracy/b": 0.7}, {})
    assert [(r.name, r.passed) for r in rows] == [("taskAccuracy (a)", True), ("taskAccuracy (b)", False)]


def test_records_of_several_tasks_are_split_task_by_task(tmp_path):
    from finetune_trainer.prepare import split_records

    config = parse_config({"model": {"uri": "/m"}, "dataset": {"source": "/d", "split": {"train": 0.6, "validation": 0.2, "test": 0.2}},
                           "output": {"dir": str(tmp_path)}})
    rows = [{"instruction": str(i), "output": "x", "task": "big" if i < 90 else "small"} for i in range(100)]
    splits = split_records(config, rows)
    counts = {name: {t: sum(1 for r in rows_ if r["task"] == t) for t in ("big", "small")} for name, rows_ in splits.items()}
    assert counts == {"train": {"big": 54, "small": 6}, "validation": {"big": 18, "small": 2}, "test": {"big": 18, "small": 2}}
    assert split_records(config, rows) == splits  # seeded
    single = [{k: v for k, v in r.items() if k != "task"} for r in rows]
    assert [len(v) for v in split_records(config, single).values()] == [60, 20, 20]


def test_evaluation_json_has_every_task_metric_per_task():
    from finetune_trainer.evaluate import TASK_SUITE_METRICS

    items = [Item("task", str(i), [], "y", {"task": "a" if i < 2 else "b"}) for i in range(4)]
    scores = Scores(values={"rougeL": [1, 0, 1, 1], "exactMatch": [0, 0, 1, 1], "safetyPassRate": [1] * 60})
    assert per_task(items, scores, TASK_SUITE_METRICS) == {"exactMatch/a": 0.0, "exactMatch/b": 1.0, "rougeL/a": 0.5, "rougeL/b": 1.0}
