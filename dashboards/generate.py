"""Grafana dashboards of finetune-operator, built as code with grafana-foundation-sdk.

`make dashboards` writes one JSON file per dashboard into dashboards/json/ and the chart's
dashboards/ (the chart ships them as ConfigMaps for Grafana's sidecar), and copies
config/prometheus/rules.yaml into the chart (its PrometheusRule); `make dashboards-check` fails
when the committed files differ from what this writes (CI runs it, as crds-check).

Four views, each over the Prometheus data source picked in the `datasource` variable:

- overview: jobs by phase, success rate, GPU-hours and cost, versions by phase, gate outcomes,
  failures by root cause, rollouts by phase, the operator's own reconciles;
- FineTuneJob: loss curves, throughput, progress, GPU-hours, cost, queue wait, restarts per job;
- rollout: traffic weight per version over time, step, analysis values against thresholds,
  verdicts, promotions, aborts and rollbacks by cause, time in canary;
- serving: request rate, error ratio, latency, tokens, format compliance, refusals, prompt and
  answer length (drift), feedback score, per model version and track.

Every query selects with `=~"$variable"`, so "All" (`.*`) and one value both work; the panel-data
integration test fills the variables and runs every query against a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "json"
CHART_OUT = ROOT.parent / "charts" / "finetune-operator" / "dashboards"
# The chart's PrometheusRule carries the same rule groups: a copy it can read with .Files.Get.
RULES = ROOT.parent / "config" / "prometheus" / "rules.yaml"
CHART_RULES = ROOT.parent / "charts" / "finetune-operator" / "rules" / "rules.yaml"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["finetune-operator"]

NS = 'namespace=~"$namespace"'
JOB = f'{NS}, finetunejob=~"$finetunejob"'
RO = f'{NS}, rollout=~"$rollout"'
SERVE = f'{NS}, rollout=~"$rollout", model_version=~"$model_version"'
RATE = "$__rate_interval"
PASSED = ', result="pass"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def _target(query: Query, ref: str) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
    return target.legend_format(query.legend) if query.legend else target


def _with_targets(panel, queries: list[Query]):
    for index, query in enumerate(queries):
        panel = panel.with_target(_target(query, chr(ord("A") + index)))
    return panel.datasource(DATASOURCE)


def graph(title: str, description: str, queries: list[Query], unit: str = "short", width: int = 12) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).unit(unit).span(width).height(8)
    return _with_targets(panel, queries)


def single(title: str, description: str, query: Query, unit: str = "short", width: int = 6) -> stat.Panel:
    panel = stat.Panel().title(title).description(description).unit(unit).span(width).height(5)
    return _with_targets(panel, [query])


def bars(title: str, description: str, query: Query, unit: str = "short", width: int = 12) -> bargauge.Panel:
    panel = bargauge.Panel().title(title).description(description).unit(unit).span(width).height(8)
    return _with_targets(panel, [query])


def grid(title: str, description: str, query: Query, width: int = 24) -> table.Panel:
    panel = table.Panel().title(title).description(description).span(width).height(8)
    return _with_targets(panel, [query])


def variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name).label(label).query(query).datasource(DATASOURCE)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*")
    )


def base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title).uid(uid).description(description).tags(TAGS).refresh("30s").time("now-6h", "now")
        .timezone("browser").readonly()
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(variable("namespace", "Namespace", "label_values(finetune_operator_finetunejob_phase, namespace)"))
    )


def overview() -> dashboard.Dashboard:
    return (
        base("finetune-overview", "finetune-operator / Overview",
             "Fine-tuning at a glance: jobs, GPU-hours and cost, gate outcomes, rollouts, the operator itself.")
        .with_panel(single("Job success rate", "Succeeded / (Succeeded + Failed) FineTuneJobs.",
                           Query(f'sum(finetune_operator_finetunejob_phase{{{NS}, phase="Succeeded"}}) '
                                 f'/ sum(finetune_operator_finetunejob_phase{{{NS}, phase=~"Succeeded|Failed"}})'),
                           unit="percentunit"))
        .with_panel(single("GPU-hours", "GPU-hours of the FineTuneJobs that exist now.",
                           Query(f"sum(finetune_operator_finetunejob_gpu_hours{{{NS}}})")))
        .with_panel(single("Estimated cost", "GPU-hours x price per GPU-hour, summed.",
                           Query(f"sum(finetune_operator_finetunejob_estimated_cost{{{NS}}})"), unit="currencyUSD"))
        .with_panel(single("Versions in Production", "ModelVersions serving as stable.",
                           Query(f'sum(finetune_operator_modelversion_phase{{{NS}, phase="Production"}})')))
        .with_panel(bars("FineTuneJobs by phase", "How many FineTuneJobs are in each phase.",
                         Query(f"sum by (phase) (finetune_operator_finetunejob_phase{{{NS}}})", "{{phase}}")))
        .with_panel(bars("ModelVersions by phase", "Candidate, Approved, Rejected, Production, Deprecated.",
                         Query(f"sum by (phase) (finetune_operator_modelversion_phase{{{NS}}})", "{{phase}}")))
        .with_panel(bars("Gate pass rate", "Share of ModelVersions whose gate passed, per gate.",
                         Query(f"sum by (gate) (finetune_operator_modelversion_gate_passed{{{NS}}}) "
                               f"/ count by (gate) (finetune_operator_modelversion_gate_passed{{{NS}}})", "{{gate}}"),
                         unit="percentunit"))
        .with_panel(bars("Failures by root cause", "Failed FineTuneJobs by the reason of their Succeeded condition.",
                         Query(f"sum by (reason) (finetune_operator_finetunejob_failed{{{NS}}})", "{{reason}}")))
        .with_panel(bars("Rollouts by phase", "Progressing, Paused, Healthy, Degraded, RolledBack.",
                         Query(f"sum by (phase) (finetune_operator_rollout_phase{{{NS}}})", "{{phase}}")))
        .with_panel(graph("Reconciles", "Reconciles per second by kind and result.",
                          [Query(f"sum by (kind, result) (rate(finetune_operator_reconcile_total[{RATE}]))",
                                 "{{kind}} {{result}}")], unit="ops"))
        .with_panel(graph("Reconcile duration p95", "95th percentile wall time of one reconcile, by kind.",
                          [Query("histogram_quantile(0.95, sum by (le, kind) "
                                 f"(rate(finetune_operator_reconcile_duration_seconds_bucket[{RATE}])))", "{{kind}}")],
                          unit="s"))
    )


def finetunejob() -> dashboard.Dashboard:
    return (
        base("finetune-finetunejob", "finetune-operator / FineTuneJob",
             "Training of each FineTuneJob: loss curves, throughput, progress, GPU-hours and cost.")
        .with_variable(variable("finetunejob", "FineTuneJob",
                                'label_values(finetune_operator_finetunejob_phase{namespace=~"$namespace"}, finetunejob)'))
        .with_panel(graph("Training loss", "Latest training loss reported by the trainer.",
                          [Query(f"finetune_operator_finetunejob_train_loss{{{JOB}}}", "{{finetunejob}} train")]))
        .with_panel(graph("Validation loss", "Latest validation loss reported by the trainer.",
                          [Query(f"finetune_operator_finetunejob_validation_loss{{{JOB}}}", "{{finetunejob}} validation")]))
        .with_panel(graph("Throughput", "Training tokens per second.",
                          [Query(f"finetune_operator_finetunejob_tokens_per_second{{{JOB}}}", "{{finetunejob}}")]))
        .with_panel(bars("Progress", "Optimizer steps done, in percent of the planned steps.",
                         Query(f"finetune_operator_finetunejob_progress_percent{{{JOB}}}", "{{finetunejob}}"), unit="percent"))
        .with_panel(graph("Steps", "Optimizer steps done and planned.",
                          [Query(f"finetune_operator_finetunejob_progress_step{{{JOB}}}", "{{finetunejob}} step"),
                           Query(f"finetune_operator_finetunejob_progress_total_steps{{{JOB}}}", "{{finetunejob}} total")]))
        .with_panel(graph("Epoch", "Epochs done (fractional).",
                          [Query(f"finetune_operator_finetunejob_progress_epoch{{{JOB}}}", "{{finetunejob}}")]))
        .with_panel(graph("GPU-hours", "GPU-hours consumed so far.",
                          [Query(f"finetune_operator_finetunejob_gpu_hours{{{JOB}}}", "{{finetunejob}}")]))
        .with_panel(graph("Estimated cost", "GPU-hours x price per GPU-hour.",
                          [Query(f"finetune_operator_finetunejob_estimated_cost{{{JOB}}}", "{{finetunejob}}")],
                          unit="currencyUSD"))
        .with_panel(graph("Queue wait", "Seconds from creation until work started.",
                          [Query(f"finetune_operator_finetunejob_queue_wait_seconds{{{JOB}}}", "{{finetunejob}}")], unit="s"))
        .with_panel(graph("Restarts", "Times the training Job was restarted.",
                          [Query(f"finetune_operator_finetunejob_restarts{{{JOB}}}", "{{finetunejob}}")]))
        .with_panel(grid("Phase", "Current phase of each FineTuneJob.",
                         Query(f"finetune_operator_finetunejob_phase{{{JOB}}} == 1", "{{finetunejob}} {{phase}}")))
    )


def rollout() -> dashboard.Dashboard:
    return (
        base("finetune-rollout", "finetune-operator / Rollout",
             "Progressive delivery of model versions: weights over time, analysis against thresholds, rollbacks.")
        .with_variable(variable("rollout", "Rollout",
                                'label_values(finetune_operator_rollout_phase{namespace=~"$namespace"}, rollout)'))
        .with_panel(graph("Traffic weight per version", "Percentage of traffic on each version, stable and canary.",
                          [Query(f"finetune_operator_rollout_version_weight{{{RO}}}", "{{rollout}} {{version}} ({{track}})")],
                          unit="percent"))
        .with_panel(graph("Canary step", "Index of the current canary step.",
                          [Query(f"finetune_operator_rollout_current_step{{{RO}}}", "{{rollout}}")]))
        .with_panel(graph("Analysis values against thresholds",
                          "Latest measurement of each analysis metric, with its absolute min/max thresholds.",
                          [Query(f"finetune_operator_rollout_analysis_value{{{RO}}}", "{{rollout}} {{metric}}"),
                           Query(f"finetune_operator_rollout_analysis_threshold{{{RO}}}", "{{rollout}} {{metric}} {{bound}}")]))
        .with_panel(graph("Analysis verdicts", "Latest verdict of each analysis metric (1 = current).",
                          [Query(f"finetune_operator_rollout_analysis_verdict{{{RO}}} == 1", "{{rollout}} {{metric}} {{verdict}}")]))
        .with_panel(graph("Rollbacks by cause", "Rollbacks per Rollout, by what caused them.",
                          [Query(f"sum by (rollout, cause) (finetune_operator_rollout_rollbacks_total{{{RO}}})",
                                 "{{rollout}} {{cause}}")]))
        .with_panel(graph("Promotions and aborts", "Candidates promoted to stable, and aborts.",
                          [Query(f"finetune_operator_rollout_promotions_total{{{RO}}}", "{{rollout}} promotions"),
                           Query(f"finetune_operator_rollout_aborts_total{{{RO}}}", "{{rollout}} aborts")]))
        .with_panel(graph("Time in canary", "Seconds the current candidate has been in canary.",
                          [Query(f"finetune_operator_rollout_canary_seconds{{{RO}}}", "{{rollout}} {{candidate_version}}")],
                          unit="s"))
        .with_panel(grid("Versions", "Stable and candidate version of each Rollout.",
                         Query(f"finetune_operator_rollout_info{{{RO}}}", "{{rollout}}")))
        .with_panel(grid("Phase", "Current phase of each Rollout.",
                         Query(f"finetune_operator_rollout_phase{{{RO}}} == 1", "{{rollout}} {{phase}}")))
    )


def serving() -> dashboard.Dashboard:
    by = "model_version, track"
    legend = "{{model_version}} ({{track}})"

    def per_second(metric: str, extra: str = "") -> str:
        return f"sum by ({by}) (rate({metric}{{{SERVE}{extra}}}[{RATE}]))"

    def quantile(q: float, metric: str) -> str:
        return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{SERVE}}}[{RATE}])))"

    return (
        base("finetune-serving", "finetune-operator / Serving",
             "The served model versions: traffic, errors, latency, tokens and answer quality per version.")
        .with_variable(variable("rollout", "Rollout", 'label_values(finetune_serve_requests_total{namespace=~"$namespace"}, rollout)'))
        .with_variable(variable("model_version", "Model version",
                                'label_values(finetune_serve_requests_total{namespace=~"$namespace", rollout=~"$rollout"}, model_version)'))
        .with_panel(graph("Requests", "Requests per second per version.",
                          [Query(per_second("finetune_serve_requests_total"), legend)], unit="reqps"))
        .with_panel(graph("Error ratio", "Share of requests answered with a 5xx, per version.",
                          [Query(f'{per_second("finetune_serve_request_errors_total")} / {per_second("finetune_serve_requests_total")}',
                                 legend)], unit="percentunit"))
        .with_panel(graph("Latency", "Request latency p50 and p95, per version.",
                          [Query(quantile(0.5, "finetune_serve_request_duration_seconds"), f"p50 {legend}"),
                           Query(quantile(0.95, "finetune_serve_request_duration_seconds"), f"p95 {legend}")], unit="s"))
        .with_panel(graph("Tokens", "Prompt and generated tokens per second, per version.",
                          [Query(per_second("finetune_serve_prompt_tokens_total"), f"prompt {legend}"),
                           Query(per_second("finetune_serve_generated_tokens_total"), f"generated {legend}")]))
        .with_panel(graph("Format compliance", "Share of answers that pass the version's format check.",
                          [Query(f'{per_second("finetune_serve_format_checks_total", PASSED)} '
                                 f'/ {per_second("finetune_serve_format_checks_total")}', legend)], unit="percentunit"))
        .with_panel(graph("Refusals", "Answers per second that refuse the request, per version.",
                          [Query(per_second("finetune_serve_refusals_total"), legend)]))
        .with_panel(graph("Prompt length (drift)", "Prompt length p50 and p95 in tokens, per version.",
                          [Query(quantile(0.5, "finetune_serve_prompt_length_tokens"), f"p50 {legend}"),
                           Query(quantile(0.95, "finetune_serve_prompt_length_tokens"), f"p95 {legend}")]))
        .with_panel(graph("Answer length (drift)", "Answer length p50 and p95 in tokens, per version.",
                          [Query(quantile(0.5, "finetune_serve_answer_length_tokens"), f"p50 {legend}"),
                           Query(quantile(0.95, "finetune_serve_answer_length_tokens"), f"p95 {legend}")]))
        .with_panel(graph("Feedback score", "Mean score posted to /feedback, per version.",
                          [Query(f'{per_second("finetune_serve_feedback_score_sum")} / {per_second("finetune_serve_feedback_score_count")}',
                                 legend)]))
    )


DASHBOARDS = {"overview": overview, "finetunejob": finetunejob, "rollout": rollout, "serving": serving}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"finetune-{name}.json": json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the committed JSON differs")
    args = parser.parse_args(argv)
    rendered = render()
    stale = []
    for directory in (OUT, CHART_OUT):
        for name, text in rendered.items():
            path = directory / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path.relative_to(ROOT.parent)))
            else:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        extra = sorted(p for p in directory.glob("*.json") if p.name not in rendered) if directory.exists() else []
        for path in extra:
            if args.check:
                stale.append(f"{path.relative_to(ROOT.parent)} (no longer generated)")
            else:
                path.unlink()
    rules = RULES.read_text()
    if args.check:
        if not CHART_RULES.exists() or CHART_RULES.read_text() != rules:
            stale.append(str(CHART_RULES.relative_to(ROOT.parent)))
    else:
        CHART_RULES.parent.mkdir(parents=True, exist_ok=True)
        CHART_RULES.write_text(rules)
    if stale:
        print("dashboards are out of date (run `make dashboards` and commit): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
