"""Quality gates: judge measured metrics against thresholds, absolutely or relative to the base.

The seed's gate table (task accuracy > 85%, format compliance > 95%, safety pass rate > 95%, no
regression beyond 5% of the base model, latency < 2x base as a warning) is data, in
`api.finetunejob.DEFAULT_GATES`; this module only judges. A gate whose metric was not measured
fails (a blocking gate that cannot be checked must not pass silently), and says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from finetune_operator.api.common import Comparator, GateBaseline
from finetune_operator.api.modelversion import EvaluationRecord, GateResult, GateRule, MetricComparison

_SYMBOL = {
    Comparator.GREATER_THAN: ">",
    Comparator.GREATER_THAN_OR_EQUAL: ">=",
    Comparator.LESS_THAN: "<",
    Comparator.LESS_THAN_OR_EQUAL: "<=",
}


# A RatioToParent gate's two figures: this version's metrics on the parent's test split, and the
# parent's own metrics there.
Parent = tuple[Mapping[str, float], Mapping[str, float]]


def judge(gate: GateRule, metrics: Mapping[str, float], base: Mapping[str, float], parent: Parent | None = None) -> GateResult:
    if gate.baseline == GateBaseline.RATIO_TO_PARENT:
        return _judge_against_parent(gate, parent)
    if gate.per_task:
        return _judge_per_task(gate, metrics, base)
    value = metrics.get(gate.metric)
    base_value = base.get(gate.metric)
    rule = f"{gate.metric} {_SYMBOL[gate.comparator]} {gate.threshold:g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _result(gate, value, base_value, False, f"{gate.metric} was not measured")
    if gate.baseline == GateBaseline.RATIO_TO_BASE:
        rule = f"{gate.metric} / base {_SYMBOL[gate.comparator]} {gate.threshold:g}"
        if base_value is None:
            return _result(gate, value, base_value, False, f"{gate.metric} of the base model was not measured")
        if base_value == 0:
            ratio = 1.0 if value == 0 else math.inf
        else:
            ratio = value / base_value
        passed = gate.comparator.holds(ratio, gate.threshold)
        return _result(gate, value, base_value, passed, f"{rule}: {value:.4g} / {base_value:.4g} = {ratio:.3g}")
    passed = gate.comparator.holds(value, gate.threshold)
    return _result(gate, value, base_value, passed, f"{rule}: measured {value:.4g}")


def _judge_against_parent(gate: GateRule, parent: Parent | None) -> GateResult:
    """value on the parent's test split / the parent's value there, like RatioToBase."""
    if not parent or not parent[1]:
        return _result(gate, None, None, False, f"{gate.metric} of the parent version was not measured (no parent test split)")
    as_ratio = gate.model_copy(update={"baseline": GateBaseline.RATIO_TO_BASE})
    result = judge(as_ratio, parent[0], parent[1])
    message = (result.message or "").split(": ", 1)[-1].replace(" / base ", " on the parent's test split / parent ", 1)
    return _result(gate, result.value, result.base_value, result.passed, message)


def task_values(metric: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """task -> the metric on that task's test items (the evaluator's `<metric>/<task>` figures)."""
    prefix = f"{metric}/"
    return {key.removeprefix(prefix): value for key, value in sorted(metrics.items()) if key.startswith(prefix)}


def _judge_per_task(gate: GateRule, metrics: Mapping[str, float], base: Mapping[str, float]) -> GateResult:
    """Every task must pass; the result carries the worst task (the first failing one, else the
    one closest to its threshold)."""
    tasks = task_values(gate.metric, metrics)
    if not tasks:
        return _result(gate, None, None, False, f"{gate.metric} was not measured per task (no test record has a task label)")
    single = gate.model_copy(update={"per_task": False})
    verdicts = {task: judge(single.model_copy(update={"metric": f"{gate.metric}/{task}"}), metrics, base) for task in tasks}
    failed = [task for task, result in verdicts.items() if not result.passed]
    higher_is_better = gate.comparator in (Comparator.GREATER_THAN, Comparator.GREATER_THAN_OR_EQUAL)
    worst = failed[0] if failed else (min if higher_is_better else max)(tasks, key=lambda t: tasks[t])
    shown = ", ".join(f"{task} {value:.4g}" for task, value in tasks.items())
    rule = f"{gate.metric} {_SYMBOL[gate.comparator]} {gate.threshold:g}" + (" x base" if gate.baseline == GateBaseline.RATIO_TO_BASE else "")
    message = f"{rule} on every task: {shown}" + (f"; failing: {', '.join(failed)}" if failed else "")
    return _result(gate, verdicts[worst].value, verdicts[worst].base_value, not failed, message)


def _result(gate: GateRule, value: float | None, base_value: float | None, passed: bool, message: str) -> GateResult:
    verdict = "passed" if passed else ("failed" if gate.blocking else "failed (warning only)")
    return GateResult(
        name=gate.name,
        metric=gate.metric,
        comparator=gate.comparator,
        threshold=gate.threshold,
        baseline=gate.baseline,
        value=value,
        base_value=base_value,
        passed=passed,
        blocking=gate.blocking,
        message=f"{verdict}: {message}",
    )


def parent_figures(record: EvaluationRecord) -> Parent | None:
    """A registered evaluation's figures against its parent version, when it has them."""
    if record.parent_metrics is None:
        return None
    return record.metrics_on_parent_split or {}, record.parent_metrics


def judge_all(
    gates: Iterable[GateRule], metrics: Mapping[str, float], base: Mapping[str, float], parent: Parent | None = None
) -> list[GateResult]:
    return [judge(gate, metrics, base, parent) for gate in gates]


def blocking_failures(results: Iterable[GateResult]) -> list[GateResult]:
    return [r for r in results if r.blocking and not r.passed]


def warnings(results: Iterable[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.blocking and not r.passed]


def comparison(metrics: Mapping[str, float], base: Mapping[str, float]) -> dict[str, MetricComparison]:
    """Before (base) and after (fine-tuned) for every metric either side measured."""
    return {
        name: MetricComparison(before=base.get(name), after=metrics.get(name))
        for name in sorted(set(metrics) | set(base))
    }


def summary(results: Iterable[GateResult]) -> str:
    results = list(results)
    failed = blocking_failures(results)
    if failed:
        return "rejected by " + "; ".join(f"{r.name} ({r.message})" for r in failed)
    warned = warnings(results)
    text = f"all {len(results) - len(warned)} blocking gates passed"
    if warned:
        text += "; warnings: " + "; ".join(f"{r.name} ({r.message})" for r in warned)
    return text
