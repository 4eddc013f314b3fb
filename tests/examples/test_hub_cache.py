"""The dev cluster's offline model hub: a model directory laid out as a Hugging Face hub cache
entry resolves as hf://<org>/<name> through the trainer with HF_HUB_OFFLINE=1; an unknown repo
keeps the clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster import hubcache
from finetune_trainer.testing import make_tiny_model

# As in a trainer Pod: huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE when it starts.
RESOLVE = """
import json, sys
from finetune_trainer.config import ModelSpec
from finetune_trainer.exitcodes import ModelError
from finetune_trainer.models import resolve_model_spec
try:
    print(json.dumps({"path": str(resolve_model_spec(ModelSpec(uri=sys.argv[1], cache_dir=sys.argv[2]), "/mnt/pvc"))}))
except ModelError as e:
    print(json.dumps({"error": str(e)}))
"""


def resolve(uri: str, hub: Path, tmp_path: Path) -> dict:
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", RESOLVE, uri, str(tmp_path / "cache")], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    model = make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    hub = tmp_path_factory.mktemp("hub")
    snapshot = hubcache.lay_out(model, "finetune-test/tiny-llama", hub)
    assert hubcache.lay_out(model, "finetune-test/tiny-llama", hub) == snapshot  # idempotent
    return model, hub, snapshot


def test_laid_out_model_resolves_as_hf_uri_offline(hub, tmp_path):
    model, hub_dir, snapshot = hub
    resolved = Path(resolve("hf://finetune-test/tiny-llama", hub_dir, tmp_path)["path"])
    assert resolved == snapshot
    assert sorted(p.name for p in resolved.iterdir()) == sorted(p.name for p in model.iterdir())
    assert (resolved / "config.json").read_bytes() == (model / "config.json").read_bytes()
    # Relative links into blobs/: the entry works wherever the hub directory is mounted.
    assert all(not p.readlink().is_absolute() for p in resolved.iterdir())


def test_unknown_repo_keeps_the_clear_message(hub, tmp_path):
    error = resolve("hf://finetune-test/absent", hub[1], tmp_path)["error"]
    assert "hf://finetune-test/absent: not in the local Hugging Face cache and downloads are disabled" in error
