"""The evaluation cache: a base model's generations are stored once and reused by a later
evaluation with the same model, prompts and decoding, and by no other."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from finetune_trainer import evalcache
from finetune_trainer.config import parse_config
from finetune_trainer.evaluate import LATENCY_METRICS, evaluate_model
from finetune_trainer.testing import json_format_records
from finetune_trainer.train import train_model

from .conftest import make_config, write_jsonl


def _context(**changes) -> evalcache.Context:
    fields = dict(model_digest="m" * 64, max_new_tokens=16, batch_size=8, max_prompt_tokens=128, pad_token_id=0,
                  eos_token_id=1, dtype="torch.float32", device="cpu", versions={"torch": "2", "transformers": "4"})
    return evalcache.Context(**{**fields, **changes})


def test_every_input_of_generation_is_in_the_key():
    prompts = ["<user>a</user>", "<user>b</user>"]
    key = _context().key("task", prompts)
    assert key == _context().key("task", list(prompts))  # deterministic
    others = [
        _context(model_digest="n" * 64).key("task", prompts),
        _context(max_new_tokens=17).key("task", prompts),
        _context(batch_size=4).key("task", prompts),
        _context(max_prompt_tokens=256).key("task", prompts),
        _context(eos_token_id=[1, 2]).key("task", prompts),
        _context(dtype="torch.bfloat16").key("task", prompts),
        _context(device="cuda").key("task", prompts),
        _context(versions={"torch": "3", "transformers": "4"}).key("task", prompts),
        _context().key("safety", prompts),
        _context().key("task", prompts[::-1]),  # order decides the batches
        _context().key("task", ["<user>a</user>", "<user>b</user> "]),
        _context().key("task", prompts[:1]),
    ]
    assert key not in others and len(set(others)) == len(others)


def test_entries_round_trip_and_a_bad_entry_is_a_miss(tmp_path):
    entry = evalcache.Entry(["x", "y"], [3, 4], [0.5, 0.5], [0.25, 0.25], source="pvc://store/run-1")
    assert evalcache.store(tmp_path, "ab" + "0" * 62, entry)
    loaded = evalcache.load(tmp_path, "ab" + "0" * 62, 2)
    assert loaded is not None and (loaded.outputs, loaded.tokens, loaded.source) == (["x", "y"], [3, 4], "pvc://store/run-1")
    assert loaded.created  # stamped when stored
    assert evalcache.load(tmp_path, "ab" + "0" * 62, 3) is None  # another number of items
    assert evalcache.load(tmp_path, "cd" + "0" * 62, 2) is None  # never stored
    assert evalcache.load(None, "ab" + "0" * 62, 2) is None  # no cache
    path = tmp_path / "ab" / ("ab" + "0" * 62 + ".json")
    path.write_text('{"key": "ab', encoding="utf-8")  # a torn write
    assert evalcache.load(tmp_path, "ab" + "0" * 62, 2) is None
    path.write_text(json.dumps({"key": "other", "outputs": ["x", "y"], "tokens": [1, 1], "latencies": [1, 1], "shares": [1, 1]}))
    assert evalcache.load(tmp_path, "ab" + "0" * 62, 2) is None  # an entry under the wrong name
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_an_unwritable_cache_costs_nothing_but_the_entry(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert not evalcache.store(blocker, "ab" + "0" * 62, evalcache.Entry(["x"], [1], [1.0], [1.0]))


def test_model_digest_uses_hub_blob_names_and_file_contents(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "sha-a").write_bytes(b"weights")
    snapshot = tmp_path / "snapshots" / "commit"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blobs / "sha-a")
    (snapshot / "config.json").write_text('{"a": 1}')
    (snapshot / ".finetune-last-used").write_text("marker")
    first = evalcache.model_digest(snapshot)
    (snapshot / ".finetune-last-used").write_text("touched again")
    assert evalcache.model_digest(snapshot) == first  # hidden markers do not count
    (blobs / "sha-b").write_bytes(b"other weights")
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(blobs / "sha-b")
    assert evalcache.model_digest(snapshot) != first  # another blob: another model
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(blobs / "sha-a")
    assert evalcache.model_digest(snapshot) == first
    (snapshot / "config.json").write_text('{"a": 2}')
    assert evalcache.model_digest(snapshot) != first  # a plain file by content


@pytest.mark.slow
def test_a_second_evaluation_of_the_same_base_reuses_its_generations(tmp_path, tiny_model, monkeypatch):
    """Two jobs on the same base and test split: the second generates only its candidate, and
    its base figures are those of the first; other decoding settings miss."""
    cache = tmp_path / "evaluation-cache"
    monkeypatch.setenv(evalcache.CACHE_ENV, str(cache))
    source = write_jsonl(tmp_path / "data" / "tickets.jsonl", json_format_records(48))
    evaluation = {"max_new_tokens": 12, "batch_size": 16, "bootstrap_samples": 50, "suites": {"pii": False, "bias": False}}
    common = dict(
        adaptation={"type": "lora", "rank": 8, "alpha": 16, "dropout": 0.0},
        hyperparameters={"learning_rate": 1e-2, "max_steps": 6, "batch_size": 8},
        early_stopping={"enabled": False},
        evaluation=evaluation,
    )

    def run(name: str, **changes):
        raw = make_config(tmp_path / name, tiny_model, source, **{**common, **changes})
        config = parse_config(raw)
        train_model(config)
        summary = evaluate_model(config)
        results = json.loads(Path(summary["results"]).read_text())
        progress = [json.loads(line) for line in config.progress_path.read_text().splitlines()]
        return summary, results, [p for p in progress if p.get("stage") == "evaluate"]

    first, first_results, first_progress = run("v1")
    assert "base_reused" not in first
    assert first_results["base_cache"] == {"enabled": True, "reused": {}, "generated": ["general", "safety", "task"]}
    entries = sorted(p for p in cache.rglob("*.json"))
    assert len(entries) == 3

    # Another run (other weights: a different learning rate) on the same base and data.
    second, second_results, second_progress = run("v2", hyperparameters={"learning_rate": 5e-3})
    assert second["base_reused"] == ["general", "safety", "task"]
    assert second["base"] == first["base"]  # the base's figures, from its cached answers
    reused = second_results["base_cache"]["reused"]
    assert set(reused) == {"general", "safety", "task"} and second_results["base_cache"]["generated"] == []
    assert reused["task"]["source"] == str(tmp_path / "v1" / "out") and reused["task"]["items"] == first_results["suites"]["task"]["items"]
    assert {p["model"] for p in second_progress} == {"candidate"}  # the base was not generated
    assert second_progress[-1]["prompts_done"] == second_progress[-1]["prompts_total"] == sum(
        first_results["suites"][s]["items"] for s in ("task", "safety", "general"))
    assert all(p["base_reused"] == ["general", "safety", "task"] for p in second_progress)
    assert [i["base"]["output"] for i in second_results["items"]["task"]] == [i["base"]["output"] for i in first_results["items"]["task"]]
    assert sorted(p for p in cache.rglob("*.json")) == entries  # nothing new stored

    # Other decoding settings, or the cache turned off for the job: generated again.
    third, third_results, _ = run("v3", evaluation={**evaluation, "max_new_tokens": 10})
    assert "base_reused" not in third and third_results["base_cache"]["generated"] == ["general", "safety", "task"]
    fourth, fourth_results, fourth_progress = run("v4", evaluation={**evaluation, "reuse_base": False})
    assert "base_reused" not in fourth and fourth_results["base_cache"]["enabled"] is False
    assert {p["model"] for p in fourth_progress} == {"base", "candidate"}
    quality = lambda metrics: {k: v for k, v in metrics.items() if k not in LATENCY_METRICS}  # noqa: E731
    assert quality(fourth["base"]) == quality(first["base"])  # what the cache gave is what generating gives
    assert os.environ[evalcache.CACHE_ENV] == str(cache)
