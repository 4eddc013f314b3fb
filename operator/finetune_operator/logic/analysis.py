"""Canary analysis: classify each measurement, derive each metric's phase and the run's verdict.

An analysis run measures every selected metric `count` times, `interval` apart (the first
measurement at once), the way an Argo Rollouts AnalysisRun does. Everything here is pure: the
controller asks `due_metrics` which metrics to measure now, runs the queries through a provider
(`finetune_operator.analysis`), hands the values to `advance`, and requeues at `next_due`.

One measurement is classified against the metric's thresholds [min, max] and its
`inconclusiveBand` b (>= 0), which widens the range on the failing side only:

    min <= v <= max                          Successful
    min - b <= v < min  or  max < v <= max + b   Inconclusive  (close to a threshold: ask a human)
    v < min - b  or  v > max + b              Failed
    the query returned no sample             Inconclusive  (no traffic yet is not a failure)
    the value is NaN (0/0: no traffic)       Inconclusive
    the query itself failed                  Error

Judged against the stable version (a metric with a relative threshold or `mannWhitney`), the
same query runs for the canary and then for the stable version (`{{version}}`/`{{canary}}`
filled with each) and the measurement keeps both values:

    maxRatioToStable r   canary / stable > r          Failed   (lower is better; 0/0 is 1, x/0 is inf)
    minRatioToStable r   canary / stable < r          Failed   (higher is better)
    maxIncrease d        canary - stable > d          Failed
    maxDecrease d        stable - canary > d          Failed
    (b = inconclusiveBand: past a limit by at most b, in the limit's unit -> Inconclusive)
    no data or NaN for stable                         Inconclusive
    mannWhitney          `logic.stats.judge` of the two histograms: Worse -> Failed,
                         NotWorse -> Successful, too few samples -> Inconclusive

A metric's phase, checked in this order after every measurement:

    failed > failureLimit                    Failed        (the rollout rolls back)
    inconclusive > inconclusiveLimit         Inconclusive  (the rollout pauses for a human)
    ERROR_LIMIT consecutive errors           Inconclusive  (cannot measure: pause, never promote)
    count conclusive measurements            Successful    (successful + failed within the limit)
    otherwise                                Running

Only conclusive measurements count towards `count`. An Error does not (the query is retried at
the next interval), so a flaky Prometheus costs time, not a verdict; nor does an Inconclusive
one, so a canary that got no traffic is never promoted on empty results: it is measured again
until it has `count` real verdicts or its inconclusive measurements exceed the limit (a pause). The run's verdict: any metric Failed -> Failed
(naming the metric, its value and the threshold it crossed); else any Inconclusive ->
Inconclusive; else all Successful -> Successful; else Running. A Failed or Inconclusive metric
ends the run at once: the other metrics are not measured further.

Queries are templates. The built-in default metrics (used when `spec.analysis` lists no
metrics, or is absent: error rate and p95 latency relative to stable, plus format compliance
when the Rollout declares an answer format) rely on this label contract between the serving Pods and the
Prometheus scrape config (see hack/prometheus/serving-scrape-config.yaml):

* the serving Pods carry the labels `finetune.ai/serve: "true"`, `finetune.ai/rollout: <rollout>`,
  `finetune.ai/model-version: <version>` and `finetune.ai/track: stable|canary`, and name the
  container port that serves the OpenAI API and `/metrics` `http`;
* the scrape config keeps those Pods and adds the target labels `namespace`, `pod`, `rollout`,
  `model_version` and `track`;
* the server exposes `finetune_serve_requests_total{model,status}`,
  `finetune_serve_request_errors_total{model}`, the histogram
  `finetune_serve_request_duration_seconds{model}` and `finetune_serve_info{model_version}`
  (whose own `model_version` label Prometheus keeps as `exported_model_version`).

So a canary's series are selected by `{namespace, rollout, model_version}`, which stays true
across promotion (the `track` label of a Pod may be rewritten when it is promoted).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Iterable, Mapping, Sequence

from finetune_operator.api.rollout import (
    AnalysisMetric,
    AnalysisPhase,
    AnalysisSpec,
    AnalysisStatus,
    Measurement,
    MeasurementPhase,
    MetricResult,
    Thresholds,
)
from finetune_operator.logic import stats

# Consecutive query errors after which a metric stops and the rollout pauses (Argo's
# consecutiveErrorLimit defaults to 4 as well).
ERROR_LIMIT = 4
# Measurements kept per metric in status (the counters keep the totals): a status holds 16
# metrics, and a Kubernetes object must stay well below 1.5 MB.
MEASUREMENT_RETENTION = 10

MSG_NO_DATA = "the query returned no data (no matching series: no traffic yet, or wrong labels?)"
MSG_NOT_A_NUMBER = "the query returned {value} (e.g. 0/0 while there is no traffic)"
MSG_IN_RANGE = "{value:g} is within {range}"
MSG_VS_STABLE = "canary {value:g} vs stable {stable:g}: {what}"
MSG_NO_STABLE_DATA = "the query returned no data for the stable version (no traffic on stable yet?)"
MSG_STABLE_NOT_A_NUMBER = "the query returned NaN for the stable version (no traffic on stable yet?)"
MSG_BELOW_MIN = "{value:g} < min {min:g}"
MSG_ABOVE_MAX = "{value:g} > max {max:g}"
MSG_BELOW_MIN_BAND = "{value:g} < min {min:g}, within the inconclusive band {band:g}"
MSG_ABOVE_MAX_BAND = "{value:g} > max {max:g}, within the inconclusive band {band:g}"

MSG_METRIC_FAILED = "{failed} of {taken} measurements failed (failureLimit {limit}); last failed: {last}"
MSG_METRIC_INCONCLUSIVE = (
    "{inconclusive} of {taken} measurements inconclusive (inconclusiveLimit {limit}); last: {last}"
)
MSG_METRIC_ERRORS = "{errors} consecutive query errors; last: {last}"
MSG_METRIC_SUCCESSFUL = "{successful} of {count} measurements successful"

MSG_RUN_FAILED = "metric {name} failed: {message}"
MSG_RUN_INCONCLUSIVE = "metric {name} inconclusive: {message}"
MSG_RUN_SUCCESSFUL = "all {n} metrics successful"
MSG_RUN_NO_METRICS = "no metrics to analyse"
MSG_RUN_RUNNING = "{done} of {n} metrics complete"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> datetime.timedelta:
    """`1m`, `30s`, `1h30m`, `250ms` (the API's Duration pattern) as a timedelta."""
    parts = _DURATION_PART.findall(text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"duration {text!r}: expected e.g. 30s, 1m, 1h30m or 250ms")
    return datetime.timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


# ---- one measurement


def _range(thresholds: Thresholds) -> str:
    low = "-inf" if thresholds.min is None else f"{thresholds.min:g}"
    high = "+inf" if thresholds.max is None else f"{thresholds.max:g}"
    return f"[{low}, {high}]"


def classify(
    metric: AnalysisMetric, value: float | None, error: str | None = None, stable: float | None = None
) -> tuple[MeasurementPhase, str]:
    """The phase of one measurement and why (see the module docstring for the rules)."""
    if error is not None:
        return MeasurementPhase.ERROR, error
    if value is None:
        return MeasurementPhase.INCONCLUSIVE, MSG_NO_DATA
    if math.isnan(value):
        return MeasurementPhase.INCONCLUSIVE, MSG_NOT_A_NUMBER.format(value="NaN")
    thresholds = metric.thresholds
    if thresholds is None:  # a Mann-Whitney metric is classified by `judge_samples`
        return MeasurementPhase.ERROR, "metric has no thresholds"
    band = metric.inconclusive_band
    if thresholds.relative:
        if stable is None:
            return MeasurementPhase.INCONCLUSIVE, MSG_NO_STABLE_DATA
        if math.isnan(stable):
            return MeasurementPhase.INCONCLUSIVE, MSG_STABLE_NOT_A_NUMBER
    worst: tuple[MeasurementPhase, str] | None = None
    for limit in _limits(thresholds, value, stable, band):
        phase, message = limit
        if phase == MeasurementPhase.FAILED:
            return phase, message
        worst = worst or (limit if phase == MeasurementPhase.INCONCLUSIVE else None)
    if worst is not None:
        return worst
    within = MSG_IN_RANGE.format(value=value, range=_range(thresholds))
    if thresholds.relative:
        within += "; " + MSG_VS_STABLE.format(value=value, stable=stable, what=_relative_text(thresholds))
    return MeasurementPhase.SUCCESSFUL, within


def _limits(
    thresholds: Thresholds, value: float, stable: float | None, band: float
) -> Iterable[tuple[MeasurementPhase, str]]:
    """Each crossed threshold's verdict; the inconclusive band widens each limit on its failing side.

    Relative limits compare `excess` (how far past the limit the canary is, in the limit's own
    unit: a ratio or a difference) with the band.
    """
    low, high = thresholds.min, thresholds.max
    if low is not None and value < low:
        if band > 0 and value >= low - band:
            yield MeasurementPhase.INCONCLUSIVE, MSG_BELOW_MIN_BAND.format(value=value, min=low, band=band)
        else:
            yield MeasurementPhase.FAILED, MSG_BELOW_MIN.format(value=value, min=low)
    if high is not None and value > high:
        if band > 0 and value <= high + band:
            yield MeasurementPhase.INCONCLUSIVE, MSG_ABOVE_MAX_BAND.format(value=value, max=high, band=band)
        else:
            yield MeasurementPhase.FAILED, MSG_ABOVE_MAX.format(value=value, max=high)
    if stable is None:
        return
    vs = f"canary {value:g} vs stable {stable:g}"
    ratio = _ratio(value, stable)
    crossed = []
    if thresholds.max_ratio_to_stable is not None and ratio > thresholds.max_ratio_to_stable:
        crossed.append((ratio - thresholds.max_ratio_to_stable, f"ratio {ratio:.3g} > maxRatioToStable {thresholds.max_ratio_to_stable:g}"))
    if thresholds.min_ratio_to_stable is not None and ratio < thresholds.min_ratio_to_stable:
        crossed.append((thresholds.min_ratio_to_stable - ratio, f"ratio {ratio:.3g} < minRatioToStable {thresholds.min_ratio_to_stable:g}"))
    if thresholds.max_increase is not None and value - stable > thresholds.max_increase:
        crossed.append((value - stable - thresholds.max_increase, f"increase {value - stable:.3g} > maxIncrease {thresholds.max_increase:g}"))
    if thresholds.max_decrease is not None and stable - value > thresholds.max_decrease:
        crossed.append((stable - value - thresholds.max_decrease, f"decrease {stable - value:.3g} > maxDecrease {thresholds.max_decrease:g}"))
    for excess, what in crossed:
        if band > 0 and excess <= band:
            yield MeasurementPhase.INCONCLUSIVE, f"{vs}: {what}, within the inconclusive band {band:g}"
        else:
            yield MeasurementPhase.FAILED, f"{vs}: {what}"


def _ratio(value: float, stable: float) -> float:
    if stable == 0:
        return 1.0 if value == 0 else math.inf
    return value / stable


def _relative_text(thresholds: Thresholds) -> str:
    parts = []
    if thresholds.max_ratio_to_stable is not None:
        parts.append(f"ratio <= {thresholds.max_ratio_to_stable:g}")
    if thresholds.min_ratio_to_stable is not None:
        parts.append(f"ratio >= {thresholds.min_ratio_to_stable:g}")
    if thresholds.max_increase is not None:
        parts.append(f"increase <= {thresholds.max_increase:g}")
    if thresholds.max_decrease is not None:
        parts.append(f"decrease <= {thresholds.max_decrease:g}")
    return ", ".join(parts)


def measurement(
    metric: AnalysisMetric,
    value: float | None,
    error: str | None,
    now: datetime.datetime,
    stable: float | None = None,
) -> Measurement:
    """A classified measurement as stored in status (JSON has no NaN/Inf: those stay in the message)."""
    phase, message = classify(metric, value, error, stable)
    stored = value if value is not None and math.isfinite(value) else None
    stored_stable = stable if stable is not None and math.isfinite(stable) else None
    return Measurement(value=stored, stable_value=stored_stable if metric.relative else None, phase=phase,
                       time=now, message=message)


def judge_samples(metric: AnalysisMetric, measured: Measured, now: datetime.datetime) -> Measurement:
    """A Mann-Whitney measurement: the canary's histogram against the stable's."""
    test = metric.mann_whitney
    assert test is not None
    if measured.error is not None:
        return Measurement(phase=MeasurementPhase.ERROR, time=now, message=measured.error)
    canary = stats.counts_from_histogram(measured.canary_samples or {})
    stable = stats.counts_from_histogram(measured.stable_samples or {})
    judgement = stats.judge(
        canary,
        stable,
        higher_is_better=test.higher_is_better,
        min_samples=test.min_samples,
        min_effect_size=test.min_effect_size,
        confidence=test.confidence,
    )
    phase = {
        stats.Outcome.WORSE: MeasurementPhase.FAILED,
        stats.Outcome.NOT_WORSE: MeasurementPhase.SUCCESSFUL,
        stats.Outcome.INCONCLUSIVE: MeasurementPhase.INCONCLUSIVE,
    }[judgement.outcome]
    canary_median = stats.quantile_from_counts(canary, 0.5)
    stable_median = stats.quantile_from_counts(stable, 0.5)
    return Measurement(
        value=canary_median if math.isfinite(canary_median) else None,
        stable_value=stable_median if math.isfinite(stable_median) else None,
        phase=phase,
        time=now,
        message=f"{judgement.message}; median bucket canary {canary_median:g} vs stable {stable_median:g}",
    )


# ---- one metric


def _consecutive_errors(result: MetricResult) -> int:
    n = 0
    for m in reversed(result.measurements):
        if m.phase != MeasurementPhase.ERROR:
            break
        n += 1
    return n


def _last(result: MetricResult, *phases: MeasurementPhase) -> str:
    for m in reversed(result.measurements):
        if m.phase in phases:
            return m.message or (f"{m.value:g}" if m.value is not None else "no value")
    return "not retained"


def metric_phase(metric: AnalysisMetric, result: MetricResult) -> tuple[AnalysisPhase, str | None]:
    """A metric's phase from its counters (rules in the module docstring) and a message."""
    taken = result.successful + result.failed + result.inconclusive
    if result.failed > metric.failure_limit:
        return AnalysisPhase.FAILED, MSG_METRIC_FAILED.format(
            failed=result.failed, taken=taken, limit=metric.failure_limit,
            last=_last(result, MeasurementPhase.FAILED),
        )
    if result.inconclusive > metric.inconclusive_limit:
        return AnalysisPhase.INCONCLUSIVE, MSG_METRIC_INCONCLUSIVE.format(
            inconclusive=result.inconclusive, taken=taken, limit=metric.inconclusive_limit,
            last=_last(result, MeasurementPhase.INCONCLUSIVE),
        )
    errors = _consecutive_errors(result)
    if errors >= ERROR_LIMIT:
        return AnalysisPhase.INCONCLUSIVE, MSG_METRIC_ERRORS.format(
            errors=errors, last=_last(result, MeasurementPhase.ERROR)
        )
    if result.successful + result.failed >= metric.count:
        return AnalysisPhase.SUCCESSFUL, MSG_METRIC_SUCCESSFUL.format(
            successful=result.successful, count=metric.count
        )
    return AnalysisPhase.RUNNING, None


def record(
    metric: AnalysisMetric,
    result: MetricResult | None,
    value: float | None,
    error: str | None,
    now: datetime.datetime,
    measured: Measured | None = None,
) -> MetricResult:
    """`result` (None: the first measurement) with one more measurement and its phase recomputed."""
    result = result or MetricResult(name=metric.name)
    if metric.mann_whitney is not None:
        taken = judge_samples(metric, measured or Measured(value=value, error=error), now)
    else:
        taken = measurement(metric, value, error, now, measured.stable_value if measured else None)
    counters = {
        MeasurementPhase.SUCCESSFUL: "successful",
        MeasurementPhase.FAILED: "failed",
        MeasurementPhase.INCONCLUSIVE: "inconclusive",
        MeasurementPhase.ERROR: "error",
    }
    field = counters[taken.phase]
    updated = result.model_copy(
        update={
            "measurements": [*result.measurements, taken][-MEASUREMENT_RETENTION:],
            field: getattr(result, field) + 1,
        }
    )
    phase, _ = metric_phase(metric, updated)
    return updated.model_copy(update={"phase": phase})


def next_measurement_at(metric: AnalysisMetric, result: MetricResult | None) -> datetime.datetime | None:
    """When the metric is measured next: None when it is done, `datetime.min` (UTC) when never measured."""
    if result is None or not result.measurements:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)
    if result.phase != AnalysisPhase.RUNNING:
        return None
    last = result.measurements[-1].time
    if last is None:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return last + parse_duration(metric.interval)


# ---- the run


@dataclasses.dataclass(frozen=True)
class Verdict:
    phase: AnalysisPhase
    message: str
    metric: str | None = None  # the metric that decided a Failed or Inconclusive verdict


def verdict(metrics: Sequence[AnalysisMetric], results: Iterable[MetricResult]) -> Verdict:
    """The run's phase across metrics: Failed > Inconclusive > Running > Successful."""
    by_name = {r.name: r for r in results}
    if not metrics:
        return Verdict(AnalysisPhase.SUCCESSFUL, MSG_RUN_NO_METRICS)
    phases = []
    for metric in metrics:
        result = by_name.get(metric.name) or MetricResult(name=metric.name)
        phase, message = metric_phase(metric, result)
        phases.append((metric.name, phase, message))
    for name, phase, message in phases:
        if phase == AnalysisPhase.FAILED:
            return Verdict(AnalysisPhase.FAILED, MSG_RUN_FAILED.format(name=name, message=message), name)
    for name, phase, message in phases:
        if phase == AnalysisPhase.INCONCLUSIVE:
            return Verdict(
                AnalysisPhase.INCONCLUSIVE, MSG_RUN_INCONCLUSIVE.format(name=name, message=message), name
            )
    done = sum(phase == AnalysisPhase.SUCCESSFUL for _, phase, _ in phases)
    if done == len(phases):
        return Verdict(AnalysisPhase.SUCCESSFUL, MSG_RUN_SUCCESSFUL.format(n=len(phases)))
    return Verdict(AnalysisPhase.RUNNING, MSG_RUN_RUNNING.format(done=done, n=len(phases)))


def start_run(
    metrics: Sequence[AnalysisMetric], step_index: int | None, now: datetime.datetime
) -> AnalysisStatus:
    """A fresh run for an analysis step: every metric Running with no measurements."""
    status = AnalysisStatus(
        step_index=step_index,
        start_time=now,
        metrics=[MetricResult(name=m.name) for m in metrics],
    )
    v = verdict(metrics, status.metrics)
    return status.model_copy(update={"phase": v.phase, "message": v.message})


def due_metrics(
    metrics: Sequence[AnalysisMetric], status: AnalysisStatus, now: datetime.datetime
) -> list[AnalysisMetric]:
    """The metrics to measure now (none once the run has a verdict)."""
    if status.phase != AnalysisPhase.RUNNING:
        return []
    by_name = {r.name: r for r in status.metrics}
    due = []
    for metric in metrics:
        at = next_measurement_at(metric, by_name.get(metric.name))
        if at is not None and at <= now:
            due.append(metric)
    return due


def next_due(
    metrics: Sequence[AnalysisMetric], status: AnalysisStatus
) -> datetime.datetime | None:
    """When the next measurement of this run is due (requeue then); None when the run is over."""
    if status.phase != AnalysisPhase.RUNNING:
        return None
    by_name = {r.name: r for r in status.metrics}
    times = [t for m in metrics if (t := next_measurement_at(m, by_name.get(m.name))) is not None]
    return min(times, default=None)


@dataclasses.dataclass(frozen=True)
class Measured:
    """What a provider returned for one metric's query.

    `value` is the canary's; a relative metric also has the stable version's `stable_value`; a
    Mann-Whitney metric has both versions' histograms (upper bound -> cumulative count) instead.
    """

    value: float | None = None
    error: str | None = None
    stable_value: float | None = None
    canary_samples: Mapping[float, float] | None = None
    stable_samples: Mapping[float, float] | None = None


def advance(
    metrics: Sequence[AnalysisMetric],
    status: AnalysisStatus,
    measured: Mapping[str, Measured],
    now: datetime.datetime,
) -> AnalysisStatus:
    """`status` with the new measurements (by metric name) recorded and the verdict recomputed."""
    if status.phase != AnalysisPhase.RUNNING:
        return status
    by_name = {r.name: r for r in status.metrics}
    results = []
    for metric in metrics:
        result = by_name.get(metric.name)
        still_running = result is None or result.phase == AnalysisPhase.RUNNING
        if metric.name in measured and still_running:
            m = measured[metric.name]
            result = record(metric, result, m.value, m.error, now, m)
        results.append(result or MetricResult(name=metric.name))
    v = verdict(metrics, results)
    return status.model_copy(update={"metrics": results, "phase": v.phase, "message": v.message})


# ---- query templates


@dataclasses.dataclass(frozen=True)
class QueryVars:
    """What a query template may refer to.

    `{{canary}}` (alias `{{version}}`), `{{stable}}` (alias `{{stableVersion}}`),
    `{{namespace}}`, `{{rollout}}` and `{{model}}`.
    """

    namespace: str
    rollout: str
    canary: str
    stable: str | None = None
    model: str | None = None

    def as_mapping(self) -> dict[str, str | None]:
        return {
            "canary": self.canary,
            "version": self.canary,
            "stable": self.stable,
            "stableVersion": self.stable,
            "namespace": self.namespace,
            "rollout": self.rollout,
            "model": self.model,
        }


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*)\s*\}\}")


class QueryTemplateError(ValueError):
    """A query names an unknown variable, or one this rollout has no value for."""


def _promql_string(value: str) -> str:
    # Values land inside PromQL double-quoted strings: escape what would end or break them.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_query(template: str, variables: QueryVars) -> str:
    """`template` with each `{{name}}` replaced; an unknown or empty variable is an error, not ''."""
    values = variables.as_mapping()
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            problems.append(f"unknown variable {{{{{name}}}}} (known: {', '.join(sorted(values))})")
            return match.group(0)
        value = values[name]
        if value is None:
            problems.append(f"{{{{{name}}}}} has no value for this rollout (e.g. no stable version yet)")
            return match.group(0)
        return _promql_string(value)

    rendered = _PLACEHOLDER.sub(substitute, template)
    if problems:
        raise QueryTemplateError("query template: " + "; ".join(problems))
    return rendered


CANARY_SELECTOR = 'namespace="{{namespace}}", rollout="{{rollout}}", model_version="{{canary}}"'
STABLE_SELECTOR = 'namespace="{{namespace}}", rollout="{{rollout}}", model_version="{{stable}}"'


VERSION_SELECTOR = 'namespace="{{namespace}}", rollout="{{rollout}}", model_version="{{version}}"'


def error_rate_query(window: str = "1m", selector: str = CANARY_SELECTOR) -> str:
    """Share of the version's requests that failed. With no errors series yet, 0 errors are assumed;
    with no requests the result is empty or NaN (both Inconclusive)."""
    return (
        f"(sum(rate(finetune_serve_request_errors_total{{{selector}}}[{window}])) or vector(0))"
        f" / sum(rate(finetune_serve_requests_total{{{selector}}}[{window}]))"
    )


def latency_p95_query(window: str = "5m", selector: str = VERSION_SELECTOR) -> str:
    """The version's p95 request latency."""
    return (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(finetune_serve_request_duration_seconds_bucket{{{selector}}}[{window}])))"
    )


def latency_p95_ratio_query(window: str = "5m") -> str:
    """The canary's p95 request latency divided by the stable's (one query, absolute threshold)."""
    return f"{latency_p95_query(window, CANARY_SELECTOR)} / {latency_p95_query(window, STABLE_SELECTOR)}"


def format_compliance_query(window: str = "5m", selector: str = VERSION_SELECTOR) -> str:
    """Share of the version's answers that passed its format check (schema or regex)."""
    return (
        f'sum(rate(finetune_serve_format_checks_total{{{selector}, result="pass"}}[{window}]))'
        f" / sum(rate(finetune_serve_format_checks_total{{{selector}}}[{window}]))"
    )


def histogram_samples_query(metric: str, window: str = "5m", selector: str = VERSION_SELECTOR) -> str:
    """A version's per-request samples as a histogram (cumulative count per `le`) for Mann-Whitney U."""
    return f"sum by (le) (increase({metric}_bucket{{{selector}}}[{window}]))"


ERROR_RATE = "error-rate"
LATENCY_P95 = "latency-p95"
LATENCY_P95_RATIO = "latency-p95-ratio"
FORMAT_COMPLIANCE = "format-compliance"


def default_metrics(has_format_schema: bool = False) -> list[AnalysisMetric]:
    """The analysis used when `spec.analysis` lists no metrics: the canary judged against stable.

    The same query runs for each version. Error rate at most 1 point above stable's; p95 latency
    at most 1.5x stable's; and, when the version has a format schema, format compliance at most
    1 point below stable's. A measurement without data on either side is inconclusive.
    """
    metrics = [
        AnalysisMetric(
            name=ERROR_RATE,
            query=error_rate_query("1m", VERSION_SELECTOR),
            thresholds=Thresholds(max_increase=0.01),
            inconclusive_band=0.005,
            interval="1m",
            count=5,
            failure_limit=1,
            inconclusive_limit=2,
        ),
        AnalysisMetric(
            name=LATENCY_P95,
            query=latency_p95_query("5m"),
            thresholds=Thresholds(max_ratio_to_stable=1.5),
            inconclusive_band=0.25,
            interval="1m",
            count=5,
            failure_limit=1,
            inconclusive_limit=2,
        ),
    ]
    if has_format_schema:
        metrics.append(
            AnalysisMetric(
                name=FORMAT_COMPLIANCE,
                query=format_compliance_query("5m"),
                thresholds=Thresholds(max_decrease=0.01),
                interval="1m",
                count=5,
                failure_limit=1,
                inconclusive_limit=2,
            )
        )
    return metrics


MSG_NO_PROMETHEUS = (
    "no Prometheus to judge the canary against stable: set spec.analysis.prometheus.address, or opt out "
    "explicitly with spec.analysis: {none: true}"
)
MSG_PROMOTED_WITHOUT_ANALYSIS = "promoted without analysis (spec.analysis.none)"


def analysis_disabled(analysis: AnalysisSpec | None) -> bool:
    """`spec.analysis: {none: true}`: the explicit opt-out; nothing else skips analysis."""
    return analysis is not None and analysis.none


def prometheus_address(analysis: AnalysisSpec | None) -> str | None:
    if analysis is None or analysis.prometheus is None:
        return None
    return analysis.prometheus.address


def effective_metrics(
    analysis: AnalysisSpec | None, templates: Sequence[str] = (), *, has_format_schema: bool = False
) -> list[AnalysisMetric]:
    """The metrics an analysis step runs.

    `spec.analysis.none`: none (the step passes at once and the status says so). No
    `spec.analysis`, or one without metrics: the defaults, relative to stable. `templates` (the
    step's names) select among them; empty selects all. A name that matches no metric raises
    ValueError (an invalid spec, reported as such).
    """
    if analysis_disabled(analysis):
        return []
    metrics = list(analysis.metrics if analysis is not None else ()) or default_metrics(has_format_schema)
    if not templates:
        return metrics
    by_name = {m.name: m for m in metrics}
    unknown = [t for t in templates if t not in by_name]
    if unknown:
        raise ValueError(
            f"analysis step names unknown metrics {', '.join(unknown)}; "
            f"spec.analysis.metrics has {', '.join(by_name) or 'none'}"
        )
    return [by_name[t] for t in templates]
