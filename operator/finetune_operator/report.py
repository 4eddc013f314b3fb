"""`kubectl finetune report MODELVERSION`: one self-contained HTML page a reviewer can read,
attach to a ticket or archive — the model card, the loss curves, the gates and sample outputs.

Self-contained: no external script, style sheet, font or image. The curves are inline SVG drawn
here, the trainer's model card picture (model-card.png) is embedded as a data URI, and every
text taken from the cluster or the run's files is HTML-escaped (sample outputs are whatever a
model wrote). Its one script only filters the sample table by suite.

Inputs are plain dicts: the ModelVersion as the API returns it and, when the run's output
location is readable, its evaluation.json, progress.jsonl lines and model-card.png bytes
(`RunFiles`). Rendering is pure; the CLI does the reading.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

CARD_IMAGE = "model-card.png"
EVALUATION_FILE = "evaluation.json"
PROGRESS_FILE = "progress.jsonl"


@dataclass
class RunFiles:
    """What the report could read from the run's output location (each may be missing)."""

    location: str | None = None
    evaluation: Mapping[str, Any] | None = None
    progress: Sequence[Mapping[str, Any]] = field(default_factory=list)
    card_image: bytes | None = None
    problems: list[str] = field(default_factory=list)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def loss_series(progress: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(training loss per step, validation loss where it changed) from the training progress lines."""
    train: list[tuple[float, float]] = []
    validation: list[tuple[float, float]] = []
    for line in progress:
        if line.get("event") != "progress" or line.get("stage") == "evaluate":
            continue
        step, loss, eval_loss = line.get("step"), line.get("loss"), line.get("eval_loss")
        if not isinstance(step, (int, float)):
            continue
        if _finite(loss) and (not train or train[-1][0] != step):
            train.append((float(step), float(loss)))
        if _finite(eval_loss) and (not validation or validation[-1][1] != eval_loss):
            validation.append((float(step), float(eval_loss)))
    return train, validation


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def loss_svg(train: Sequence[tuple[float, float]], validation: Sequence[tuple[float, float]]) -> str:
    """The loss curves as an inline SVG chart with axes, ticks and a legend."""
    width, height, left, right, top, bottom = 640, 300, 56, 16, 16, 40
    points = [*train, *validation]
    if not points:
        return '<p class="muted">No training progress lines were found, so there is no loss curve.</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg class="chart" role="img" aria-label="loss curve" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    for i in range(5):
        x = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{sx(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x:.0f}</text>')
    parts.append(f'<text x="{(width + left) / 2:.0f}" y="{height - 6}" text-anchor="middle">step</text>')
    for series, css, label in ((train, "train", "training loss"), (validation, "validation", "validation loss")):
        if not series:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series)
        parts.append(f'<polyline class="{css}" points="{path}"><title>{label}</title></polyline>')
        if css == "validation":
            parts.extend(f'<circle class="validation" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3"/>' for x, y in series)
    parts.append(f'<text x="{width - right - 150}" y="{top + 12}" class="train-label">— training loss</text>')
    if validation:
        parts.append(f'<text x="{width - right - 150}" y="{top + 28}" class="validation-label">— validation loss</text>')
    parts.append("</svg>")
    return "".join(parts)


def _gates_table(gates: Sequence[Mapping[str, Any]]) -> str:
    if not gates:
        return '<p class="muted">The gates have not been judged yet (no evaluation, or the version is still a Candidate).</p>'
    rows = []
    for g in gates:
        verdict = "pass" if g.get("passed") else ("FAIL" if g.get("blocking", True) else "warn")
        rows.append(
            f'<tr><td>{_e(g.get("name"))}</td><td>{_e(g.get("metric"))}</td><td class="num">{_num(g.get("baseValue"))}</td>'
            f'<td class="num">{_num(g.get("value"))}</td><td class="verdict {verdict.lower()}">{verdict}</td>'
            f'<td>{_e(g.get("message"))}</td></tr>'
        )
    return ('<table class="gates"><thead><tr><th>gate</th><th>metric</th><th>base</th><th>fine-tuned</th>'
            "<th>result</th><th>rule</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _metrics_table(metrics: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    if not metrics:
        return ""
    rows = "".join(
        f'<tr><td>{_e(name)}</td><td class="num">{_num(base.get(name))}</td><td class="num">{_num(metrics.get(name))}</td></tr>'
        for name in sorted(set(metrics) | set(base))
    )
    return ('<h3>All metrics</h3><table><thead><tr><th>metric</th><th>base</th><th>fine-tuned</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _samples(samples: Sequence[Mapping[str, Any]]) -> str:
    if not samples:
        return '<p class="muted">No samples: evaluation.json was not readable or kept none.</p>'
    suites = sorted({str(s.get("suite", "")) for s in samples})
    options = "".join(f'<option value="{_e(s)}">{_e(s)}</option>' for s in suites)
    rows = "".join(
        f'<tr data-suite="{_e(s.get("suite", ""))}"><td>{_e(s.get("suite"))}</td><td><pre>{_e(s.get("input"))}</pre></td>'
        f'<td><pre>{_e(s.get("output"))}</pre></td><td><pre>{_e(s.get("base_output"))}</pre></td>'
        f'<td><pre>{_e(s.get("expected"))}</pre></td></tr>'
        for s in samples
    )
    return (f'<label>Suite <select id="suite-filter"><option value="">all ({len(samples)})</option>{options}</select></label>'
            '<table class="samples"><thead><tr><th>suite</th><th>input</th><th>fine-tuned</th><th>base</th>'
            f'<th>expected</th></tr></thead><tbody id="samples">{rows}</tbody></table>')


_SCRIPT = """
document.getElementById("suite-filter")?.addEventListener("change", (event) => {
  const suite = event.target.value;
  for (const row of document.querySelectorAll("#samples tr")) {
    row.hidden = suite !== "" && row.dataset.suite !== suite;
  }
});
"""

_STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; } .muted { color: #666; } .phase { font-weight: bold; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; } th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #f0f0f0; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict.pass { background: #009E73; color: white; } .verdict.fail { background: #D55E00; color: white; }
.verdict.warn { background: #E69F00; color: white; }
pre { white-space: pre-wrap; margin: 0; max-width: 30rem; font-size: 0.85rem; }
.chart text { font-size: 11px; fill: #444; } .chart .grid { stroke: #e4e4e4; }
.chart polyline { fill: none; stroke-width: 2; } .chart polyline.train { stroke: #0072B2; }
.chart polyline.validation { stroke: #E69F00; } .chart circle.validation { fill: #E69F00; }
.chart .train-label { fill: #0072B2; } .chart .validation-label { fill: #E69F00; }
img.card { max-width: 100%; border: 1px solid #ddd; } dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
dt { font-weight: bold; }
"""


def render(mv: Mapping[str, Any], run: RunFiles | None = None) -> str:
    """The whole report page for ModelVersion `mv`."""
    run = run or RunFiles()
    meta, spec, status = mv.get("metadata") or {}, mv.get("spec") or {}, mv.get("status") or {}
    card, lineage = spec.get("modelCard") or {}, spec.get("lineage") or {}
    artifact, record = spec.get("artifact") or {}, spec.get("evaluation") or {}
    evaluation = run.evaluation or {}
    name = meta.get("name", "?")
    title = f"{spec.get('modelName', name)} {spec.get('version', '')}".strip()

    facts = [
        ("Phase", f'<span class="phase">{_e(status.get("phase", "-"))}</span> {_e(status.get("message", ""))}'),
        ("Base model", _e((spec.get("baseModel") or {}).get("uri") or card.get("baseModel"))),
        ("Method", _e(card.get("method") or lineage.get("method"))),
        ("Artifact", f'<code>{_e(artifact.get("uri"))}</code> ({_e(artifact.get("digest"))})'),
        ("FineTuneJob", _e(lineage.get("fineTuneJob"))),
        ("Dataset digest", _e(lineage.get("datasetDigest"))),
        ("Trainer image", _e(lineage.get("trainerImage"))),
        ("Run files", _e(run.location or "not read")),
    ]
    train, validation = loss_series(run.progress)
    picture = ""
    if run.card_image:
        encoded = base64.b64encode(run.card_image).decode("ascii")
        picture = (f'<h2>Model card picture</h2><img class="card" alt="loss curve and quality gates" '
                   f'src="data:image/png;base64,{encoded}">')
    data = card.get("data") or {}
    hyper = card.get("hyperparameters") or lineage.get("hyperparameters") or {}
    problems = "".join(f"<li>{_e(p)}</li>" for p in run.problems)
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}: fine-tuning report</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">ModelVersion {_e(meta.get("namespace", ""))}/{_e(name)}</p>',
        "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>",
        f'<ul class="muted">{problems}</ul>' if problems else "",
        "<h2>Quality gates</h2>",
        _gates_table(status.get("gates") or []),
        _metrics_table(record.get("metrics") or evaluation.get("metrics") or {},
                       record.get("baseMetrics") or evaluation.get("base") or {}),
        "<h2>Loss curves</h2>",
        loss_svg(train, validation),
        picture,
        "<h2>Model card</h2>",
        f"<h3>Intended use</h3><p>{_e(card.get('intendedUse'))}</p>",
        f"<h3>Limitations</h3><p>{_e(card.get('limitations'))}</p>",
        ("<h3>Data</h3><dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in data.items()) + "</dl>") if data else "",
        ("<h3>Hyperparameters</h3><dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in hyper.items()) + "</dl>")
        if hyper else "",
        "<h2>Samples</h2>",
        _samples(evaluation.get("samples") or []),
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(s for s in sections if s) + "\n"


def parse_progress(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines
