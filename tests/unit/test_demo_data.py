"""The demo's earnings dataset: well-formed chat records whose answers are the JSON we teach.

The file is generated (examples/data/make_earnings.py); the generator must reproduce the
committed file byte for byte, so a change to one without the other is caught here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data" / "earnings.jsonl"
GENERATOR = ROOT / "examples" / "data" / "make_earnings.py"
KEYS = {"revenue", "growth", "net_income"}


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_earnings", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]


def test_every_line_is_a_chat_record():
    lines = DATA.read_text(encoding="utf-8").splitlines()
    assert 150 <= len(lines) <= 300
    for number, line in enumerate(lines, 1):
        record = json.loads(line)
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["system", "user", "assistant"], f"line {number}: roles {roles}"
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in record["messages"]), f"line {number}"


def test_answers_are_json_with_exactly_the_three_numeric_keys():
    for number, record in enumerate(_records(), 1):
        answer = json.loads(record["messages"][-1]["content"])
        assert set(answer) == KEYS, f"line {number}: keys {sorted(answer)}"
        for key in KEYS:
            value = answer[key]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), f"line {number}: {key}={value!r}"
            assert math.isfinite(value), f"line {number}: {key}={value!r}"


def test_data_is_varied():
    records = _records()
    answers = [json.loads(r["messages"][-1]["content"]) for r in records]
    prompts = [r["messages"][1]["content"] for r in records]
    assert len(set(prompts)) == len(prompts), "duplicate prompts"
    assert any(a["growth"] > 0 for a in answers)
    assert any(a["growth"] < 0 for a in answers)
    assert any(a["growth"] == 0 for a in answers)
    assert any(a["net_income"] < 0 for a in answers), "no net loss"
    assert any("billion" in p for p in prompts) and any("million" in p for p in prompts)
    assert any(a["revenue"] >= 1e9 for a in answers) and any(a["revenue"] < 1e9 for a in answers)


def test_generator_reproduces_the_committed_file(tmp_path):
    out = tmp_path / "earnings.jsonl"
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], check=True)
    assert out.read_bytes() == DATA.read_bytes(), "rerun: python examples/data/make_earnings.py"


def test_heldout_prompts_are_not_in_the_training_file():
    generator = _load_generator()
    heldout = generator.heldout_records(3)
    assert len(heldout) == 3
    training = {r["messages"][1]["content"] for r in _records()}
    for record in heldout:
        assert record["messages"][1]["content"] not in training
        assert set(json.loads(record["messages"][-1]["content"])) == KEYS


@pytest.mark.parametrize(
    "millions, style, expected",
    [
        (4200, "long", "$4.2 billion"),
        (12000, "short", "$12.0B"),
        (4200, "millions", "$4,200 million"),
        (780, "short", "$780M"),
        (1310, "usd", "USD 1.31 billion"),
    ],
)
def test_amounts_are_written_as_reports_write_them(millions, style, expected):
    assert _load_generator().money_text(millions, style) == expected


def test_demo_manifest_renders_to_a_valid_finetunejob(tmp_path):
    import yaml

    from devcluster import demo
    from finetune_operator.api.finetunejob import FineTuneJobSpec
    from finetune_operator.logic import finetunejob

    manifest = yaml.safe_load(demo.render_manifest(tmp_path / "model", DATA, tmp_path / "out"))
    assert manifest["spec"]["baseModel"]["uri"] == str(tmp_path / "model")
    assert manifest["spec"]["dataset"]["uri"] == str(DATA)
    assert manifest["spec"]["output"]["uri"] == str(tmp_path / "out")
    assert manifest["spec"]["resources"]["gpusPerNode"] == 0
    assert isinstance(finetunejob.parse_spec(manifest["spec"]), FineTuneJobSpec)


@pytest.mark.parametrize(
    "answer, has_keys, correct",
    [
        ('{"revenue": 4200000000.0, "growth": 0.12, "net_income": 610000000.0}', True, 3),
        ('{"revenue": 420000000.0, "growth": 0.12, "net_income": 610000000.0}', True, 2),
        ('{"revenue": 4200000000.0, "growth": 0.12}', False, 2),
        ('{"revenue": "4.2B", "growth": 0.12, "net_income": 610000000.0}', False, 2),
        ("Acme's revenue was $4.2 billion.", False, 0),
    ],
)
def test_demo_judges_answers(answer, has_keys, correct):
    from devcluster import demo

    verdict = demo.judge(answer, {"revenue": 4200000000.0, "growth": 0.12, "net_income": 610000000.0})
    assert (verdict.has_keys, verdict.correct_fields) == (has_keys, correct)


def test_demo_loss_curve_keeps_eval_loss_where_it_was_measured(tmp_path):
    from devcluster import demo

    lines = [
        {"event": "started"},
        {"event": "progress", "step": 1, "loss": 0.9, "eval_loss": None},
        {"event": "progress", "step": 2, "loss": 0.5, "eval_loss": None},
        {"event": "progress", "step": 2, "loss": 0.5, "eval_loss": 0.4},
        {"event": "progress", "step": 3, "loss": 0.3, "eval_loss": 0.4},
    ]
    progress = tmp_path / "progress.jsonl"
    progress.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert demo.read_loss_curve(progress) == [
        {"step": 1, "loss": 0.9},
        {"step": 2, "loss": 0.5, "eval_loss": 0.4},
        {"step": 3, "loss": 0.3},
    ]
