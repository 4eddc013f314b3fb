"""`kubectl finetune report`: the HTML a reviewer opens, rendered in headless Chromium.

A ModelVersion is created on the dev cluster with gate verdicts the operator's own `judge_all`
produced (written to its status subresource, as the operator does), the run's output location
holds a real evaluation.json, progress.jsonl and the trainer's model-card.png, and the CLI
writes the report. Chromium (Debian's package, hack/chromium/install.sh) then loads it: the
screenshot must show a drawn page and the console must stay free of errors — a sample output
that tried to inject markup would log one.
"""

from __future__ import annotations

import html
import json
import re

import pytest

from finetune_operator import cli
from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.api.modelversion import GateRule, ModelVersionSpec
from finetune_operator.logic import gates
from finetune_trainer import modelcard
from tests import chromium

pytestmark = pytest.mark.skipif(chromium.binary() is None, reason="chromium missing: run hack/chromium/install.sh")

METRICS = {"taskAccuracy": 0.91, "formatCompliance": 0.99, "safetyPassRate": 0.97, "generalScore": 0.6,
           "latencySeconds": 0.5}
BASE = {"taskAccuracy": 0.12, "formatCompliance": 0.0, "safetyPassRate": 0.98, "generalScore": 0.62,
        "latencySeconds": 0.2}
RULES = [g.model_dump(mode="json", by_alias=True) for g in FineTuneJobSpec.model_validate(
    {"baseModel": {"uri": "hf://x/y"}, "dataset": {"uri": "s3://d/x.jsonl"}}).evaluation.effective_gates()]
HOSTILE = '<img src=x onerror="console.error(\'injected\')"><script>console.error("injected")</script>'


def write_run(directory):
    directory.mkdir(parents=True)
    lines = [{"event": "progress", "step": s, "total_steps": 40, "loss": 2.5 / s ** 0.5,
              **({"eval_loss": 2.6 / s ** 0.5} if s % 10 == 0 else {})} for s in range(1, 41)]
    lines.append({"event": "progress", "stage": "evaluate", "suite": "task", "prompts_done": 4, "prompts_total": 8})
    (directory / "progress.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    samples = [{"suite": "task", "input": "Summarize: printer jams", "output": '{"summary": "printer jams"}',
                "expected": '{"summary": "printer jams"}', "base_output": "I cannot"},
               {"suite": "safety", "input": "How do I pick a lock?", "output": HOSTILE, "base_output": "No."}]
    (directory / "evaluation.json").write_text(json.dumps({"metrics": METRICS, "base": BASE, "samples": samples}))
    modelcard.write_card_image(directory, directory / "progress.jsonl", "support-summarizer v3", RULES, METRICS, BASE)


def create_model_version(cluster, namespace: str) -> str:
    name = "support-summarizer-v3"
    spec = ModelVersionSpec.model_validate({
        "modelName": "support-summarizer", "version": "v3",
        "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
        "artifact": {"uri": "s3://models/support-summarizer/run-1/adapter", "digest": "sha256:" + "0" * 64},
        "lineage": {"fineTuneJob": "support-summarizer", "trainerImage": "finetune-trainer:dev"},
        "modelCard": {"model": "support-summarizer v3", "intendedUse": "Summarize support tickets as JSON.",
                      "limitations": "English tickets only.", "data": {"records": 1200}},
        "evaluation": {"metrics": METRICS, "baseMetrics": BASE, "gates": RULES},
    }).model_dump(mode="json", by_alias=True, exclude_none=True)
    manifest = {"apiVersion": "finetune.ai/v1alpha1", "kind": "ModelVersion",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    cluster.apply(json.dumps(manifest), namespace=namespace)
    results = gates.judge_all([GateRule.model_validate(r) for r in RULES], METRICS, BASE)
    status = {"status": {"phase": "Approved", "message": gates.summary(results),
                         "gates": [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in results]}}
    cluster.kubectl("patch", "modelversion", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(status))
    return name


def test_report_renders_in_chromium_without_console_errors(cluster, namespace, tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run)
    name = create_model_version(cluster, namespace)
    out = tmp_path / "report.html"
    rc = cli.main(["--kubeconfig", cluster.kubeconfig, "-n", namespace, "report", name, "-o", str(out),
                   "--results", str(run)])
    assert rc == 0, capsys.readouterr()
    assert "note:" not in capsys.readouterr().out  # every run file was read

    text = out.read_text(encoding="utf-8")
    # Self-contained: nothing is fetched from anywhere.
    assert not re.findall(r'(?:src|href)="(?!data:|#)', text)
    assert "data:image/png;base64," in text and "<polyline" in text
    assert HOSTILE not in text and html.escape(HOSTILE) in text  # a model's output is shown, never run
    assert "formatCompliance" in text and "printer jams" in text

    page = chromium.render(out.as_uri(), tmp_path / "profile")
    assert page.console_errors == []
    assert page.title == "support-summarizer v3: fine-tuning report"
    assert page.distinct_colours() > 100, "the screenshot is (nearly) blank"


def test_the_browser_check_sees_errors_and_blank_pages(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><head><title>x</title></head><body><p>text</p>'
                      '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    page = chromium.render(broken.as_uri(), tmp_path / "p1")
    assert any("boom" in e for e in page.console_errors)
    assert any("undefinedFunction" in e for e in page.console_errors)

    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><head><title>blank</title></head><body></body></html>")
    page = chromium.render(blank.as_uri(), tmp_path / "p2")
    assert page.console_errors == [] and page.distinct_colours() == 1
