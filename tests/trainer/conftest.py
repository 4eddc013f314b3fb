"""Fixtures for the trainer tests: the tiny offline model, config files and dataset writers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# Nothing in these tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from finetune_trainer.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def make_config(tmp_path: Path, model_dir: Path, source: Path, **sections: Any) -> dict:
    """A trainer config dict for tests; keyword arguments override sections (deep-merged)."""
    base = {
        "model": {"uri": str(model_dir), "cache_dir": str(tmp_path / "model-cache")},
        "dataset": {"source": str(source), "dedup": {"near": False}},
        "hyperparameters": {"batch_size": 4, "learning_rate": 1e-3, "epochs": 1, "max_seq_length": 128},
        "checkpointing": {"every_n_steps": 10},
        "output": {"dir": str(tmp_path / "out")},
        "termination_message_path": str(tmp_path / "termination-log"),
    }
    return deep_merge(base, sections)


def save_config(tmp_path: Path, config: dict, name: str = "config.yaml") -> Path:
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def config_factory(tmp_path, tiny_model):
    def build(records_or_source, **sections):
        if isinstance(records_or_source, (str, Path)):
            source = Path(records_or_source)
        else:
            source = write_jsonl(tmp_path / "data" / "train.jsonl", records_or_source)
        return make_config(tmp_path, tiny_model, source, **sections)

    return build
