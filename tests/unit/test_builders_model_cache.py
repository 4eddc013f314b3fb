"""Trainer Pods and the operator's model cache, offline mode and node inputs.

A configured Hugging Face hub cache is mounted at one path with HF_HUB_CACHE naming it (writable,
so jobs download into it; read-only when offline); offline mode is the operator's setting, never
baked in; the Hub endpoint and a base model's token reach only the Pods that load the base model;
a local base model or dataset under an allowed node directory is mounted read-only where it is,
any other path is left to the image.
"""

from __future__ import annotations

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders.finetunejob import MODEL_CACHE_DIR, Owner, Settings

OWNER = Owner(name="ft", namespace="team", uid="uid-1")


def pod(settings: Settings, base: str = "hf://HuggingFaceTB/SmolLM2-135M-Instruct", data: str = "s3://data/t.jsonl",
        base_extra: dict | None = None, build=builders.train_job, raw_env: bool = False):
    spec = FineTuneJobSpec.model_validate({"baseModel": {"uri": base, **(base_extra or {})}, "dataset": {"uri": data}})
    template = build(OWNER, spec, settings)["spec"]["template"]["spec"]
    container = template["containers"][0]
    env = {e["name"]: (e if raw_env else e.get("value")) for e in container["env"]}
    volumes = {v["name"]: v for v in template["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    return env, volumes, mounts


@pytest.mark.parametrize("offline", [False, True], ids=["online-writable", "offline-read-only"])
@pytest.mark.parametrize(
    ("cache", "volume"),
    [
        ("pvc://hf-hub", {"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf-hub", "readOnly": None}}),
        ("/srv/hf-hub", {"name": "model-cache", "hostPath": {"path": "/srv/hf-hub", "type": "Directory"}}),
    ],
    ids=["claim", "node-path"],
)
def test_model_cache_is_mounted_with_hf_hub_cache(cache, volume, offline):
    env, volumes, mounts = pod(Settings(model_cache=cache, hub_offline=offline))
    if "persistentVolumeClaim" in volume:
        volume = {**volume, "persistentVolumeClaim": {**volume["persistentVolumeClaim"], "readOnly": offline}}
    assert volumes["model-cache"] == volume
    assert mounts["model-cache"] == {"name": "model-cache", "mountPath": MODEL_CACHE_DIR, "readOnly": offline}
    assert env["HF_HUB_CACHE"] == MODEL_CACHE_DIR


def test_no_model_cache_and_online_by_default():
    env, volumes, _ = pod(Settings())
    assert "model-cache" not in volumes
    assert "HF_HUB_CACHE" not in env
    # An image that defaults to offline does not win over the operator's setting.
    assert env["HF_HUB_OFFLINE"] == "0" and env["TRANSFORMERS_OFFLINE"] == "0"
    env, _, _ = pod(Settings(), base="pvc://models/base")
    assert not {"HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"} & env.keys()


@pytest.mark.parametrize("base", ["hf://org/name", "pvc://models/base"])
def test_offline_is_the_operators_setting(base):
    env, _, _ = pod(Settings(hub_offline=True), base=base, raw_env=True)
    assert env["HF_HUB_OFFLINE"]["value"] == "1" and env["TRANSFORMERS_OFFLINE"]["value"] == "1"
    assert [e["name"] for e in env.values()].count("HF_HUB_OFFLINE") == 1


TOKEN = {"tokenSecretRef": {"name": "hub-token", "key": "hf"}}


@pytest.mark.parametrize("build", [builders.prepare_job, builders.train_job, builders.eval_job],
                         ids=["prepare", "train", "evaluate"])
def test_hub_endpoint_and_token_reach_the_pods_that_load_the_base_model(build):
    env, _, _ = pod(Settings(hub_endpoint="http://hub-mirror.internal:8080"), base_extra=TOKEN, build=build, raw_env=True)
    assert env["HF_ENDPOINT"]["value"] == "http://hub-mirror.internal:8080"
    # Referenced, never copied: the token's value is nowhere in the Pod spec.
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub-token", "key": "hf"}}}
    assert env["FINETUNE_HF_TOKEN_REF"]["value"] == "hub-token/hf"


def test_token_key_defaults_to_token_and_no_hub_env_without_a_setting_or_a_ref():
    env, _, _ = pod(Settings(), base_extra={"tokenSecretRef": {"name": "hub-token"}}, raw_env=True)
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hub-token", "key": "token"}
    assert "HF_ENDPOINT" not in env
    env, _, _ = pod(Settings())
    assert not {"HF_ENDPOINT", "HF_TOKEN", "FINETUNE_HF_TOKEN_REF"} & env.keys()


def test_non_hub_base_models_get_no_hub_env():
    env, _, _ = pod(Settings(hub_endpoint="http://hub-mirror.internal:8080"), base="pvc://models/base", base_extra=TOKEN)
    assert not {"HF_ENDPOINT", "HF_TOKEN", "FINETUNE_HF_TOKEN_REF"} & env.keys()


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


@pytest.mark.parametrize(
    ("settings", "base", "build", "bound"),
    [
        pytest.param(Settings(model_cache="pvc://hf-hub", model_cache_max_bytes=2**30), None, builders.train_job, "1073741824",
                     id="train-pod-of-an-hf-model-evicts-to-the-bound"),
        pytest.param(Settings(model_cache="pvc://hf-hub", model_cache_max_bytes=2**30), None, builders.prepare_job, "1073741824",
                     id="prepare-pod-too-it-downloads-the-tokenizer"),
        pytest.param(Settings(model_cache="pvc://hf-hub", model_cache_max_bytes=2**30, hub_offline=True), None,
                     builders.train_job, None, id="offline-the-cache-is-read-only-no-eviction"),
        pytest.param(Settings(model_cache_max_bytes=2**30), None, builders.train_job, None, id="no-model-cache-no-bound"),
        pytest.param(Settings(model_cache="pvc://hf-hub"), None, builders.train_job, None, id="no-bound-unbounded"),
        pytest.param(Settings(model_cache="pvc://hf-hub", model_cache_max_bytes=2**30), "pvc://models/base",
                     builders.train_job, None, id="a-claim-model-never-downloads"),
    ],
)
def test_the_cache_bound_reaches_the_pods_that_download(settings, base, build, bound):
    env, _, _ = pod(settings, **({"base": base} if base else {}), build=build)
    assert env.get("FINETUNE_MODEL_CACHE_MAX_BYTES") == bound


@pytest.mark.parametrize(("quantity", "expected"), [("", 0), ("1024", 1024), ("200Gi", 200 * 2**30), ("5G", 5 * 10**9)])
def test_cache_size_setting_in_bytes(quantity, expected):
    from finetune_operator import config

    assert config.quantity_bytes(quantity) == expected
    if quantity:
        assert config.OperatorConfig.from_env({"FINETUNE_MODEL_CACHE_MAX_SIZE": quantity}).model_cache_max_size == quantity


def test_a_bad_cache_size_is_refused_naming_the_variable():
    from finetune_operator import config

    with pytest.raises(config.ConfigError, match="FINETUNE_MODEL_CACHE_MAX_SIZE"):
        config.OperatorConfig.from_env({"FINETUNE_MODEL_CACHE_MAX_SIZE": "lots"})
