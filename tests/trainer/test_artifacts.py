"""Digests, atomic output and the size-capped termination message."""

from __future__ import annotations

import json

import pytest

from finetune_trainer.artifacts import atomic_directory, compact_json, digest_files, write_termination_message


def test_digest_depends_on_names_and_contents_not_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, order in ((a, ["x", "y/z"]), (b, ["y/z", "x"])):
        for name in order:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(f"content of {name}")
    assert digest_files(a) == digest_files(b)
    (b / "x").write_text("changed")
    assert digest_files(a) != digest_files(b)


def test_atomic_directory_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out" / "data"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as staging:
            (staging / "half.jsonl").write_text("x")
            raise RuntimeError("boom")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    with atomic_directory(target) as staging:
        (staging / "new").write_text("1")
    with atomic_directory(target) as staging:
        (staging / "newer").write_text("2")
    assert [p.name for p in target.iterdir()] == ["newer"]


def test_compact_json_drops_optional_groups_to_fit():
    summary = {
        "status": "Succeeded",
        "artifact": {"uri": "pvc://runs/x/adapter", "sha256": "sha256:" + "0" * 64},
        "dataset": {"dropped": {f"reason{i}": i for i in range(400)}},
        "metrics": {"eval_loss": float("nan"), "train_loss": 1.5},
        "_optional": ["dataset"],
    }
    text = compact_json(summary)
    assert len(text.encode()) <= 4096
    decoded = json.loads(text)
    assert decoded["truncated"] is True and "dataset" not in decoded
    assert decoded["artifact"]["sha256"].startswith("sha256:") and decoded["metrics"]["eval_loss"] is None


def test_default_termination_path_is_only_written_inside_a_pod(tmp_path):
    target = tmp_path / "msg"
    write_termination_message(target, {"status": "Failed"})
    assert json.loads(target.read_text()) == {"status": "Failed"}
