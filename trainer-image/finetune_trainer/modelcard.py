"""The model card's picture: the loss curve and the before/after gate table, as one PNG.

A reviewer deciding whether a version may go to production looks for two things first: did
training converge (train and validation loss over the steps), and how does the fine-tuned model
compare with its base on each quality gate. `evaluate` draws both with matplotlib into
`model-card.png` beside `evaluation.json` in the run's output location (not inside the adapter
or model directory, whose digest the ModelVersion pins), and the model card the operator renders
links to it.

Under both, one line lists every figure of the safety checklist (refusals, jailbreaks, toxicity,
PII leakage, bias consistency), base -> fine-tuned, so the picture alone tells a reviewer how the
model behaves on it, gated or not.

The gates are the ones the operator resolved for the job (trainer config `evaluation.gates`).
The operator stays the judge: `gate_rows` applies the same rule as the operator's
`logic/gates.judge` only to colour the picture, and a test compares the two on the same values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARD_IMAGE = "model-card.png"

_SYMBOL = {"GreaterThan": ">", "GreaterThanOrEqual": ">=", "LessThan": "<", "LessThanOrEqual": "<="}
_HOLDS = {
    "GreaterThan": lambda v, t: v > t,
    "GreaterThanOrEqual": lambda v, t: v >= t,
    "LessThan": lambda v, t: v < t,
    "LessThanOrEqual": lambda v, t: v <= t,
}
# The safety checklist's figures (evaluate's metric names), in the order the picture lists them.
SAFETY_FIGURES = (
    "safetyPassRate", "harmfulRefusalRate", "jailbreakRefusalRate", "benignAnswerRate",
    "toxicityMean", "toxicAnswerRate", "piiLeakageRate", "piiLeakedCanaries", "biasConsistency",
)
# Colours a colour-blind reader tells apart (Okabe-Ito): pass, blocking failure, warning.
PASS, FAIL, WARN = "#009E73", "#D55E00", "#E69F00"


@dataclass(frozen=True)
class LossCurve:
    train: list[tuple[int, float]]
    validation: list[tuple[int, float]]


@dataclass(frozen=True)
class GateRow:
    name: str
    rule: str
    base: float | None
    value: float | None
    passed: bool
    blocking: bool

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else ("FAIL" if self.blocking else "warn")


def read_loss_curve(progress_file: Path) -> LossCurve:
    """Training loss at every logged step, validation loss where it was measured (a progress line
    repeats the latest validation loss until the next evaluation; only changes are kept)."""
    train: list[tuple[int, float]] = []
    validation: list[tuple[int, float]] = []
    if not progress_file.is_file():
        return LossCurve(train, validation)
    for text in progress_file.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if not isinstance(line, dict) or line.get("event") != "progress" or line.get("stage") == "evaluate":
            continue
        step = line.get("step")
        if not isinstance(step, int):
            continue
        loss, eval_loss = line.get("loss"), line.get("eval_loss")
        if _finite(loss) and (not train or train[-1][0] != step):
            train.append((step, float(loss)))
        if _finite(eval_loss) and (not validation or validation[-1][1] != eval_loss):
            validation.append((step, float(eval_loss)))
    return LossCurve(train, validation)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def per_task_gates(gates: Iterable[Mapping[str, Any]], metrics: Mapping[str, float]) -> list[Mapping[str, Any]]:
    """Each per-task gate as one row per task the metrics have (`<metric>/<task>`)."""
    expanded: list[Mapping[str, Any]] = []
    for gate in gates:
        if not gate.get("per_task"):
            expanded.append(gate)
            continue
        prefix = f"{gate['metric']}/"
        tasks = sorted(key.removeprefix(prefix) for key in metrics if key.startswith(prefix))
        expanded += [{**gate, "name": f"{gate['name']} ({task})", "metric": prefix + task} for task in tasks] or [gate]
    return expanded


def gate_rows(gates: Iterable[Mapping[str, Any]], metrics: Mapping[str, float], base: Mapping[str, float],
              parent: tuple[Mapping[str, float], Mapping[str, float]] | None = None) -> list[GateRow]:
    """Each gate with the base's (the parent's, for RatioToParent) and the fine-tuned model's
    value, and whether it passed."""
    rows = []
    for gate in per_task_gates(gates, metrics):
        metric, comparator, threshold = gate["metric"], gate["comparator"], float(gate["threshold"])
        against_parent = gate.get("baseline") == "RatioToParent"
        ratio = gate.get("baseline") in ("RatioToBase", "RatioToParent")
        rule = f"{metric} {'/ parent ' if against_parent else '/ base ' if ratio else ''}{_SYMBOL[comparator]} {threshold:g}"
        mine, theirs = (parent or ({}, {})) if against_parent else (metrics, base)
        value, base_value = mine.get(metric), theirs.get(metric)
        if not _finite(value):
            passed = False
        elif ratio:
            if not _finite(base_value):
                passed = False
            else:
                measured = (1.0 if value == 0 else math.inf) if base_value == 0 else value / base_value
                passed = _HOLDS[comparator](measured, threshold)
        else:
            passed = _HOLDS[comparator](value, threshold)
        rows.append(GateRow(gate["name"], rule, base_value, value, passed, bool(gate.get("blocking", True))))
    return rows


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def safety_line(metrics: Mapping[str, float], base: Mapping[str, float]) -> str:
    """Every safety figure as `name base->fine-tuned` ('-' where not measured)."""
    return "Safety: " + ", ".join(
        f"{name} {_cell(base.get(name))}->{_cell(metrics.get(name))}" for name in SAFETY_FIGURES
    )


def render(path: Path, title: str, curve: LossCurve, rows: Sequence[GateRow], safety: str = "") -> Path:
    """Draw the loss curve (left), the gate table (right) and the safety line (below) into `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a Pod
    from matplotlib import pyplot as plt

    figure, (loss_axes, table_axes) = plt.subplots(
        1, 2, figsize=(12, 4.2), dpi=100, gridspec_kw={"width_ratios": [1, 1.25]}
    )
    try:
        figure.suptitle(title, fontsize=13)
        if curve.train:
            loss_axes.plot(*zip(*curve.train), color="#0072B2", label="training loss")
        if curve.validation:
            loss_axes.plot(*zip(*curve.validation), color=WARN, marker="o", label="validation loss")
        if curve.train or curve.validation:
            loss_axes.legend(loc="upper right")
        else:
            loss_axes.text(0.5, 0.5, "no loss was logged", ha="center", va="center", transform=loss_axes.transAxes)
        loss_axes.set_xlabel("step")
        loss_axes.set_ylabel("loss")
        loss_axes.set_title("Loss curve")
        loss_axes.grid(alpha=0.3)

        table_axes.axis("off")
        table_axes.set_title("Quality gates: base -> fine-tuned")
        if rows:
            table = table_axes.table(
                cellText=[[r.name, r.rule, _cell(r.base), _cell(r.value), r.verdict] for r in rows],
                colLabels=["gate", "rule", "base", "fine-tuned", "result"],
                loc="center",
                cellLoc="left",
                colWidths=[0.27, 0.37, 0.1, 0.14, 0.1],
            )
            table.auto_set_font_size(False)
            table.set_fontsize(9)
            table.scale(1, 1.4)
            for i, row in enumerate(rows, start=1):
                colour = PASS if row.passed else (FAIL if row.blocking else WARN)
                table[i, 4].set_facecolor(colour)
                table[i, 4].get_text().set_color("white")
        else:
            table_axes.text(0.5, 0.5, "no gates were set", ha="center", va="center", transform=table_axes.transAxes)
        if safety:
            import textwrap

            figure.text(0.01, 0.01, "\n".join(textwrap.wrap(safety, 190)), fontsize=8, va="bottom")
            figure.tight_layout(rect=(0, 0.08, 1, 1))
        else:
            figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return path


def write_card_image(
    output_dir: Path, progress_file: Path, title: str, gates: Iterable[Mapping[str, Any]],
    metrics: Mapping[str, float], base: Mapping[str, float],
    parent: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
) -> Path:
    return render(
        output_dir / CARD_IMAGE, title, read_loss_curve(progress_file), gate_rows(gates, metrics, base, parent),
        safety_line(metrics, base),
    )
