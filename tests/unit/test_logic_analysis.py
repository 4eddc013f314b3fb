"""logic.analysis: measurements classified, metric phases, the run's verdict, query templates."""

from __future__ import annotations

import datetime
import math

import pytest

from finetune_operator.api.rollout import (
    AnalysisMetric,
    AnalysisPhase,
    AnalysisSpec,
    Measurement,
    MeasurementPhase,
    MetricResult,
)
from finetune_operator.logic import analysis
from finetune_operator.logic.analysis import Measured, QueryVars

T0 = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
MIN = datetime.datetime.min.replace(tzinfo=datetime.UTC)
S = MeasurementPhase.SUCCESSFUL
F = MeasurementPhase.FAILED
I = MeasurementPhase.INCONCLUSIVE  # noqa: E741
E = MeasurementPhase.ERROR


def metric(name="error-rate", **overrides) -> AnalysisMetric:
    fields = {"name": name, "query": "q", "thresholds": {"max": 0.05}, "interval": "1m", "count": 3}
    fields.update(overrides)
    return AnalysisMetric.model_validate(fields)


def result_of(*phases: MeasurementPhase, name="error-rate", start=T0) -> MetricResult:
    """A MetricResult with these measurements one minute apart and counters to match."""
    measurements = [
        Measurement(phase=p, value=0.0, time=start + datetime.timedelta(minutes=i), message=str(p))
        for i, p in enumerate(phases)
    ]
    counts = {k: sum(p == ph for p in phases) for k, ph in
              (("successful", S), ("failed", F), ("inconclusive", I), ("error", E))}
    return MetricResult(name=name, measurements=measurements, **counts)


# ---- one measurement


@pytest.mark.parametrize(
    ("thresholds", "band", "value", "error", "expected", "message_has"),
    [
        pytest.param({"max": 0.05}, 0.0, 0.01, None, S, "within [-inf, 0.05]", id="below-max-succeeds"),
        pytest.param({"max": 0.05}, 0.0, 0.05, None, S, "within", id="exactly-max-succeeds"),
        pytest.param({"max": 0.05}, 0.0, 0.06, None, F, "0.06 > max 0.05", id="above-max-fails"),
        pytest.param({"max": 0.05}, 0.02, 0.06, None, I, "inconclusive band 0.02", id="above-max-within-band"),
        pytest.param({"max": 0.05}, 0.02, 0.07, None, I, "band", id="at-max-plus-band-is-inconclusive"),
        pytest.param({"max": 0.05}, 0.02, 0.0701, None, F, "> max 0.05", id="beyond-band-fails"),
        pytest.param({"min": 0.9}, 0.0, 0.95, None, S, "within [0.9, +inf]", id="above-min-succeeds"),
        pytest.param({"min": 0.9}, 0.0, 0.85, None, F, "0.85 < min 0.9", id="below-min-fails"),
        pytest.param({"min": 0.9}, 0.1, 0.85, None, I, "band 0.1", id="below-min-within-band"),
        pytest.param({"min": 0.9}, 0.1, 0.7, None, F, "< min 0.9", id="below-min-beyond-band"),
        pytest.param({"min": 0.9}, 0.1, 0.95, None, S, "within", id="band-never-touches-passing-values"),
        pytest.param({"min": 1, "max": 2}, 0.0, 1.5, None, S, "within [1, 2]", id="inside-range"),
        pytest.param({"min": 1, "max": 2}, 0.0, 0.5, None, F, "< min 1", id="under-range"),
        pytest.param({"min": 1, "max": 2}, 0.0, 2.5, None, F, "> max 2", id="over-range"),
        pytest.param({"max": 0.05}, 0.0, None, None, I, "no data", id="empty-result-is-inconclusive-never-failed"),
        pytest.param({"max": 0.05}, 0.0, math.nan, None, I, "NaN", id="nan-is-inconclusive"),
        pytest.param({"max": 1.5}, 0.0, math.inf, None, F, "inf > max", id="plus-inf-above-max-fails"),
        pytest.param({"max": 0.05}, 0.0, None, "prometheus down", E, "prometheus down", id="query-error-is-error"),
        pytest.param({"max": 0.05}, 0.0, 0.9, "boom", E, "boom", id="error-wins-over-a-value"),
    ],
)
def test_classify(thresholds, band, value, error, expected, message_has):
    phase, message = analysis.classify(metric(thresholds=thresholds, inconclusiveBand=band), value, error)
    assert phase == expected
    assert message_has in message


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        pytest.param(0.25, 0.25, id="finite-value-kept"),
        pytest.param(math.nan, None, id="nan-not-stored-json-has-none"),
        pytest.param(math.inf, None, id="inf-not-stored"),
        pytest.param(None, None, id="no-data"),
    ],
)
def test_measurement_stores_only_json_numbers(value, stored):
    m = analysis.measurement(metric(), value, None, T0)
    assert m.value == stored
    assert m.time == T0
    m.model_dump_json()  # serialisable for the status patch


# ---- one metric


@pytest.mark.parametrize(
    ("limits", "phases", "expected"),
    [
        pytest.param({}, [], AnalysisPhase.RUNNING, id="nothing-measured-yet"),
        pytest.param({}, [S, S], AnalysisPhase.RUNNING, id="fewer-than-count"),
        pytest.param({}, [S, S, S], AnalysisPhase.SUCCESSFUL, id="count-successful"),
        pytest.param({}, [F], AnalysisPhase.FAILED, id="one-failure-over-limit-0-fails-at-once"),
        pytest.param({"failureLimit": 1}, [F, S], AnalysisPhase.RUNNING, id="failure-within-limit-keeps-running"),
        pytest.param({"failureLimit": 1}, [F, S, S], AnalysisPhase.SUCCESSFUL, id="failure-within-limit-succeeds"),
        pytest.param({"failureLimit": 1}, [F, S, F], AnalysisPhase.FAILED, id="failed-exceeds-limit"),
        pytest.param({}, [I], AnalysisPhase.INCONCLUSIVE, id="inconclusive-over-limit-0-pauses"),
        pytest.param({"inconclusiveLimit": 1}, [I, S, S], AnalysisPhase.RUNNING,
                     id="inconclusive-does-not-count-towards-count"),
        pytest.param({"inconclusiveLimit": 1}, [I, S, S, S], AnalysisPhase.SUCCESSFUL,
                     id="inconclusive-within-limit-then-count-reached"),
        pytest.param({"inconclusiveLimit": 20}, [I, I, I], AnalysisPhase.RUNNING,
                     id="no-traffic-is-never-a-success"),
        pytest.param({"inconclusiveLimit": 2}, [I, I, I], AnalysisPhase.INCONCLUSIVE,
                     id="no-traffic-over-the-limit-pauses"),
        pytest.param({"inconclusiveLimit": 2, "failureLimit": 0}, [I, F], AnalysisPhase.FAILED,
                     id="failed-is-checked-before-inconclusive"),
        pytest.param({}, [E, E, E], AnalysisPhase.RUNNING, id="errors-below-limit-retry"),
        pytest.param({}, [E, E, E, E], AnalysisPhase.INCONCLUSIVE, id="consecutive-errors-pause"),
        pytest.param({}, [E, E, S, E, E, S], AnalysisPhase.RUNNING, id="errors-do-not-count-towards-count"),
        pytest.param({}, [E, S, E, S, E, S], AnalysisPhase.SUCCESSFUL, id="interleaved-errors-then-count-reached"),
    ],
)
def test_metric_phase(limits, phases, expected):
    phase, message = analysis.metric_phase(metric(**limits), result_of(*phases))
    assert phase == expected
    assert (message is None) == (expected == AnalysisPhase.RUNNING)


def test_failed_metric_message_names_counts_limit_and_value():
    m = metric(failureLimit=1)
    result = None
    for t, value in enumerate([0.2, 0.01, 0.3]):
        result = analysis.record(m, result, value, None, T0 + datetime.timedelta(minutes=t))
    phase, message = analysis.metric_phase(m, result)
    assert phase == AnalysisPhase.FAILED
    assert message == "2 of 3 measurements failed (failureLimit 1); last failed: 0.3 > max 0.05"


@pytest.mark.parametrize(
    ("values", "expected_counts", "expected_phase"),
    [
        pytest.param([0.01], (1, 0, 0, 0), AnalysisPhase.RUNNING, id="first-measurement"),
        pytest.param([0.01, 0.02, 0.0], (3, 0, 0, 0), AnalysisPhase.SUCCESSFUL, id="three-good"),
        pytest.param([0.01, 0.5], (1, 1, 0, 0), AnalysisPhase.FAILED, id="bad-value-fails"),
        pytest.param([None, 0.01], (1, 0, 1, 0), AnalysisPhase.INCONCLUSIVE, id="no-data-then-limit-0"),
        pytest.param(["error", 0.01], (1, 0, 0, 1), AnalysisPhase.RUNNING, id="error-counted-apart"),
    ],
)
def test_record_updates_counters_and_phase(values, expected_counts, expected_phase):
    m = metric()
    result = None
    for t, value in enumerate(values):
        error = "boom" if value == "error" else None
        result = analysis.record(m, result, None if error else value, error, T0 + datetime.timedelta(minutes=t))
    assert (result.successful, result.failed, result.inconclusive, result.error) == expected_counts
    assert result.phase == expected_phase
    assert len(result.measurements) == len(values)


def test_record_keeps_only_the_last_measurements_but_all_counts():
    m = metric(count=50)
    result = None
    for t in range(25):
        result = analysis.record(m, result, 0.0, None, T0 + datetime.timedelta(minutes=t))
    assert len(result.measurements) == analysis.MEASUREMENT_RETENTION
    assert result.measurements[-1].time == T0 + datetime.timedelta(minutes=24)
    assert result.successful == 25


@pytest.mark.parametrize(
    ("interval", "result", "expected"),
    [
        pytest.param("1m", None, MIN, id="never-measured-is-due-at-once"),
        pytest.param("1m", MetricResult(name="error-rate"), MIN, id="empty-result-is-due-at-once"),
        pytest.param("1m", result_of(S), T0 + datetime.timedelta(minutes=1), id="last-plus-interval"),
        pytest.param("30s", result_of(S, S), T0 + datetime.timedelta(minutes=1, seconds=30), id="interval-30s"),
        pytest.param("1m", result_of(S, S, S).model_copy(update={"phase": AnalysisPhase.SUCCESSFUL}), None,
                     id="done-metric-is-never-due"),
    ],
)
def test_next_measurement_at(interval, result, expected):
    assert analysis.next_measurement_at(metric(interval=interval), result) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m", 60), ("30s", 30), ("1h30m", 5400), ("250ms", 0.25), ("1.5s", 1.5)],
)
def test_parse_duration(text, seconds):
    assert analysis.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "1", "m", "1d", "1m x"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        analysis.parse_duration(text)


# ---- the run


def with_phase(result: MetricResult, m: AnalysisMetric) -> MetricResult:
    return result.model_copy(update={"phase": analysis.metric_phase(m, result)[0]})


@pytest.mark.parametrize(
    ("a_phases", "b_phases", "expected", "decided_by"),
    [
        pytest.param([S, S, S], [S, S, S], AnalysisPhase.SUCCESSFUL, None, id="all-successful"),
        pytest.param([S, S, S], [S], AnalysisPhase.RUNNING, None, id="one-still-running"),
        pytest.param([S], [F], AnalysisPhase.FAILED, "latency", id="any-failed-fails-at-once"),
        pytest.param([I], [F], AnalysisPhase.FAILED, "latency", id="failed-beats-inconclusive"),
        pytest.param([I], [S], AnalysisPhase.INCONCLUSIVE, "error-rate", id="any-inconclusive-pauses"),
        pytest.param([], [], AnalysisPhase.RUNNING, None, id="nothing-measured"),
    ],
)
def test_verdict(a_phases, b_phases, expected, decided_by):
    a, b = metric("error-rate"), metric("latency")
    results = [result_of(*a_phases, name="error-rate"), result_of(*b_phases, name="latency")]
    v = analysis.verdict([a, b], results)
    assert v.phase == expected
    assert v.metric == decided_by
    if decided_by:
        assert v.message.startswith(f"metric {decided_by} ")


def test_verdict_without_metrics_passes():
    assert analysis.verdict([], []).phase == AnalysisPhase.SUCCESSFUL


def test_failed_verdict_message_names_metric_value_and_threshold():
    m = metric("error-rate", failureLimit=0)
    status = analysis.start_run([m], 1, T0)
    status = analysis.advance([m], status, {"error-rate": Measured(value=0.12)}, T0)
    assert status.phase == AnalysisPhase.FAILED
    assert status.message == (
        "metric error-rate failed: 1 of 1 measurements failed (failureLimit 0); last failed: 0.12 > max 0.05"
    )


def test_a_run_measures_each_metric_count_times_interval_apart():
    fast = metric("error-rate", interval="30s", count=2)
    slow = metric("latency", interval="1m", count=2, thresholds={"max": 1.5})
    metrics = [fast, slow]
    status = analysis.start_run(metrics, 3, T0)
    assert status.phase == AnalysisPhase.RUNNING and status.step_index == 3
    timeline = []
    now = T0
    while status.phase == AnalysisPhase.RUNNING:
        due = analysis.due_metrics(metrics, status, now)
        timeline.append(((now - T0).total_seconds(), [m.name for m in due]))
        status = analysis.advance(metrics, status, {m.name: Measured(value=0.01) for m in due}, now)
        now = analysis.next_due(metrics, status) or now
    assert timeline == [(0, ["error-rate", "latency"]), (30, ["error-rate"]), (60, ["latency"])]
    assert status.phase == AnalysisPhase.SUCCESSFUL
    assert analysis.next_due(metrics, status) is None
    assert analysis.due_metrics(metrics, status, now) == []


def test_advance_ignores_measurements_after_the_verdict_and_of_done_metrics():
    m = metric(count=1)
    status = analysis.start_run([m], 0, T0)
    status = analysis.advance([m], status, {"error-rate": Measured(value=0.0)}, T0)
    assert status.phase == AnalysisPhase.SUCCESSFUL
    again = analysis.advance([m], status, {"error-rate": Measured(value=9.0)}, T0)
    assert again == status


# ---- query templates

VARS = QueryVars(namespace="prod", rollout="summarizer", canary="v2", stable="v1", model="summarizer")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param('x{model_version="{{canary}}"}', 'x{model_version="v2"}', id="canary"),
        pytest.param('x{model_version="{{ stable }}"}', 'x{model_version="v1"}', id="spaces-inside-braces"),
        pytest.param("{{version}}/{{stableVersion}}", "v2/v1", id="api-aliases"),
        pytest.param("{{namespace}}.{{rollout}}.{{model}}", "prod.summarizer.summarizer", id="namespace-rollout-model"),
        pytest.param("sum(up)", "sum(up)", id="no-variables"),
    ],
)
def test_render_query(template, expected):
    assert analysis.render_query(template, VARS) == expected


@pytest.mark.parametrize(
    ("template", "variables", "problem"),
    [
        pytest.param("{{canry}}", VARS, "unknown variable {{canry}}", id="typo-is-an-error-not-empty"),
        pytest.param("{{stable}}", QueryVars(namespace="n", rollout="r", canary="v1"),
                     "{{stable}} has no value", id="no-stable-yet"),
    ],
)
def test_render_query_errors(template, variables, problem):
    with pytest.raises(analysis.QueryTemplateError, match="query template") as exc:
        analysis.render_query(template, variables)
    assert problem in str(exc.value)


def test_render_query_escapes_promql_strings():
    v = QueryVars(namespace="n", rollout="r", canary='a"b\\c')
    assert analysis.render_query('{v="{{canary}}"}', v) == '{v="a\\"b\\\\c"}'


def test_default_queries_select_the_canary_and_stable_by_target_labels():
    by_name = {m.name: m for m in analysis.default_metrics()}
    error_rate = analysis.render_query(by_name["error-rate"].query, VARS)
    assert error_rate == (
        '(sum(rate(finetune_serve_request_errors_total{namespace="prod", rollout="summarizer", '
        'model_version="v2"}[1m])) or vector(0)) / sum(rate(finetune_serve_requests_total{namespace="prod", '
        'rollout="summarizer", model_version="v2"}[1m]))'
    )
    # Relative defaults: the same query for each version ({{version}} is the canary, then stable).
    assert by_name["error-rate"].relative and by_name["error-rate"].thresholds.max_increase == 0.01
    latency = analysis.render_query(by_name["latency-p95"].query, VARS)
    assert latency.count("histogram_quantile(0.95, sum by (le) (rate(finetune_serve_request_duration_seconds_bucket") == 1
    assert 'model_version="v2"' in latency
    assert by_name["latency-p95"].thresholds.max_ratio_to_stable == 1.5
    stable_vars = QueryVars(namespace="prod", rollout="summarizer", canary="v1")
    assert 'model_version="v1"' in analysis.render_query(by_name["latency-p95"].query, stable_vars)


def test_default_metrics_compare_format_compliance_when_the_version_has_a_schema():
    assert "format-compliance" not in {m.name for m in analysis.default_metrics()}
    by_name = {m.name: m for m in analysis.default_metrics(has_format_schema=True)}
    assert by_name["format-compliance"].thresholds.max_decrease == 0.01
    assert 'result="pass"' in by_name["format-compliance"].query


@pytest.mark.parametrize(
    ("analysis_spec", "templates", "expected"),
    [
        pytest.param(None, [], ["error-rate", "latency-p95"], id="no-analysis-runs-the-relative-defaults"),
        pytest.param({"none": True}, [], [], id="explicit-opt-out-passes-at-once"),
        pytest.param({"prometheus": {"address": "http://p:9090"}}, [], ["error-rate", "latency-p95"],
                     id="prometheus-without-metrics-uses-defaults"),
        pytest.param({"prometheus": {"address": "http://p:9090"}}, ["error-rate"], ["error-rate"],
                     id="step-selects-a-default"),
        pytest.param({"prometheus": {"address": "http://p:9090"},
                      "metrics": [{"name": "a", "query": "q", "thresholds": {"max": 1}},
                                  {"name": "b", "query": "q", "thresholds": {"max": 1}}]},
                     ["b"], ["b"], id="step-selects-user-metric"),
        pytest.param({"prometheus": {"address": "http://p:9090"},
                      "metrics": [{"name": "a", "query": "q", "thresholds": {"max": 1}}]},
                     [], ["a"], id="user-metrics-replace-defaults"),
    ],
)
def test_effective_metrics(analysis_spec, templates, expected):
    spec = AnalysisSpec.model_validate(analysis_spec) if analysis_spec else None
    assert [m.name for m in analysis.effective_metrics(spec, templates)] == expected


def test_effective_metrics_unknown_template():
    spec = AnalysisSpec.model_validate({"prometheus": {"address": "http://p:9090"}})
    with pytest.raises(ValueError, match="unknown metrics nope; spec.analysis.metrics has error-rate"):
        analysis.effective_metrics(spec, ["nope"])
