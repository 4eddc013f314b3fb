"""Trainer Pods and the operator's model cache, offline mode and node inputs.

A configured Hugging Face hub cache is mounted read-only at one path with HF_HUB_CACHE naming it;
offline mode is the operator's setting, never baked in; a local base model or dataset under an
allowed node directory is mounted read-only where it is, any other path is left to the image.
"""

from __future__ import annotations

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders.finetunejob import MODEL_CACHE_DIR, Owner, Settings

OWNER = Owner(name="ft", namespace="team", uid="uid-1")


def pod(settings: Settings, base: str = "hf://HuggingFaceTB/SmolLM2-135M-Instruct", data: str = "s3://data/t.jsonl"):
    spec = FineTuneJobSpec.model_validate({"baseModel": {"uri": base}, "dataset": {"uri": data}})
    template = builders.train_job(OWNER, spec, settings)["spec"]["template"]["spec"]
    container = template["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {v["name"]: v for v in template["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    return env, volumes, mounts


@pytest.mark.parametrize(
    ("cache", "volume"),
    [
        ("pvc://hf-hub", {"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf-hub", "readOnly": True}}),
        ("/srv/hf-hub", {"name": "model-cache", "hostPath": {"path": "/srv/hf-hub", "type": "Directory"}}),
    ],
    ids=["claim", "node-path"],
)
def test_model_cache_is_mounted_read_only_with_hf_hub_cache(cache, volume):
    env, volumes, mounts = pod(Settings(model_cache=cache))
    assert volumes["model-cache"] == volume
    assert mounts["model-cache"] == {"name": "model-cache", "mountPath": MODEL_CACHE_DIR, "readOnly": True}
    assert env["HF_HUB_CACHE"] == MODEL_CACHE_DIR


def test_no_model_cache_and_online_by_default():
    env, volumes, _ = pod(Settings())
    assert "model-cache" not in volumes
    assert not {"HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"} & env.keys()


def test_offline_is_the_operators_setting():
    env, _, _ = pod(Settings(hub_offline=True))
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


@pytest.mark.parametrize(
    ("base", "data", "mounted"),
    [
        ("/srv/in/model", "/srv/in/data.jsonl", ["/srv/in/data.jsonl", "/srv/in/model"]),
        ("/opt/model", "/srv/in/data.jsonl", ["/srv/in/data.jsonl"]),
        ("/opt/model", "/opt/data.jsonl", []),
        ("hf://org/name", "pvc://data/t.jsonl", []),
    ],
    ids=["both-allowed", "model-in-image", "none-allowed", "not-node-paths"],
)
def test_local_inputs_under_allowed_node_directories_are_mounted_read_only(base, data, mounted):
    _, volumes, mounts = pod(Settings(allowed_host_paths=("/srv/in",)), base=base, data=data)
    inputs = sorted(m["mountPath"] for name, m in mounts.items() if name.startswith("input-"))
    assert inputs == mounted
    for name, mount in mounts.items():
        if name.startswith("input-"):
            assert mount["readOnly"] is True and volumes[name]["hostPath"]["path"] == mount["mountPath"]
