"""Continual learning on the tiny model: v2 starts from v1's adapter, trained further (continue)
or merged with a new adapter on top (stack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_trainer.config import ConfigFileError, parse_config
from finetune_trainer.exitcodes import DataError, ModelError
from finetune_trainer.testing import json_format_records
from finetune_trainer.train import train_model

from .conftest import make_config, write_jsonl

pytestmark = pytest.mark.slow
LORA = {"type": "lora", "rank": 4, "alpha": 8, "dropout": 0.0}
SHORT = {"learning_rate": 1e-2, "max_steps": 4, "batch_size": 8}


def _tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    (weights,) = directory.glob("*.safetensors")
    return load_file(str(weights))


@pytest.fixture(scope="module")
def v1(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("v1")
    data = write_jsonl(root / "data.jsonl", json_format_records(40))
    config = parse_config(make_config(root, tiny_model, data, adaptation=LORA, hyperparameters=SHORT, early_stopping={"enabled": False}))
    summary = train_model(config)
    return Path(summary["artifact"]["uri"]), data


def test_continue_trains_the_earlier_adapter_further(tmp_path, tiny_model, v1):
    adapter, data = v1
    raw = make_config(tmp_path, tiny_model, data, adaptation={**LORA, "rank": 16},  # the loaded adapter's rank wins
                      hyperparameters=SHORT, early_stopping={"enabled": False},
                      model={"adapter": str(adapter), "adapter_of": "tickets-v1"})
    summary = train_model(parse_config(raw))
    assert summary["artifact"]["kind"] == "lora-adapter"
    v2 = Path(summary["artifact"]["uri"])
    assert json.loads((v2 / "adapter_config.json").read_text())["r"] == 4
    before, after = _tensors(adapter), _tensors(v2)
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before)  # trained further, not copied
    results = json.loads(Path(summary["results"]).read_text())
    assert results["continued_from"] == {"adapter": str(adapter), "version": "tickets-v1", "mode": "continue"}


def test_stack_merges_the_earlier_adapter_and_trains_a_new_one_into_full_weights(tmp_path, tiny_model, v1):
    adapter, data = v1
    raw = make_config(tmp_path, tiny_model, data, adaptation=LORA, hyperparameters=SHORT, early_stopping={"enabled": False},
                      model={"adapter": str(adapter), "adapter_mode": "stack"})
    summary = train_model(parse_config(raw))
    assert summary["artifact"]["kind"] == "model"
    model_dir = Path(summary["artifact"]["uri"])
    assert (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    changed = [n for n, p in merged.named_parameters() if not p.equal(dict(base.named_parameters())[n])]
    assert changed  # both adapters are in the weights


def test_a_missing_adapter_is_a_model_error_naming_the_version(tmp_path, tiny_model, v1):
    _, data = v1
    raw = make_config(tmp_path, tiny_model, data, adaptation=LORA, hyperparameters=SHORT,
                      model={"adapter": str(tmp_path / "gone"), "adapter_of": "tickets-v1"})
    with pytest.raises(ModelError, match="no adapter_config.json .* tickets-v1 it came from may have been deleted"):
        train_model(parse_config(raw))


def test_full_fine_tuning_cannot_continue_an_adapter(tmp_path, tiny_model):
    raw = make_config(tmp_path, tiny_model, tmp_path / "d.jsonl", adaptation={"type": "full"}, model={"adapter": "/a"})
    with pytest.raises(ConfigFileError, match="model.adapter: continuing from an adapter needs adaptation.type lora or qlora"):
        parse_config(raw)


@pytest.mark.parametrize("mode", ["continue", "stack"])
def test_the_continued_version_is_scored_beside_its_parent_on_the_parents_test_split(tmp_path, tiny_model, v1, mode, monkeypatch):
    from finetune_trainer import evalcache

    monkeypatch.setenv(evalcache.CACHE_ENV, str(tmp_path / "evaluation-cache"))
    from finetune_trainer.evaluate import evaluate_model

    adapter, data = v1
    parent_test = adapter.parent / "data" / "test.jsonl"
    assert parent_test.is_file()
    raw = make_config(tmp_path, tiny_model, data, adaptation=LORA, hyperparameters=SHORT, early_stopping={"enabled": False},
                      model={"adapter": str(adapter), "adapter_of": "tickets-v1", "adapter_mode": mode},
                      evaluation={"max_new_tokens": 8, "bootstrap_samples": 0, "suites": {"safety": False, "pii": False, "bias": False, "general": False},
                                  "parent_test_split": str(parent_test),
                                  "gates": [{"name": "noForgetting", "metric": "taskAccuracy", "comparator": "GreaterThanOrEqual",
                                             "threshold": 0.95, "baseline": "RatioToParent"}]})
    config = parse_config(raw)
    train_model(config)
    summary = evaluate_model(config)
    assert set(summary["parent"]) >= {"taskAccuracy", "formatCompliance"} and set(summary["on_parent_split"]) == set(summary["parent"])
    results = json.loads(Path(summary["results"]).read_text())
    items = len(parent_test.read_text().splitlines())
    assert results["parent"]["version"] == "tickets-v1" and results["parent"]["items"] == items
    progress = [json.loads(line) for line in config.progress_path.read_text().splitlines()]
    evaluating = [p for p in progress if p.get("stage") == "evaluate"]
    assert {p["model"] for p in evaluating if p["suite"] == "parent"} == {"candidate", "parent"}
    assert evaluating[-1]["prompts_done"] == evaluating[-1]["prompts_total"]
    assert "parent" not in summary.get("base_reused", [])

    # Evaluated again (another job continuing the same version): the parent's answers are reused.
    again = evaluate_model(config)
    assert "parent" in again["base_reused"] and again["parent"] == summary["parent"]
    # Another test split of its own (one record fewer): the base is asked again, the parent is not.
    test_split = config.prepared_path / "test.jsonl"
    test_split.write_text("".join(test_split.read_text().splitlines(keepends=True)[:-1]))
    third = evaluate_model(config)
    assert third["base_reused"] == ["parent"] and third["base"]["taskAccuracy"] is not None


def test_a_missing_parent_test_split_is_a_data_error(tmp_path, tiny_model, v1):
    from finetune_trainer.evaluate import evaluate_model

    adapter, data = v1
    raw = make_config(tmp_path, tiny_model, data, adaptation=LORA, hyperparameters=SHORT, early_stopping={"enabled": False},
                      model={"adapter": str(adapter), "adapter_of": "tickets-v1"},
                      evaluation={"max_new_tokens": 4, "parent_test_split": str(tmp_path / "gone" / "test.jsonl")})
    config = parse_config(raw)
    train_model(config)
    with pytest.raises(DataError, match="parent_test_split .* tickets-v1 may have been deleted"):
        evaluate_model(config)
