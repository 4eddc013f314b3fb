"""Object-store access of a FineTuneJob's Pods: each s3:// location's credentials reach only the
Pods that use that location, as secretKeyRefs (never values); the endpoint setting reaches the
Pods that use any s3:// location; without a Secret, no credentials (workload identity). And the
trainer side: `storage.storage_options` turns those variables into s3fs options per location."""

from __future__ import annotations

import json

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders.finetunejob import Owner, Settings
from finetune_trainer import storage

OWNER = Owner(name="ft", namespace="team", uid="uid-1")
ENDPOINT = "http://objects.storage.svc:8333"


def spec(dataset=None, base=None, output=None) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({
        "baseModel": {"uri": "s3://models/tiny", **({"credentialsSecretRef": {"name": base}} if base else {})},
        "dataset": {"uri": "s3://data/tickets.jsonl", **({"credentialsSecretRef": {"name": dataset}} if dataset else {})},
        "output": {"uri": "s3://runs/team", **({"credentialsSecretRef": {"name": output}} if output else {})},
    })


def env_of(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def stages(s: FineTuneJobSpec, settings: Settings) -> dict[str, dict[str, dict]]:
    return {
        "prepare": env_of(builders.prepare_job(OWNER, s, settings)),
        "train": env_of(builders.train_job(OWNER, s, settings)),
        "evaluate": env_of(builders.eval_job(OWNER, s, settings)),
    }


def test_each_locations_secret_reaches_only_the_pods_that_use_it():
    envs = stages(spec(dataset="data-creds", base="model-creds", output="out-creds"), Settings(s3_endpoint=ENDPOINT))
    expected = {
        "prepare": {"DATASET": "data-creds", "BASE_MODEL": "model-creds"},
        "train": {"DATASET": "data-creds", "BASE_MODEL": "model-creds", "OUTPUT": "out-creds"},
        "evaluate": {"BASE_MODEL": "model-creds", "OUTPUT": "out-creds"},
    }
    for stage, env in envs.items():
        assert env[storage.ENDPOINT_ENV] == {"name": "AWS_ENDPOINT_URL_S3", "value": ENDPOINT}, stage
        got = {name.removeprefix("FINETUNE_").rsplit("_AWS_", 1)[0]: e["valueFrom"]["secretKeyRef"]["name"]
               for name, e in env.items() if "_AWS_" in name and name.startswith("FINETUNE_")}
        assert got == expected[stage], stage
        for role, secret in expected[stage].items():
            for key in storage.CREDENTIAL_KEYS:
                entry = env[f"FINETUNE_{role}_{key}"]
                assert "value" not in entry, entry
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret and ref["key"] == key
                assert ref.get("optional", False) == (key == "AWS_SESSION_TOKEN")


def test_without_a_secret_no_credentials_and_no_endpoint_unless_set():
    envs = stages(spec(), Settings())
    for stage, env in envs.items():
        assert not [n for n in env if "AWS" in n], (stage, env)
    envs = stages(spec(output="out-creds"), Settings(s3_endpoint=ENDPOINT))
    assert "FINETUNE_OUTPUT_AWS_ACCESS_KEY_ID" not in envs["prepare"]
    assert "FINETUNE_DATASET_AWS_ACCESS_KEY_ID" not in envs["train"]


def test_no_s3_env_for_locations_that_are_not_s3():
    s = FineTuneJobSpec.model_validate({
        "baseModel": {"uri": "pvc://models/tiny", "credentialsSecretRef": {"name": "unused"}},
        "dataset": {"uri": "pvc://data/tickets.jsonl"},
        "output": {"uri": "pvc://runs/team"},
    })
    for stage, env in stages(s, Settings(s3_endpoint=ENDPOINT)).items():
        assert not [n for n in env if "AWS" in n], (stage, env)


def test_the_secret_name_only_is_in_the_config_map():
    s = spec(dataset="data-creds", output="out-creds")
    cm = json.dumps(builders.config_map(OWNER, s, Settings(s3_endpoint=ENDPOINT)))
    assert "AWS_SECRET_ACCESS_KEY" not in cm and "secretKeyRef" not in cm


def test_the_trainer_gives_each_location_its_own_credentials():
    env = {
        "FINETUNE_DATASET_AWS_ACCESS_KEY_ID": "dk", "FINETUNE_DATASET_AWS_SECRET_ACCESS_KEY": "ds",
        "FINETUNE_OUTPUT_AWS_ACCESS_KEY_ID": "ok", "FINETUNE_OUTPUT_AWS_SECRET_ACCESS_KEY": "os",
        "FINETUNE_OUTPUT_AWS_SESSION_TOKEN": "ot", "AWS_ENDPOINT_URL_S3": ENDPOINT,
    }
    assert storage.storage_options("dataset", env) == {"key": "dk", "secret": "ds", "endpoint_url": ENDPOINT}
    assert storage.storage_options("output", env) == {"key": "ok", "secret": "os", "token": "ot", "endpoint_url": ENDPOINT}
    # No Secret for the base model: the SDK's default chain (workload identity), same endpoint.
    assert storage.storage_options("base_model", env) == {"endpoint_url": ENDPOINT}
    assert storage.storage_options("base_model", {}) == {}
    with pytest.raises(ValueError):
        storage.credential_env("model", "AWS_ACCESS_KEY_ID")


# ---- serving: an s3:// adapter is fetched into the Pod, then verified, before the server starts

def test_serving_pods_fetch_an_s3_artifact_then_verify_it():
    from finetune_operator.api.rollout import RolloutSpec
    from finetune_operator.builders import rollout

    digest = "sha256:" + "ab" * 32
    trainer = "ghcr.io/finetune-operator/trainer:0.1.0"
    served = rollout.ServedVersion("v2", "/models/base", "s3://runs/team/ft-uid-1/adapter", "adapter", digest,
                                   artifact_credentials_secret="out-creds", s3_endpoint=ENDPOINT)
    for serving in ({"type": "custom", "image": "srv"}, {"type": "vllm"}):
        spec = RolloutSpec.model_validate({"modelName": "chat", "track": "LatestApproved", "serving": serving})
        pod = rollout.deployment(rollout.Owner(name="chat", namespace="team", uid="u"), spec, served, 1,
                                 verifier_image=trainer)["spec"]["template"]["spec"]
        fetch, verify = pod["initContainers"]
        assert fetch["name"] == "fetch-artifact" and fetch["image"] == trainer
        assert fetch["command"] == ["python", "-m", "finetune_trainer.storage", "fetch", served.artifact_uri,
                                    rollout.FETCHED_ARTIFACT_DIR]
        env = {e["name"]: e for e in fetch["env"]}
        assert env["AWS_ENDPOINT_URL_S3"]["value"] == ENDPOINT
        assert env["FINETUNE_OUTPUT_AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "out-creds", "key": "AWS_SECRET_ACCESS_KEY"}
        assert verify["command"][-2:] == [rollout.FETCHED_ARTIFACT_DIR, digest]
        server = pod["containers"][0]
        server_env = {e["name"]: e.get("value") for e in server["env"]}
        assert server_env["ADAPTER_PATH"] == rollout.FETCHED_ARTIFACT_DIR
        assert not [n for n in server_env if "AWS" in n], "the server itself gets no credentials"
        mount = next(m for m in server["volumeMounts"] if m["name"] == "artifact")
        assert mount == {"name": "artifact", "mountPath": rollout.FETCHED_ARTIFACT_DIR, "readOnly": True}
        assert {"name": "artifact", "emptyDir": {}} in pod["volumes"]
        if serving["type"] == "vllm":
            assert "chat-$(MODEL_VERSION)=$(ADAPTER_PATH)" in " ".join(server["args"]).replace("$(MODEL_NAME)", "chat")


def test_registration_copies_the_outputs_secret_to_an_s3_artifact():
    from finetune_operator.builders import modelversion

    body = modelversion.model_version_spec(
        job_name="ft", spec=spec(output="out-creds"), version="v1",
        artifact={"uri": "s3://runs/team/ft-uid-1/adapter", "digest": "sha256:" + "0" * 64},
        dataset_digest=None, data_summary=None, trainer_image="t", evaluation=None)
    assert body["artifact"]["credentialsSecretRef"] == {"name": "out-creds"}


def test_registration_copies_the_jobs_answer_format_to_the_version():
    from finetune_operator.api.finetunejob import FineTuneJobSpec
    from finetune_operator.builders import modelversion

    raw = spec().model_dump(mode="json", by_alias=True, exclude_none=True)
    raw.setdefault("evaluation", {})["formatSchema"] = {"type": "object", "required": ["revenue"]}
    job = FineTuneJobSpec.model_validate(raw)
    body = modelversion.model_version_spec(
        job_name="ft", spec=job, version="v1", artifact={"uri": "pvc://m/ft/adapter", "digest": "sha256:" + "0" * 64},
        dataset_digest=None, data_summary=None, trainer_image="t", evaluation=None)
    assert body["formatSchema"] == {"type": "object", "required": ["revenue"]}
    plain = modelversion.model_version_spec(
        job_name="ft", spec=spec(), version="v1", artifact={"uri": "pvc://m/ft/adapter", "digest": "sha256:" + "0" * 64},
        dataset_digest=None, data_summary=None, trainer_image="t", evaluation=None)
    assert "formatSchema" not in plain


def test_serving_pods_fetch_an_s3_base_model_with_its_own_credentials():
    from finetune_operator.api.rollout import RolloutSpec
    from finetune_operator.builders import rollout

    trainer = "ghcr.io/finetune-operator/trainer:0.1.0"
    served = rollout.ServedVersion("v2", "s3://models/tiny", "s3://runs/team/ft-uid-1/adapter", "adapter", "sha256:" + "ab" * 32,
                                   artifact_credentials_secret="out-creds", s3_endpoint=ENDPOINT,
                                   base_model_credentials_secret="base-creds")
    spec = RolloutSpec.model_validate({"modelName": "chat", "track": "LatestApproved", "serving": {"type": "custom", "image": "srv"}})
    pod = rollout.deployment(rollout.Owner(name="chat", namespace="team", uid="u"), spec, served, 1,
                             verifier_image=trainer)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-base-model", "fetch-artifact", "verify-artifact"]
    base = pod["initContainers"][0]
    assert base["command"][-2:] == ["s3://models/tiny", rollout.FETCHED_BASE_MODEL_DIR]
    env = {e["name"]: e for e in base["env"]}
    assert env["FINETUNE_OUTPUT_AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "base-creds"
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == ENDPOINT
    server = pod["containers"][0]
    assert {e["name"]: e.get("value") for e in server["env"]}["BASE_MODEL"] == rollout.FETCHED_BASE_MODEL_DIR
    assert {"name": "base-model", "emptyDir": {}} in pod["volumes"]
    # A full model needs no base; without a trainer image nothing is fetched.
    full = rollout.deployment(rollout.Owner(name="chat", namespace="team", uid="u"), spec,
                              rollout.ServedVersion("v2", "s3://models/tiny", "s3://runs/x/model", "full"), 1,
                              verifier_image=trainer)["spec"]["template"]["spec"]
    assert "fetch-base-model" not in [c["name"] for c in full.get("initContainers", [])]


def test_version_info_reads_the_base_models_credentials_secret():
    from finetune_operator.logic import rollout as logic

    mv = {"metadata": {"name": "chat-v2"}, "spec": {"version": "v2", "baseModel": {"uri": "s3://m/tiny", "credentialsSecretRef": {"name": "b"}}}}
    assert logic.VersionInfo.from_object(mv).base_model_credentials_secret == "b"
