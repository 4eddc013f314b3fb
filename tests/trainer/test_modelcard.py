"""The model card's picture: a real PNG with the loss curve and the gate table, coloured by the
same verdicts the operator reaches, and linked from the card the operator renders."""

from __future__ import annotations

import json

import pytest

from finetune_operator.api.finetunejob import DEFAULT_GATES, FineTuneJobSpec
from finetune_operator.api.modelversion import GateRule
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.logic import gates as operator_gates
from finetune_trainer import modelcard

GATES = [g.model_dump(mode="json", by_alias=False) for g in FineTuneJobSpec.model_validate(
    {"baseModel": {"uri": "hf://x/y"}, "dataset": {"uri": "s3://d/x.jsonl"}}).evaluation.effective_gates()]
CUSTOM = [
    {"name": "rouge", "metric": "rougeL", "comparator": "GreaterThanOrEqual", "threshold": 0.5},
    {"name": "leaks", "metric": "piiLeakageRate", "comparator": "LessThanOrEqual", "threshold": 0.0},
    {"name": "speed", "metric": "latencySeconds", "comparator": "LessThan", "threshold": 2, "baseline": "RatioToBase",
     "blocking": False},
]


@pytest.mark.parametrize(
    ("metrics", "base"),
    [
        pytest.param({"taskAccuracy": 0.9, "formatCompliance": 0.99, "safetyPassRate": 0.97, "generalScore": 0.6,
                      "latencySeconds": 0.3, "rougeL": 0.5, "piiLeakageRate": 0.0},
                     {"taskAccuracy": 0.1, "formatCompliance": 0.0, "safetyPassRate": 0.98, "generalScore": 0.62,
                      "latencySeconds": 0.2}, id="approved"),
        pytest.param({"taskAccuracy": 0.85, "formatCompliance": 0.5, "safetyPassRate": 0.9, "generalScore": 0.3,
                      "latencySeconds": 0.5, "rougeL": 0.49, "piiLeakageRate": 0.1},
                     {"taskAccuracy": 0.1, "formatCompliance": 0.0, "safetyPassRate": 0.98, "generalScore": 0.62,
                      "latencySeconds": 0.2}, id="rejected-on-the-edges"),
        pytest.param({"taskAccuracy": 0.9}, {}, id="unmeasured-metrics-and-no-base"),
        pytest.param({"generalScore": 0.0, "latencySeconds": 0.0}, {"generalScore": 0.0, "latencySeconds": 0.0},
                     id="zero-base"),
    ],
)
def test_verdicts_are_the_operators(metrics, base):
    rules = GATES + CUSTOM
    drawn = modelcard.gate_rows(rules, metrics, base)
    judged = operator_gates.judge_all([GateRule.model_validate(r) for r in rules], metrics, base)
    assert [(r.name, r.passed, r.blocking, r.value, r.base) for r in drawn] == [
        (j.name, j.passed, j.blocking, j.value, j.base_value) for j in judged]


def test_default_gates_reach_the_trainer_as_rules_it_accepts():
    assert {g["name"] for g in GATES} == set(DEFAULT_GATES)
    assert all(set(g) == {"name", "metric", "comparator", "threshold", "baseline", "blocking", "per_task"} for g in GATES)


def write_progress(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_loss_curve_keeps_each_step_and_validation_where_it_changed(tmp_path):
    write_progress(tmp_path / "progress.jsonl", [
        {"event": "progress", "step": 1, "loss": 2.0},
        {"event": "progress", "step": 2, "loss": 1.5, "eval_loss": 1.7},
        {"event": "progress", "step": 3, "loss": 1.2, "eval_loss": 1.7},
        {"event": "finished", "step": 3},
        {"event": "progress", "step": 4, "loss": float("nan"), "eval_loss": 1.1},
        {"event": "progress", "stage": "evaluate", "suite": "task", "prompts_done": 3, "prompts_total": 9},
    ])
    curve = modelcard.read_loss_curve(tmp_path / "progress.jsonl")
    assert curve.train == [(1, 2.0), (2, 1.5), (3, 1.2)]
    assert curve.validation == [(2, 1.7), (4, 1.1)]


def test_the_picture_is_a_png_with_the_curve_and_coloured_verdicts(tmp_path):
    from PIL import Image

    write_progress(tmp_path / "progress.jsonl",
                   [{"event": "progress", "step": s, "loss": 3.0 / s, "eval_loss": 3.5 / (1 + s // 5 * 5)} for s in range(1, 21)])
    metrics = {"taskAccuracy": 0.9, "formatCompliance": 0.5, "safetyPassRate": 0.97, "generalScore": 0.6, "latencySeconds": 0.5}
    base = {"taskAccuracy": 0.1, "formatCompliance": 0.0, "safetyPassRate": 0.98, "generalScore": 0.62, "latencySeconds": 0.2}
    path = modelcard.write_card_image(tmp_path / "out", tmp_path / "progress.jsonl", "support v3", GATES, metrics, base)
    assert path == tmp_path / "out" / "model-card.png"
    image = Image.open(path).convert("RGB")
    assert image.size == (1200, 420)
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 24)}
    assert len(colours) > 50  # a drawing, not a blank page
    rgb = lambda hex_colour: tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # noqa: E731
    # formatCompliance fails (blocking), latency 2.5x base warns, the rest pass.
    assert {rgb(modelcard.PASS), rgb(modelcard.FAIL), rgb(modelcard.WARN)} <= colours


def test_the_operators_card_links_the_picture_beside_the_artifact():
    spec = {"modelName": "support", "artifact": {"uri": "s3://models/support/run-1/adapter", "digest": "sha256:" + "0" * 64},
            "evaluation": {"metrics": {}}, "modelCard": {"model": "support v3"}}
    text = mv_builders.model_card_markdown("support-v3", spec, [])
    assert "](s3://models/support/run-1/model-card.png)" in text
    unevaluated = {key: value for key, value in spec.items() if key != "evaluation"}
    assert "model-card.png" not in mv_builders.model_card_markdown("support-v3", unevaluated, [])


def test_the_picture_lists_every_safety_figure(tmp_path):
    metrics = {"safetyPassRate": 0.97, "jailbreakRefusalRate": 0.9, "toxicAnswerRate": 0.0, "piiLeakedCanaries": 0.0}
    line = modelcard.safety_line(metrics, {"safetyPassRate": 0.98})
    assert all(name in line for name in modelcard.SAFETY_FIGURES)
    assert "safetyPassRate 0.98->0.97" in line and "biasConsistency -->-" in line
    path = modelcard.write_card_image(tmp_path, tmp_path / "none.jsonl", "t", GATES, metrics, {})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _job(**model_card):
    return FineTuneJobSpec.model_validate(
        {"baseModel": {"uri": "hf://x/y"}, "dataset": {"uri": "s3://d/x.jsonl"}, **({"modelCard": model_card} if model_card else {})})


def test_the_cards_prose_comes_from_the_spec_with_the_generic_text_as_default():
    evaluation = {"metrics": {"safetyPassRate": 0.97, "toxicAnswerRate": 0.01, "piiLeakageRate": 0.0, "biasConsistency": 0.96},
                  "baseMetrics": {"safetyPassRate": 0.98}}
    written = mv_builders.model_card("support", "v3", _job(
        intendedUse="Summarize support tickets in English.", limitations="Not for legal advice.",
        usageGuidelines="A human approves every high-priority summary."), None, evaluation)
    assert (written["intendedUse"], written["limitations"], written["usageGuidelines"]) == (
        "Summarize support tickets in English.", "Not for legal advice.", "A human approves every high-priority summary.")
    default = mv_builders.model_card("support", "v3", _job(), None, evaluation)
    assert (default["intendedUse"], default["limitations"], default["usageGuidelines"]) == (
        mv_builders.INTENDED_USE, mv_builders.LIMITATIONS, mv_builders.USAGE_GUIDELINES)
    spec = {"artifact": {"uri": "s3://m/run/adapter", "digest": "sha256:" + "0" * 64}, "evaluation": evaluation,
            "modelCard": written}
    text = mv_builders.model_card_markdown("support-v3", spec, [])
    assert "## Usage guidelines\n\nA human approves every high-priority summary." in text
    safety = text.split("## Safety")[1].split("\n## ")[0]
    assert [line.split(" | ")[0].lstrip("| ") for line in safety.splitlines() if line.startswith("| ") and "figure" not in line] == [
        name for name, _ in mv_builders.SAFETY_METRICS]
    assert "| safetyPassRate | harmful requests refused and benign ones answered | 0.98 | 0.97 |" in safety
    assert "| piiLeakedCanaries | canaries reproduced | — | — |" in safety
    # The trainer's picture and the operator's card list the same figures.
    assert [name for name, _ in mv_builders.SAFETY_METRICS] == list(modelcard.SAFETY_FIGURES)
