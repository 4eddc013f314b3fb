"""The canary judged against the stable version: relative thresholds, Mann-Whitney U, the
default analysis and its explicit opt-out."""

from __future__ import annotations

import json
import math

import pytest

from finetune_operator.api.rollout import AnalysisMetric, AnalysisPhase, AnalysisSpec, MeasurementPhase
from finetune_operator.logic import analysis
from finetune_operator.logic.analysis import Measured

from tests.unit.rollout_fixtures import Cluster, spec


def metric(**thresholds) -> AnalysisMetric:
    return AnalysisMetric(name="m", query='q{model_version="{{version}}"}', thresholds=thresholds)


@pytest.mark.parametrize(
    ("thresholds", "canary", "stable", "phase", "says"),
    [
        pytest.param({"maxIncrease": 0.01}, 0.03, 0.01, MeasurementPhase.FAILED, "increase 0.02 > maxIncrease 0.01",
                     id="3pct-vs-1pct-errors-fails-relative"),
        pytest.param({"max": 0.05}, 0.03, 0.01, MeasurementPhase.SUCCESSFUL, "within",
                     id="3pct-passes-an-absolute-5pct"),
        pytest.param({"maxIncrease": 0.01}, 0.012, 0.01, MeasurementPhase.SUCCESSFUL, "canary 0.012 vs stable 0.01",
                     id="equal-within-a-point-passes"),
        pytest.param({"maxRatioToStable": 1.2}, 0.5, 0.4, MeasurementPhase.FAILED, "ratio 1.25 > maxRatioToStable 1.2",
                     id="latency-ratio-fails"),
        pytest.param({"maxRatioToStable": 1.2}, 0.45, 0.4, MeasurementPhase.SUCCESSFUL, "ratio <= 1.2",
                     id="latency-ratio-passes"),
        pytest.param({"minRatioToStable": 0.95}, 0.8, 0.9, MeasurementPhase.FAILED, "< minRatioToStable 0.95",
                     id="score-ratio-fails-higher-is-better"),
        pytest.param({"maxDecrease": 0.01}, 0.80, 0.99, MeasurementPhase.FAILED, "decrease 0.19 > maxDecrease 0.01",
                     id="format-compliance-20pct-broken-fails"),
        pytest.param({"maxDecrease": 0.01}, 0.995, 0.99, MeasurementPhase.SUCCESSFUL, "decrease <= 0.01",
                     id="better-format-compliance-passes"),
        pytest.param({"maxIncrease": 0.01}, 0.03, None, MeasurementPhase.INCONCLUSIVE, "stable version",
                     id="no-stable-data-is-inconclusive"),
        pytest.param({"maxIncrease": 0.01}, 0.03, math.nan, MeasurementPhase.INCONCLUSIVE, "stable version",
                     id="stable-nan-is-inconclusive"),
        pytest.param({"maxRatioToStable": 2}, 0.01, 0.0, MeasurementPhase.FAILED, "ratio inf",
                     id="errors-where-stable-has-none-is-an-infinite-ratio"),
        pytest.param({"maxRatioToStable": 2}, 0.0, 0.0, MeasurementPhase.SUCCESSFUL, "ratio <= 2",
                     id="zero-vs-zero-is-ratio-one"),
    ],
)
def test_relative_thresholds(thresholds, canary, stable, phase, says):
    got, message = analysis.classify(metric(**thresholds), canary, None, stable)
    assert got == phase
    assert says in message


def test_relative_band_is_inconclusive_close_to_the_limit():
    m = AnalysisMetric(name="m", query="q", thresholds={"maxIncrease": 0.01}, inconclusiveBand=0.005)
    assert analysis.classify(m, 0.023, None, 0.01)[0] == MeasurementPhase.INCONCLUSIVE
    assert analysis.classify(m, 0.03, None, 0.01)[0] == MeasurementPhase.FAILED


def test_relative_measurement_stores_both_values():
    m = analysis.measurement(metric(maxIncrease=0.01), 0.03, None, analysis.datetime.datetime(2025, 1, 1), 0.01)
    assert (m.value, m.stable_value, m.phase) == (0.03, 0.01, MeasurementPhase.FAILED)


SLOW = {0.1: 20, 0.25: 60, 0.5: 140, 1.0: 200, math.inf: 200}  # cumulative, as Prometheus returns them
FAST = {0.1: 60, 0.25: 140, 0.5: 180, 1.0: 200, math.inf: 200}
MW = AnalysisMetric(name="latency-mw", query="q", mannWhitney={"minSamples": 50}, count=1)


@pytest.mark.parametrize(
    ("canary", "stable", "phase"),
    [
        pytest.param(SLOW, FAST, AnalysisPhase.FAILED, id="slower-canary-rolls-back"),
        pytest.param(FAST, FAST, AnalysisPhase.SUCCESSFUL, id="identical-passes"),
        pytest.param({0.1: 3, math.inf: 10}, FAST, AnalysisPhase.INCONCLUSIVE, id="too-little-traffic-pauses"),
        pytest.param(None, FAST, AnalysisPhase.INCONCLUSIVE, id="no-canary-data-pauses"),
    ],
)
def test_mann_whitney_run(canary, stable, phase):
    now = analysis.datetime.datetime(2025, 1, 1, tzinfo=analysis.datetime.UTC)
    run = analysis.start_run([MW], 0, now)
    run = analysis.advance([MW], run, {"latency-mw": Measured(canary_samples=canary, stable_samples=stable)}, now)
    assert run.phase == phase, run.message
    taken = run.metrics[0].measurements[-1]
    if phase != AnalysisPhase.INCONCLUSIVE:
        assert "Mann-Whitney U=" in taken.message and taken.stable_value is not None
    else:
        assert "too few samples" in taken.message


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param({"name": "m", "query": "q"}, "exactly one of thresholds or mannWhitney", id="no-judgement"),
        pytest.param({"name": "m", "query": "q", "thresholds": {"max": 1}, "mannWhitney": {}},
                     "exactly one of thresholds or mannWhitney", id="two-judgements"),
        pytest.param({"name": "m", "query": "q", "thresholds": {}}, "maxRatioToStable", id="empty-thresholds"),
    ],
)
def test_invalid_metrics(raw, problem):
    with pytest.raises(ValueError, match=problem):
        AnalysisMetric.model_validate(raw)


def test_opt_out_stands_alone():
    with pytest.raises(ValueError, match="spec.analysis.none"):
        AnalysisSpec.model_validate({"none": True, "prometheus": {"address": "http://p:9090"}})


STEPS = {"canary": {"steps": [{"setWeight": 10}, {"analysis": {}}, {"setWeight": 100}]}}


def start_canary(rollout_spec) -> Cluster:
    cluster = Cluster(rollout_spec, ready={"v1", "v2"})
    cluster.approve(1, ready=True)
    cluster.reconcile(0)
    cluster.approve(2, ready=True)
    return cluster


def test_no_analysis_never_promotes_blind():
    cluster = start_canary(spec(analysis=None, strategy=STEPS))
    for t in (5, 10, 60, 600):
        decision = cluster.reconcile(t)
    assert decision.status.phase == "Paused"
    assert decision.status.stable_version == "v1" and decision.status.candidate_version == "v2"
    assert "spec.analysis.prometheus.address" in decision.status.message
    assert "{none: true}" in decision.status.message


def test_no_analysis_measures_the_relative_defaults_with_a_prometheus():
    cluster = start_canary(spec(analysis={"prometheus": {"address": "http://p:9090"}}, strategy=STEPS))
    cluster.reconcile(5)
    cluster.reconcile(6)
    from finetune_operator.logic import rollout as logic
    due = logic.due_metrics(cluster.rollout_spec, cluster.status, analysis.datetime.datetime(2025, 1, 1, 12, 0, 6,
                                                                                              tzinfo=analysis.datetime.UTC))
    assert {m.name for m in due} == {"error-rate", "latency-p95"} and all(m.relative for m in due)
    worse = {"error-rate": Measured(value=0.03, stable_value=0.01), "latency-p95": Measured(value=0.2, stable_value=0.2)}
    cluster.reconcile(7, worse)  # the defaults tolerate one failed measurement (failureLimit 1)
    assert cluster.status.phase == "Progressing"
    decision = cluster.reconcile(67, worse)
    assert decision.status.phase == "Degraded" and decision.status.stable_version == "v1"
    assert "canary 0.03 vs stable 0.01" in decision.status.message
    failed = decision.status.analysis.metrics[0].measurements[-1]
    assert (failed.value, failed.stable_value) == (0.03, 0.01)


def test_explicit_opt_out_promotes_and_says_so():
    cluster = start_canary(spec(analysis={"none": True}, strategy=STEPS))
    events = []
    for t in (5, 6, 7):
        decision = cluster.reconcile(t)
        events.extend(decision.events)
    assert any("promoted without analysis" in e.message for e in events if e.reason == "Promoted")
    assert decision.status.phase == "Healthy" and decision.status.stable_version == "v2"
    assert "promoted without analysis" in decision.status.message
    assert "promoted without analysis" in decision.status.history[-1].reason
    assert "promoted without analysis" in cluster.reconcile(30).status.message


def test_serving_pods_get_the_answer_format_to_check():
    from finetune_operator.api.rollout import RolloutSpec
    from finetune_operator.builders import rollout as builders
    from finetune_operator.builders.rollout import Owner, ServedVersion

    schema = {"type": "object", "required": ["revenue"]}
    ro = RolloutSpec.model_validate({"modelName": "chat", "version": "v2",
                                     "serving": {"formatSchema": schema, "formatRegex": r"\{.*\}"}})
    assert ro.serving.has_format_check
    env = {e["name"]: e.get("value") for e in builders.deployment(
        Owner(name="chat", namespace="team", uid="u"), ro, ServedVersion("v2", "hf://b", "s3://m/v2"), 1
    )["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["FINETUNE_FORMAT_SCHEMA"]) == schema and env["FINETUNE_FORMAT_REGEX"] == r"\{.*\}"
    plain = RolloutSpec.model_validate({"modelName": "chat", "version": "v2"})
    env = {e["name"] for e in builders.deployment(
        Owner(name="chat", namespace="team", uid="u"), plain, ServedVersion("v2", "hf://b", "s3://m/v2"), 1
    )["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "FINETUNE_FORMAT_SCHEMA" not in env and not plain.serving.has_format_check


PROM = {"prometheus": {"address": "http://p:9090"}, "metrics": [
    {"name": "error-rate", "query": 'e{model_version="{{version}}"}', "thresholds": {"maxIncrease": 0.01},
     "interval": "1m", "count": 3}]}


def experiment(on_success="Promote"):
    return {"canary": {"steps": [{"experiment": {"weight": 10, "duration": "30m", "onSuccess": on_success}},
                                 {"setWeight": 50}, {"setWeight": 100}]}}


EQUAL = Measured(value=0.01, stable_value=0.01)
WORSE = Measured(value=0.03, stable_value=0.01)


def test_experiment_equal_goes_straight_to_100_after_the_duration():
    cluster = start_canary(spec(analysis=PROM, strategy=experiment()))
    assert cluster.reconcile(5).weight == 10
    for t in (6, 66, 126, 186):
        decision = cluster.reconcile(t, EQUAL)
    assert decision.status.phase == "Progressing" and decision.weight == 10  # holds the split for 30m
    assert "experiment: 10% on v2 until" in decision.status.message
    decision = cluster.reconcile(5 + 30 * 60 + 1, EQUAL)
    assert decision.status.phase == "Healthy" and decision.status.stable_version == "v2"
    assert decision.status.judgement.decision == "promote"
    assert decision.status.judgement.figures == ["error-rate: Successful: 0.01 is within [-inf, +inf]; "
                                                 "canary 0.01 vs stable 0.01: increase <= 0.01"]
    assert "experiment: not worse than v1" in decision.status.history[-1].reason
    judged = [e for e in decision.events if e.reason == "CanaryJudged"]
    assert judged and "Successful -> promote" in judged[0].message


def test_experiment_equal_continues_with_the_next_step():
    cluster = start_canary(spec(analysis=PROM, strategy=experiment("Continue")))
    cluster.reconcile(5)
    for t in (6, 66, 126):
        cluster.reconcile(t, EQUAL)
    decision = cluster.reconcile(5 + 30 * 60 + 1, EQUAL)
    # the next steps (50%, 100%) walk on at once here: nothing reports the router's weights
    assert decision.status.judgement.decision == "continue"
    assert decision.status.history[-1].reason == "all canary steps passed"


def test_experiment_worse_rolls_back_at_once():
    cluster = start_canary(spec(analysis=PROM, strategy=experiment()))
    cluster.reconcile(5)
    decision = cluster.reconcile(6, WORSE)
    assert decision.status.phase == "Degraded" and decision.status.stable_version == "v1"
    assert decision.status.judgement.verdict == "Failed" and decision.status.judgement.decision == "rollback"
    assert "canary 0.03 vs stable 0.01" in decision.status.judgement.figures[0]
    assert decision.status.history[-1].action == "rollback"
    assert any(e.reason == "CanaryJudged" and e.type == "Warning" for e in decision.events)


def test_experiment_without_enough_data_pauses_never_promotes():
    cluster = start_canary(spec(analysis=PROM, strategy=experiment()))
    cluster.reconcile(5)
    cluster.reconcile(6, EQUAL)  # one conclusive measurement of the three needed, then the traffic stops
    decision = cluster.reconcile(5 + 30 * 60 + 1)
    assert decision.status.phase == "Paused" and decision.status.stable_version == "v1"
    assert "without enough data" in decision.status.message
    assert decision.status.judgement.verdict == "Inconclusive" and decision.status.judgement.decision == "pause"


def test_experiment_weight_must_be_a_split():
    from finetune_operator.api.rollout import CanaryStep
    with pytest.raises(ValueError):
        CanaryStep.model_validate({"experiment": {"weight": 100, "duration": "30m"}})
    with pytest.raises(ValueError, match="exactly one of setWeight, pause, analysis or experiment"):
        CanaryStep.model_validate({"setWeight": 10, "experiment": {"weight": 10, "duration": "30m"}})


def test_cli_status_shows_the_judgement():
    from finetune_operator import cli

    lines = cli.judgement_lines({"judgement": {
        "candidate": "v2", "stable": "v1", "verdict": "Failed", "decision": "rollback", "time": "t",
        "figures": ["error-rate: Failed: canary 0.03 vs stable 0.01: increase 0.02 > maxIncrease 0.01"]}})
    assert lines[0] == "Judgement:  v2 vs stable v1: Failed -> rollback  (t)"
    assert "canary 0.03 vs stable 0.01" in lines[1]
    assert cli.judgement_lines({}) == []


@pytest.mark.parametrize(
    ("result", "buckets", "error"),
    [
        pytest.param([{"metric": {"le": "0.1"}, "value": [0, "3"]}, {"metric": {"le": "+Inf"}, "value": [0, "5"]}],
                     {0.1: 3.0, math.inf: 5.0}, None, id="buckets-by-le"),
        pytest.param([], None, None, id="no-series-is-no-data"),
        pytest.param([{"metric": {"pod": "a"}, "value": [0, "3"]}], None, "without an le label", id="not-a-histogram"),
        pytest.param([{"metric": {"le": "1"}, "value": [0, "3"]}, {"metric": {"le": "1"}, "value": [0, "4"]}],
                     None, "twice", id="not-aggregated"),
        pytest.param([{"metric": {"le": "1"}, "value": [0, "NaN"]}], {1.0: 0.0}, None, id="nan-bucket-is-empty"),
    ],
)
def test_prometheus_histogram_answers(result, buckets, error):
    from finetune_operator.analysis.prometheus import PrometheusProvider

    got = PrometheusProvider._interpret_histogram({"data": {"resultType": "vector", "result": result}})
    assert got.buckets == buckets
    assert (got.error is None) if error is None else (error in got.error)


# ---- the version's own answer format (ModelVersion spec.formatSchema)

VERSION_SCHEMA = json.dumps({"type": "object", "required": ["revenue"]}, sort_keys=True)


def _with_schemas(cluster: Cluster, *numbers: int) -> Cluster:
    import dataclasses

    cluster.versions = [dataclasses.replace(v, format_schema=VERSION_SCHEMA) if v.number in numbers else v
                        for v in cluster.versions]
    return cluster


@pytest.mark.parametrize(
    ("with_schema", "compared"),
    [
        pytest.param((1, 2), True, id="both-versions-have-a-schema-format-compliance-is-compared"),
        pytest.param((2,), False, id="only-the-candidate-has-one-no-stable-series-to-compare-with"),
        pytest.param((), False, id="neither-has-one"),
    ],
)
def test_default_analysis_compares_format_compliance_from_the_versions_schemas(with_schema, compared):
    from finetune_operator.logic import rollout as logic

    cluster = _with_schemas(start_canary(spec(analysis={"prometheus": {"address": "http://p:9090"}}, strategy=STEPS)),
                            *with_schema)
    cluster.reconcile(5)
    cluster.reconcile(6)
    due = logic.due_metrics(cluster.rollout_spec, cluster.status,
                            analysis.datetime.datetime(2025, 1, 1, 12, 0, 6, tzinfo=analysis.datetime.UTC),
                            cluster.observed())
    assert ("format-compliance" in {m.name for m in due}) is compared


def test_a_canary_breaking_its_versions_format_is_rolled_back():
    cluster = _with_schemas(start_canary(spec(analysis={"prometheus": {"address": "http://p:9090"}}, strategy=STEPS)), 1, 2)
    cluster.reconcile(5)
    cluster.reconcile(6)
    broken = {"error-rate": Measured(value=0.01, stable_value=0.01), "latency-p95": Measured(value=0.2, stable_value=0.2),
              "format-compliance": Measured(value=0.8, stable_value=0.99)}
    cluster.reconcile(7, broken)
    decision = cluster.reconcile(67, broken)
    assert decision.status.phase == "Degraded" and decision.status.stable_version == "v1"
    assert "format-compliance" in decision.status.message


def test_serving_pods_check_their_versions_own_format_unless_the_rollout_names_one():
    from finetune_operator.api.rollout import RolloutSpec
    from finetune_operator.builders import rollout as builders
    from finetune_operator.builders.rollout import Owner, ServedVersion

    def schema_env(serving):
        ro = RolloutSpec.model_validate({"modelName": "chat", "version": "v2", "serving": serving})
        served = ServedVersion("v2", "hf://b", "s3://m/v2", format_schema=VERSION_SCHEMA)
        env = builders.deployment(Owner(name="chat", namespace="team", uid="u"), ro, served, 1
                                  )["spec"]["template"]["spec"]["containers"][0]["env"]
        return next((e["value"] for e in env if e["name"] == "FINETUNE_FORMAT_SCHEMA"), None)

    assert schema_env({}) == VERSION_SCHEMA
    assert json.loads(schema_env({"formatSchema": {"type": "array"}})) == {"type": "array"}


def test_version_info_reads_the_format_schema_of_the_modelversion():
    from finetune_operator.logic import rollout as logic

    mv = {"metadata": {"name": "chat-v2", "labels": {}}, "spec": {"version": "v2", "formatSchema": {"required": ["revenue"], "type": "object"}}}
    assert logic.VersionInfo.from_object(mv).format_schema == VERSION_SCHEMA
    assert logic.VersionInfo.from_object({"metadata": {"name": "chat-v1"}, "spec": {"version": "v1"}}).format_schema == ""
