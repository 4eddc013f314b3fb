"""The children of a FineTuneJob as rendered from (Owner, FineTuneJobSpec, Settings).

Each table row is one situation a user can put a FineTuneJob in (one node, eight GPUs, four
nodes, a Kueue queue, a pvc:// model, an s3:// output, inline records...) and what the rendered
objects must then say. The example manifests double as the proof that a FineTuneJob spec
renders to a config the trainer itself accepts.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.builders import finetunejob as builders
from finetune_operator.logic.finetunejob_spec import resolve_references
from finetune_operator.builders.finetunejob import Owner, RenderError, Settings
from finetune_operator.logic.finetunejob import parse_spec
from finetune_operator.logic.spec import InvalidSpec
from finetune_trainer import config as trainer_config
from finetune_trainer import exitcodes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("finetunejob-*.yaml"))

OWNER = Owner(name="ft", namespace="team", uid="uid-1")
SETTINGS = Settings()
HOST_PATHS = Settings(allowed_host_paths=("/artifacts",))
RUN = "ft-uid-1"  # the run's own directory: <name>-<uid>

MINIMAL = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "dataset": {"uri": "s3://data/tickets.jsonl"},
}
RECORDS = [
    {"instruction": "Summarize: printer jams", "output": "hardware"},
    {"instruction": "Summarize: refund please", "output": "billing"},
]
TEACHER = {
    "endpoint": "http://teacher.models:8000/v1",
    "model": "qwen-72b",
    "prompt": "Write a support question as instruction and its category as output.",
    "numExamples": 40,
    "seedExamples": [{"instruction": "My card was charged twice", "output": "billing"}],
    "temperature": 0.3,
}
TEACHER_KEY = {"secretRef": {"name": "teacher-api", "key": "token"}}
PLACEMENT = {
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "priorityClassName": "training-high",
}


def spec(**changes) -> FineTuneJobSpec:
    """MINIMAL with top-level sections replaced or merged (dicts are merged one level deep)."""
    raw = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return FineTuneJobSpec.model_validate(raw)


def render(stage: str, ftj: FineTuneJobSpec, settings: Settings = SETTINGS) -> dict:
    return (builders.prepare_job if stage == "prepare" else builders.train_job)(OWNER, ftj, settings)


def view(job: dict) -> dict:
    """The parts of a rendered Job a row may assert on; None means absent."""
    template = job["spec"]["template"]
    pod = template["spec"]
    [container] = pod["containers"]
    volumes = {v["name"]: {k: v[k] for k in v if k != "name"} for v in pod["volumes"]}
    env = {}
    for var in container["env"]:
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return {
        "container": container["name"],
        "args": container["args"],
        "command": container.get("command"),
        "limits": container.get("resources", {}).get("limits"),
        "requests": container.get("resources", {}).get("requests"),
        "env": env,
        "mounts": {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]},
        "ports": container.get("ports"),
        "nodeSelector": pod.get("nodeSelector"),
        "tolerations": pod.get("tolerations"),
        "affinity": pod.get("affinity"),
        "priorityClassName": pod.get("priorityClassName"),
        "serviceAccountName": pod["serviceAccountName"],
        "subdomain": pod.get("subdomain"),
        "restartPolicy": pod["restartPolicy"],
        "backoffLimit": job["spec"]["backoffLimit"],
        "activeDeadlineSeconds": job["spec"].get("activeDeadlineSeconds"),
        "suspend": job["spec"].get("suspend"),
        "completionMode": job["spec"].get("completionMode"),
        "completions": job["spec"].get("completions"),
        "parallelism": job["spec"].get("parallelism"),
        "queueLabelOnJob": job["metadata"]["labels"].get(builders.QUEUE_LABEL),
        "queueLabelOnPod": template["metadata"]["labels"].get(builders.QUEUE_LABEL),
        "stageLabel": template["metadata"]["labels"].get(builders.STAGE_LABEL),
    }


# --- the prepare and train Jobs ----------------------------------------------------------------

FAIL_FAST = sorted(exitcodes.FAIL_FAST)
CONFIG = "/etc/finetune/config.yaml"


@pytest.mark.parametrize(
    ("ftj", "stage", "expected"),
    [
        pytest.param(
            spec(), "prepare",
            dict(container="trainer", args=["prepare", "--config", CONFIG], command=None, stageLabel="prepare",
                 serviceAccountName="ft-trainer", restartPolicy="Never"),
            id="prepare-runs-the-image-entrypoint-with-prepare",
        ),
        pytest.param(
            spec(), "train",
            dict(container="trainer", args=["train", "--config", CONFIG], command=None, stageLabel="train",
                 serviceAccountName="ft-trainer", restartPolicy="Never"),
            id="single-gpu-train-runs-the-image-entrypoint-with-train",
        ),
        pytest.param(
            spec(), "train", dict(limits={"nvidia.com/gpu": "1"}, requests=None),
            id="one-gpu-limit-under-the-default-resource-name",
        ),
        pytest.param(
            spec(resources={"gpusPerNode": 1, "gpuResourceName": "amd.com/gpu", "cpu": 8, "memory": "48Gi"}), "train",
            dict(limits={"amd.com/gpu": "1", "cpu": "8", "memory": "48Gi"}, requests={"cpu": "8", "memory": "48Gi"}),
            id="gpu-limit-under-spec-gpu-resource-name-with-cpu-and-memory",
        ),
        pytest.param(
            spec(resources={"gpusPerNode": 2, "cpu": 8}), "prepare",
            dict(limits={"cpu": "8"}, requests={"cpu": "8"}),
            id="prepare-gets-cpu-and-memory-but-never-gpus",
        ),
        pytest.param(
            spec(resources={"gpusPerNode": 0}), "train", dict(limits=None, command=None),
            id="cpu-only-train-has-no-gpu-limit",
        ),
        pytest.param(
            spec(resources={"gpusPerNode": 8}), "train",
            dict(limits={"nvidia.com/gpu": "8"}, args=["train", "--config", CONFIG],
                 command=["torchrun", "--nproc_per_node=8", "-m", "finetune_trainer"], completionMode=None),
            id="eight-gpus-on-one-node-use-torchrun-nproc",
        ),
        pytest.param(
            spec(resources=PLACEMENT), "train",
            dict(nodeSelector=PLACEMENT["nodeSelector"], tolerations=PLACEMENT["tolerations"],
                 affinity=PLACEMENT["affinity"], priorityClassName="training-high"),
            id="placement-applies-to-train",
        ),
        pytest.param(
            spec(resources=PLACEMENT), "prepare",
            dict(nodeSelector=None, tolerations=None, affinity=None, priorityClassName=None),
            id="placement-does-not-apply-to-prepare",
        ),
        pytest.param(
            spec(maxRestarts=5), "train", dict(backoffLimit=5),
            id="train-backoff-limit-is-max-restarts",
        ),
        pytest.param(
            spec(maxRestarts=5), "prepare", dict(backoffLimit=2),
            id="prepare-backoff-limit-is-fixed",
        ),
        pytest.param(
            spec(activeDeadlineSeconds=3600), "train", dict(activeDeadlineSeconds=3600),
            id="deadline-on-train",
        ),
        pytest.param(
            spec(activeDeadlineSeconds=3600), "prepare", dict(activeDeadlineSeconds=3600),
            id="deadline-on-prepare",
        ),
        pytest.param(
            spec(), "train", dict(activeDeadlineSeconds=None, suspend=None),
            id="no-deadline-and-not-suspended-by-default",
        ),
        pytest.param(
            spec(resources={"nodes": 4, "gpusPerNode": 8}), "train",
            dict(
                completionMode="Indexed", completions=4, parallelism=4, subdomain="ft-train",
                ports=[{"name": "rendezvous", "containerPort": 29500}],
                command=["torchrun", "--nnodes=$(NNODES)", "--nproc_per_node=$(NPROC_PER_NODE)",
                         "--node_rank=$(NODE_RANK)", "--master_addr=$(MASTER_ADDR)",
                         "--master_port=$(MASTER_PORT)", "-m", "finetune_trainer"],
                args=["train", "--config", CONFIG],
            ),
            id="four-nodes-make-an-indexed-job-with-a-subdomain",
        ),
        pytest.param(
            spec(resources={"nodes": 4, "gpusPerNode": 8}), "prepare",
            dict(completionMode=None, completions=None, subdomain=None, command=None),
            id="four-nodes-still-prepare-once",
        ),
        pytest.param(
            spec(resources={"queueName": "ml-research"}), "train",
            dict(queueLabelOnJob="ml-research", queueLabelOnPod="ml-research", suspend=True),
            id="kueue-queue-labels-train-and-creates-it-suspended",
        ),
        pytest.param(
            spec(resources={"queueName": "ml-research"}), "prepare",
            dict(queueLabelOnJob=None, queueLabelOnPod=None, suspend=None),
            id="kueue-queue-does-not-gate-prepare",
        ),
        pytest.param(
            spec(suspend=True), "train", dict(suspend=True, queueLabelOnJob=None),
            id="suspended-spec-creates-train-suspended",
        ),
        pytest.param(
            spec(suspend=True), "prepare", dict(suspend=True),
            id="suspended-spec-creates-prepare-suspended",
        ),
    ],
)
def test_job(ftj, stage, expected):
    job = view(render(stage, ftj))
    assert {key: job[key] for key in expected} == expected


@pytest.mark.parametrize("stage", ["prepare", "train"])
def test_every_job_has_the_same_failure_policy_and_sandbox(stage):
    job = render(stage, spec())
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]

    # Disruptions first (ignored), then the codes no retry can fix: the trainer's own and the
    # kernel OOM killer's 137, so an OOMKilled trainer fails at once instead of retrying.
    assert job["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob",
         "onExitCodes": {"containerName": "trainer", "operator": "In", "values": sorted({*FAIL_FAST, 137})}},
    ]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": builders.TRAINER_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_fail_fast_codes_are_the_trainers_non_retryable_ones():
    assert FAIL_FAST == [
        exitcodes.CONFIG_ERROR, exitcodes.DATA_ERROR, exitcodes.MODEL_ERROR,
        exitcodes.OUT_OF_MEMORY, exitcodes.TRAINING_DIVERGED,
    ]


def test_multi_node_env_points_every_rank_at_rank_zero():
    env = view(render("train", spec(resources={"nodes": 4, "gpusPerNode": 8})))["env"]

    assert env["MASTER_ADDR"] == "ft-train-0.ft-train"
    assert env["MASTER_PORT"] == "29500"
    assert (env["NNODES"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("4", "8", "32")
    assert env["NODE_RANK"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }


# --- volumes: where each location is mounted ------------------------------------------------------

CONFIG_MOUNTS = {
    "/etc/finetune": {"configMap": {"name": "ft-config"}},
    "/tmp": {"emptyDir": {}},
}


@pytest.mark.parametrize(
    ("ftj", "settings", "expected_mounts"),
    [
        pytest.param(
            spec(baseModel={"uri": "pvc://models/llama"}, dataset={"uri": "pvc://datasets/t.jsonl"}), SETTINGS,
            {
                "/mnt/pvc/datasets": {"persistentVolumeClaim": {"claimName": "datasets"}},
                "/mnt/pvc/finetune-artifacts": {"persistentVolumeClaim": {"claimName": "finetune-artifacts"}},
                "/mnt/pvc/models": {"persistentVolumeClaim": {"claimName": "models"}},
            },
            id="pvc-model-data-and-default-store-are-mounted-by-claim",
        ),
        pytest.param(
            spec(baseModel={"uri": "pvc://shared/models/llama"}, output={"uri": "pvc://shared/runs/ft"}), SETTINGS,
            {"/mnt/pvc/shared": {"persistentVolumeClaim": {"claimName": "shared"}}},
            id="one-claim-named-twice-is-mounted-once",
        ),
        pytest.param(
            spec(output={"uri": "s3://models/finetuned/ft"}), SETTINGS,
            {"/workspace/output": {"emptyDir": {}}},
            id="s3-output-is-written-locally-then-uploaded",
        ),
        pytest.param(
            spec(), Settings(artifact_store="s3://artifacts"),
            {"/workspace/output": {"emptyDir": {}}},
            id="s3-artifact-store-is-written-locally-then-uploaded",
        ),
    ],
)
def test_mounts(ftj, settings, expected_mounts):
    for stage in ("prepare", "train"):
        assert view(render(stage, ftj, settings))["mounts"] == {**CONFIG_MOUNTS, **expected_mounts}, stage


def _writable_mount_holding(job: dict, path: str) -> str | None:
    [container] = job["spec"]["template"]["spec"]["containers"]
    for mount in container["volumeMounts"]:
        root = mount["mountPath"].rstrip("/") + "/"
        if (path.rstrip("/") + "/").startswith(root) and not mount.get("readOnly"):
            return mount["mountPath"]
    return None


@pytest.mark.parametrize(
    ("ftj", "expected_mount"),
    [
        pytest.param(spec(), "/mnt/pvc/finetune-artifacts", id="default-artifact-store"),
        pytest.param(spec(output={"uri": "pvc://models/finetuned/ft"}), "/mnt/pvc/models", id="pvc-output"),
        pytest.param(spec(output={"uri": "s3://models/finetuned/ft"}), "/workspace/output", id="s3-output"),
        pytest.param(
            spec(output={"uri": "/artifacts/ft"}), f"/artifacts/ft/{RUN}",
            id="allowed-node-path-output-mounts-only-the-runs-own-directory",
        ),
    ],
)
def test_output_dir_is_on_a_writable_mount(ftj, expected_mount):
    job = builders.train_job(OWNER, ftj, HOST_PATHS)
    output_dir = builders.trainer_config_dict(OWNER, ftj, HOST_PATHS)["output"]["dir"]
    local = str(trainer_config.local_path(output_dir, builders.PVC_MOUNT_ROOT))
    assert _writable_mount_holding(job, local) == expected_mount


# --- the trainer config ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("ftj", "settings", "expected"),
    [
        pytest.param(
            spec(), SETTINGS,
            {"output": {"dir": f"pvc://finetune-artifacts/{RUN}", "uri": f"pvc://finetune-artifacts/{RUN}"}},
            id="default-output-goes-to-the-artifact-store-under-name-and-uid",
        ),
        pytest.param(
            spec(), Settings(artifact_store="pvc://team-store/"),
            {"output": {"dir": f"pvc://team-store/{RUN}", "uri": f"pvc://team-store/{RUN}"}},
            id="artifact-store-setting-with-trailing-slash",
        ),
        pytest.param(
            spec(output={"uri": "pvc://models//finetuned/ft/"}), SETTINGS,
            {"output": {"dir": f"pvc://models/finetuned/ft/{RUN}", "uri": f"pvc://models/finetuned/ft/{RUN}"}},
            id="output-uri-is-normalised-then-gets-the-runs-directory",
        ),
        pytest.param(
            spec(output={"uri": "s3://models/finetuned/ft"}), SETTINGS,
            {"output": {"dir": "/workspace/output", "upload_uri": f"s3://models/finetuned/ft/{RUN}",
                        "uri": f"s3://models/finetuned/ft/{RUN}"}},
            id="s3-output-is-uploaded-from-a-local-dir",
        ),
        pytest.param(
            spec(dataset={"uri": None, "inline": RECORDS}), SETTINGS,
            {"dataset.source": "/etc/finetune/dataset.jsonl"},
            id="inline-records-are-read-from-the-config-map",
        ),
        pytest.param(
            spec(), SETTINGS, {"dataset.source": "s3://data/tickets.jsonl"},
            id="dataset-uri-is-read-where-it-is",
        ),
        pytest.param(
            spec(dataset={"uri": None, "synthetic": {**TEACHER, **TEACHER_KEY}}), SETTINGS,
            {"dataset.source": None,
             "dataset.synthetic": {
                 "endpoint": "http://teacher.models:8000/v1", "model": "qwen-72b", "prompt": TEACHER["prompt"],
                 "num_examples": 40, "seed_examples": TEACHER["seedExamples"], "temperature": 0.3,
                 "api_key_env": "FINETUNE_SYNTHETIC_API_KEY"}},
            id="synthetic-records-come-from-the-teacher-with-the-key-in-an-env-var",
        ),
        pytest.param(
            spec(dataset={"uri": None, "synthetic": TEACHER}), SETTINGS,
            {"dataset.source": None, "dataset.synthetic.api_key_env": None, "dataset.synthetic.num_examples": 40},
            id="synthetic-without-a-secret-sends-no-key",
        ),
        pytest.param(spec(hyperparameters={"precision": "bf16"}), SETTINGS, {"hyperparameters.bf16": True}, id="bf16"),
        pytest.param(spec(hyperparameters={"precision": "fp32"}), SETTINGS, {"hyperparameters.bf16": False}, id="fp32"),
        pytest.param(spec(hyperparameters={"precision": "fp16"}, resources={"gpusPerNode": 1}), SETTINGS,
                     {"hyperparameters.bf16": False, "hyperparameters.fp16": True}, id="fp16"),
        pytest.param(spec(), SETTINGS, {"hyperparameters.bf16": "auto"}, id="auto-precision"),
        pytest.param(
            spec(checkpointing={"intervalSteps": 50}), SETTINGS,
            {"hyperparameters.eval_steps": 50, "checkpointing.every_n_steps": 50},
            id="evaluation-defaults-to-every-checkpoint",
        ),
        pytest.param(
            spec(earlyStopping={"patience": 2, "minDelta": 0.01}), SETTINGS,
            {"early_stopping": {"enabled": True, "patience": 2, "min_delta": 0.01}},
            id="early-stopping-min-delta-reaches-the-trainer",
        ),
        pytest.param(spec(), SETTINGS, {"adaptation.target_modules": None}, id="no-target-modules-lets-the-trainer-pick"),
        pytest.param(
            spec(adaptation={"targetModules": ["q_proj", "v_proj"]}), SETTINGS,
            {"adaptation.target_modules": ["q_proj", "v_proj"]},
            id="target-modules-are-passed-on",
        ),
        pytest.param(
            spec(dataset={"format": "chat", "chatTemplate": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}),
            SETTINGS,
            {"dataset.format": "chat", "dataset.chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"},
            id="chat-template-from-the-spec-is-passed-on",
        ),
        pytest.param(spec(), SETTINGS, {"dataset.chat_template": None}, id="no-chat-template-keeps-the-tokenizers"),
        pytest.param(
            spec(dataset={"piiPolicy": "redact", "piiTypes": ["EMAIL", "SSN"]}), SETTINGS,
            {"dataset.pii_policy": "redact", "dataset.pii_types": ["EMAIL", "SSN"]},
            id="pii-policy-and-types",
        ),
        pytest.param(
            spec(baseModel={"uri": "hf://org/model", "revision": "v2"}), SETTINGS,
            {"model.revision": "v2", "model.cache_dir": "/tmp/finetune-cache/models"},
            id="hf-revision-and-a-writable-model-cache",
        ),
    ],
)
def test_trainer_config(ftj, settings, expected):
    rendered = builders.trainer_config_dict(OWNER, ftj, settings)
    for path, value in expected.items():
        node = rendered
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        assert node == value, path
    trainer_config.parse_config(rendered)  # the trainer accepts it as it is


@pytest.mark.parametrize(
    ("ftj", "expected_files"),
    [
        pytest.param(
            spec(dataset={"uri": None, "inline": RECORDS}),
            {"config.yaml", "dataset.jsonl"},
            id="inline-records-ship-as-dataset-jsonl",
        ),
        pytest.param(spec(), {"config.yaml"}, id="dataset-uri-ships-only-the-config"),
        pytest.param(
            spec(dataset={"uri": None, "synthetic": {**TEACHER, **TEACHER_KEY}}), {"config.yaml"},
            id="synthetic-ships-only-the-config",
        ),
    ],
)
def test_config_map(ftj, expected_files, tmp_path):
    config_map = builders.config_map(OWNER, ftj, SETTINGS)

    assert config_map["metadata"]["name"] == "ft-config"
    assert set(config_map["data"]) == expected_files
    # The trainer reads config.yaml with its own loader (YAML) and gets exactly the rendered config.
    # (PyYAML reads a JSON float like 2e-05 as a string; the trainer's typed model converts it back.)
    mounted = tmp_path / "config.yaml"
    mounted.write_text(config_map["data"]["config.yaml"])
    rendered = builders.trainer_config_dict(OWNER, ftj, SETTINGS)
    assert trainer_config.load_config(mounted) == trainer_config.parse_config(rendered)
    if "dataset.jsonl" in expected_files:
        lines = config_map["data"]["dataset.jsonl"].splitlines()
        assert [json.loads(line) for line in lines] == RECORDS


@pytest.mark.parametrize(
    ("ftj", "stage", "expected_env"),
    [
        pytest.param(
            spec(dataset={"uri": None, "synthetic": {**TEACHER, **TEACHER_KEY}}), "prepare",
            {"FINETUNE_SYNTHETIC_API_KEY": {"secretKeyRef": {"name": "teacher-api", "key": "token"}}},
            id="prepare-gets-the-teacher-key-from-the-secret",
        ),
        pytest.param(
            spec(dataset={"uri": None, "synthetic": {**TEACHER, **TEACHER_KEY}}), "train", {"FINETUNE_SYNTHETIC_API_KEY": None},
            id="train-never-sees-the-teacher-key",
        ),
        pytest.param(
            spec(dataset={"uri": None, "synthetic": {**TEACHER, **TEACHER_KEY}}), "evaluate", {"FINETUNE_SYNTHETIC_API_KEY": None},
            id="evaluate-never-sees-the-teacher-key",
        ),
        pytest.param(
            spec(dataset={"uri": None, "synthetic": TEACHER}), "prepare", {"FINETUNE_SYNTHETIC_API_KEY": None},
            id="no-secret-ref-no-key-env",
        ),
        pytest.param(spec(), "prepare", {"FINETUNE_SYNTHETIC_API_KEY": None}, id="file-datasets-need-no-key"),
    ],
)
def test_teacher_api_key_env(ftj, stage, expected_env):
    job = builders.eval_job(OWNER, ftj, SETTINGS) if stage == "evaluate" else render(stage, ftj)
    env = view(job)["env"]
    assert {name: env.get(name) for name in expected_env} == expected_env


def test_teacher_key_is_referenced_never_copied():
    ftj = spec(dataset={"uri": None, "synthetic": {**TEACHER, **TEACHER_KEY}})
    config_map = builders.config_map(OWNER, ftj, SETTINGS)
    text = json.dumps(config_map)
    # The config names the variable the key arrives in; nothing in it points at or holds the key.
    assert json.loads(config_map["data"]["config.yaml"])["dataset"]["synthetic"]["api_key_env"] == "FINETUNE_SYNTHETIC_API_KEY"
    assert "teacher-api" not in text and "secretRef" not in text and "secret_ref" not in text
    [env] = [v for v in view(render("prepare", ftj))["env"].items() if v[0] == "FINETUNE_SYNTHETIC_API_KEY"]
    assert set(env[1]) == {"secretKeyRef"}, "the key is never given as a literal value"


@pytest.mark.parametrize(
    ("ftj", "expected_field"),
    [
        pytest.param(
            spec(method="dpo", dataset={"uri": None, "format": "auto", "synthetic": TEACHER}),
            "spec.dataset.synthetic",
            id="dpo-with-instruction-seed-examples-cannot-ask-for-preference-records",
        ),
        pytest.param(
            spec(hyperparameters={"evalSteps": 30}, checkpointing={"intervalSteps": 100}),
            "spec.checkpointing.intervalSteps",
            id="checkpoint-interval-not-a-multiple-of-eval-steps",
        ),
    ],
)
def test_spec_the_trainer_cannot_run_is_refused_naming_the_field(ftj, expected_field):
    # decide() takes the text before the first ": " as the field of the InvalidSpec problem.
    with pytest.raises(RenderError) as refused:
        builders.trainer_config_dict(OWNER, ftj, SETTINGS)
    assert re.match(rf"{re.escape(expected_field)}\b", str(refused.value)), str(refused.value)
    # The message speaks the spec's names, never the trainer config's.
    for trainer_name in ("checkpointing.every_n_steps", "hyperparameters.eval_steps", "dataset.balance_cap"):
        assert trainer_name not in str(refused.value), str(refused.value)


@pytest.mark.parametrize(
    ("fields", "interval"),
    [
        pytest.param({}, 100, id="default-100"),
        pytest.param({"hyperparameters": {"evalSteps": 12}}, 108, id="eval-steps-12-checkpoints-every-108"),
        pytest.param({"hyperparameters": {"evalSteps": 25}}, 100, id="eval-steps-25-keeps-100"),
        pytest.param({"hyperparameters": {"evalSteps": 150}}, 150, id="eval-steps-above-100"),
        pytest.param({"hyperparameters": {"evalSteps": 12}, "checkpointing": {"intervalSteps": 24}}, 24, id="explicit-wins"),
    ],
)
def test_the_checkpoint_interval_default_follows_eval_steps(fields, interval):
    rendered = builders.trainer_config_dict(OWNER, spec(**fields), SETTINGS)  # not refused
    assert rendered["checkpointing"]["every_n_steps"] == interval
    assert interval % rendered["hyperparameters"]["eval_steps"] == 0


# Manifests the current release refuses on purpose, and the field the refusal names.
REFUSED_EXAMPLES: dict[str, str] = {}


def test_examples_are_found():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize(
    ("manifest", "refused_field"),
    [pytest.param(path, REFUSED_EXAMPLES.get(path.name), id=path.stem) for path in EXAMPLES],
)
def test_example_renders_to_a_config_the_trainer_accepts(manifest, refused_field):
    document = yaml.safe_load(manifest.read_text())
    parsed = parse_spec(document["spec"])
    assert not isinstance(parsed, InvalidSpec), parsed
    # The ModelVersions an example names (continual learning) as the operator finds them registered.
    parsed = resolve_references(parsed, lambda name: {"spec": {
        "baseModel": {"uri": document["spec"]["baseModel"]["uri"]},
        "artifact": {"uri": f"pvc://finetune-artifacts/{name}-uid/adapter", "type": "adapter"},
        "lineage": {"preparedDataUri": f"pvc://finetune-artifacts/{name}-uid/data"}}})
    assert not isinstance(parsed, InvalidSpec), parsed
    owner = Owner(name=document["metadata"]["name"], namespace="team", uid="uid-1")

    if refused_field:
        with pytest.raises(RenderError, match=re.escape(refused_field)):
            builders.trainer_config_dict(owner, parsed, SETTINGS)
        return
    rendered = builders.trainer_config_dict(owner, parsed, SETTINGS)
    accepted = trainer_config.parse_config(rendered, origin=manifest.name)
    assert accepted.model.uri == parsed.base_model.uri
    # Every child renders too, and the ConfigMap carries exactly that config.
    children = [*builders.setup_objects(owner, parsed, SETTINGS),
                builders.prepare_job(owner, parsed, SETTINGS), builders.train_job(owner, parsed, SETTINGS)]
    assert json.loads(children[0]["data"]["config.yaml"]) == rendered


# --- setup objects, names, ownership -------------------------------------------------------------

@pytest.mark.parametrize(
    ("ftj", "expected"),
    [
        pytest.param(
            spec(),
            [("ConfigMap", "ft-config"), ("ConfigMap", "ft-progress"), ("ServiceAccount", "ft-trainer"),
             ("Role", "ft-trainer"), ("RoleBinding", "ft-trainer")],
            id="single-node",
        ),
        pytest.param(
            spec(resources={"nodes": 2}),
            [("ConfigMap", "ft-config"), ("ConfigMap", "ft-progress"), ("ServiceAccount", "ft-trainer"),
             ("Role", "ft-trainer"), ("RoleBinding", "ft-trainer"), ("Service", "ft-train")],
            id="multi-node-adds-the-headless-service",
        ),
    ],
)
def test_setup_objects(ftj, expected):
    objects = builders.setup_objects(OWNER, ftj, SETTINGS)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == expected
    assert {o["metadata"]["namespace"] for o in objects} == {"team"}


def test_headless_service_selects_exactly_the_train_pods():
    ftj = spec(resources={"nodes": 2})
    service = builders.headless_service(OWNER)
    train_pod_labels = builders.train_job(OWNER, ftj, SETTINGS)["spec"]["template"]["metadata"]["labels"]
    prepare_pod_labels = builders.prepare_job(OWNER, ftj, SETTINGS)["spec"]["template"]["metadata"]["labels"]

    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= train_pod_labels.items()
    assert not service["spec"]["selector"].items() <= prepare_pod_labels.items()


def test_role_grants_only_get_and_patch_of_its_progress_config_map():
    account, role, binding = builders.trainer_rbac(OWNER)

    assert (account["kind"], role["kind"], binding["kind"]) == ("ServiceAccount", "Role", "RoleBinding")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["ft-progress"], "verbs": ["get", "patch"]}
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ft-trainer"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ft-trainer", "namespace": "team"}]
    assert builders.progress_config_map(OWNER)["metadata"]["name"] == "ft-progress"


def test_the_trainer_service_account_carries_the_workload_identity_annotations():
    irsa = (("eks.amazonaws.com/role-arn", "arn:aws:iam::123456789012:role/finetune"),)
    account = builders.trainer_rbac(OWNER, Settings(trainer_service_account_annotations=irsa))[0]
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/finetune"}
    assert "annotations" not in builders.trainer_rbac(OWNER, Settings())[0]["metadata"]
    objects = builders.setup_objects(OWNER, spec(), Settings(trainer_service_account_annotations=irsa))
    assert next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["annotations"] == dict(irsa)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", {}), ('{"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}', {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"})],
)
def test_service_account_annotations_setting(raw, expected):
    from finetune_operator import config

    assert config.OperatorConfig.from_env({"FINETUNE_TRAINER_SERVICE_ACCOUNT_ANNOTATIONS": raw}).trainer_service_account_annotations == expected


@pytest.mark.parametrize("raw", ["not json", '["a"]', '{"a": 1}', '{"bad key!": "x"}'])
def test_bad_service_account_annotations_are_refused_naming_the_variable(raw):
    from finetune_operator import config

    with pytest.raises(config.ConfigError, match="FINETUNE_TRAINER_SERVICE_ACCOUNT_ANNOTATIONS"):
        config.OperatorConfig.from_env({"FINETUNE_TRAINER_SERVICE_ACCOUNT_ANNOTATIONS": raw})


OWNED_CHILDREN = {
    "config": lambda ftj: builders.config_map(OWNER, ftj, SETTINGS),
    "progress": lambda ftj: builders.progress_config_map(OWNER),
    "service-account": lambda ftj: builders.trainer_rbac(OWNER)[0],
    "role": lambda ftj: builders.trainer_rbac(OWNER)[1],
    "role-binding": lambda ftj: builders.trainer_rbac(OWNER)[2],
    "prepare-job": lambda ftj: builders.prepare_job(OWNER, ftj, SETTINGS),
    "train-job": lambda ftj: builders.train_job(OWNER, ftj, SETTINGS),
    "headless-service": lambda ftj: builders.headless_service(OWNER),
}
EXPECTED_NAMES = {
    "config": "ft-config", "progress": "ft-progress", "service-account": "ft-trainer", "role": "ft-trainer",
    "role-binding": "ft-trainer", "prepare-job": "ft-prepare", "train-job": "ft-train", "headless-service": "ft-train",
}


@pytest.mark.parametrize("child", list(OWNED_CHILDREN))
def test_child_is_controlled_by_the_finetunejob_and_named_deterministically(child):
    ftj = spec(resources={"nodes": 2})
    rendered = OWNED_CHILDREN[child](ftj)

    assert rendered["metadata"]["name"] == EXPECTED_NAMES[child]
    assert rendered["metadata"]["ownerReferences"] == [
        {"apiVersion": "finetune.ai/v1alpha1", "kind": "FineTuneJob", "name": "ft", "uid": "uid-1",
         "controller": True, "blockOwnerDeletion": True}
    ]
    assert rendered["metadata"]["labels"]["finetune.ai/finetunejob"] == "ft"
    assert OWNED_CHILDREN[child](ftj) == rendered  # same inputs, same object


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param(SETTINGS, ("finetune-artifacts", "100Gi"), id="pvc-store-is-created-when-missing"),
        pytest.param(Settings(artifact_store="pvc://team-store", artifact_store_size="1Ti"), ("team-store", "1Ti"),
                     id="store-claim-and-size-from-settings"),
        pytest.param(Settings(artifact_store="s3://artifacts"), None, id="s3-store-needs-no-claim"),
        pytest.param(Settings(artifact_store="/srv/artifacts"), None, id="path-store-needs-no-claim"),
    ],
)
def test_artifact_store_pvc(settings, expected):
    claim = builders.artifact_store_pvc("team", settings)
    if expected is None:
        assert claim is None
        return
    name, size = expected
    assert claim["kind"] == "PersistentVolumeClaim"
    assert (claim["metadata"]["name"], claim["metadata"]["namespace"]) == (name, "team")
    assert claim["spec"]["resources"]["requests"]["storage"] == size
    assert "ownerReferences" not in claim["metadata"]  # artifacts outlive the job


# --- cleanup (spec.deleteArtifactsOnDelete): the run's scratch, never its artifact ---------------

SCRATCH = ("checkpoints", "data", "progress.jsonl")


def _removed(job: dict) -> tuple[list[str], dict]:
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][:2] == ["python", "-c"]
    [volume] = pod["volumes"]
    return container["command"][3:], {k: v for k, v in volume.items() if k != "name"}


@pytest.mark.parametrize(
    ("ftj", "settings", "expected"),
    [
        pytest.param(
            spec(), SETTINGS,
            (f"/mnt/pvc/finetune-artifacts/{RUN}", {"persistentVolumeClaim": {"claimName": "finetune-artifacts"}}),
            id="default-store-runs-scratch",
        ),
        pytest.param(
            spec(output={"uri": "pvc://models/finetuned/classifier"}), SETTINGS,
            (f"/mnt/pvc/models/finetuned/classifier/{RUN}", {"persistentVolumeClaim": {"claimName": "models"}}),
            id="pvc-output-runs-scratch",
        ),
        pytest.param(
            spec(output={"uri": "/artifacts/ft"}), HOST_PATHS,
            (f"/artifacts/ft/{RUN}", {"hostPath": {"path": f"/artifacts/ft/{RUN}", "type": "DirectoryOrCreate"}}),
            id="allowed-node-path-mounts-only-the-runs-directory",
        ),
        pytest.param(
            spec(), Settings(artifact_store="/srv/artifacts"),
            (f"/srv/artifacts/{RUN}", {"hostPath": {"path": f"/srv/artifacts/{RUN}", "type": "DirectoryOrCreate"}}),
            id="the-operators-own-node-path-store-is-allowed",
        ),
        pytest.param(spec(output={"uri": "/var/lib/kubelet"}), SETTINGS, None, id="node-path-not-allowed-is-never-mounted"),
        pytest.param(spec(output={"uri": "/artifacts-other/x"}), HOST_PATHS, None, id="prefix-match-is-by-directory-not-by-text"),
    ],
)
def test_cleanup_job_removes_only_the_runs_scratch(ftj, settings, expected):
    cleanup = builders.cleanup_job(OWNER, ftj, settings)
    if expected is None:
        assert cleanup is None
        return
    run, volume = expected
    removed, mounted = _removed(cleanup)
    assert cleanup["metadata"]["name"] == "ft-cleanup"
    assert "ownerReferences" not in cleanup["metadata"]  # the FineTuneJob is being deleted
    assert cleanup["spec"]["ttlSecondsAfterFinished"] == 300
    assert mounted == volume
    assert removed == [f"{run}/{entry}" for entry in SCRATCH]
    assert not any(path.endswith(("/adapter", "/model")) or path == run for path in removed)


def test_s3_cleanup_removes_the_runs_scratch_objects_with_the_outputs_credentials():
    ftj = spec(output={"uri": "s3://models/finetuned/ft", "credentialsSecretRef": {"name": "out-creds"}})
    job = builders.cleanup_job(OWNER, ftj, Settings(s3_endpoint="http://127.0.0.1:8333"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:4] == ["python", "-m", "finetune_trainer.storage", "remove"]
    run = builders.output_uri(OWNER, ftj, Settings())
    assert command[4:] == [f"{run}/{entry}" for entry in SCRATCH]
    assert not any(path.endswith(("/adapter", "/model")) or path == run for path in command[4:])
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://127.0.0.1:8333"
    assert env["FINETUNE_OUTPUT_AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "out-creds", "key": "AWS_SECRET_ACCESS_KEY"}
    assert all("value" not in e for n, e in env.items() if "AWS_" in n and n != "AWS_ENDPOINT_URL_S3")
    assert job["spec"]["template"]["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_s3_retention_removes_the_versions_artifact_with_its_credentials():
    from finetune_operator.builders import modelversion

    mv = {"metadata": {"name": "chat-v1", "namespace": "team", "uid": "u1"},
          "spec": {"artifact": {"uri": "s3://models/runs/team/ft-u/adapter/", "credentialsSecretRef": {"name": "c"}}}}
    job = modelversion.artifact_cleanup_job(mv, "img", (), "http://127.0.0.1:8333")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][3:] == ["remove", "s3://models/runs/team/ft-u/adapter"]
    assert {e["name"] for e in container["env"]} >= {"AWS_ENDPOINT_URL_S3", "FINETUNE_OUTPUT_AWS_ACCESS_KEY_ID"}
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u1"


def test_scratch_entries_are_where_the_trainer_writes_its_scratch():
    """What the cleanup removes is what the trainer's own config says is scratch, and the
    artifact directory the trainer writes is not among it."""
    rendered = trainer_config.parse_config(builders.trainer_config_dict(OWNER, spec(), SETTINGS))
    run = rendered.output_path
    scratch = {run / entry for entry in builders.SCRATCH_ENTRIES}
    assert {rendered.checkpoints_path, rendered.prepared_path, rendered.progress_path} == scratch
    assert not scratch & {run / "adapter", run / "model", run / "results.json", run / "evaluation.json"}


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("pvc://store/.", id="claim-root-with-dot"),
        pytest.param("pvc://store", id="bare-claim"),
        pytest.param("pvc://store/", id="claim-root-with-slash"),
        pytest.param("pvc://store//", id="claim-root-with-slashes"),
        pytest.param("pvc://store/runs/..", id="dot-dot-back-to-the-root"),
        pytest.param("pvc://store/a/../../other", id="escapes-the-claim"),
        pytest.param("pvc://store/a?x=1", id="query"),
        pytest.param("s3://bucket", id="s3-bucket-root"),
        pytest.param("s3://bucket/", id="s3-bucket-root-with-slash"),
        pytest.param("s3://bucket/runs/..", id="s3-dot-dot-back-to-the-root"),
        pytest.param("/", id="filesystem-root"),
        pytest.param("file:///", id="file-root"),
        pytest.param("/var/lib/kubelet/pods", id="node-path-not-allowed"),
        pytest.param("/artifacts", id="whole-allowed-prefix-would-mount-above-it"),
    ],
)
def test_removal_job_refuses_locations_it_must_never_remove(location):
    from finetune_operator.builders import cleanup

    job = cleanup.removal_job(name="x", namespace="team", location=location, image="img", labels={},
                              allowed_host_paths=("/artifacts",))
    assert job is None


@pytest.mark.parametrize(
    ("location", "removed", "volume"),
    [
        pytest.param(
            "pvc://store/runs//ft-1/adapter/", ["/mnt/pvc/store/runs/ft-1/adapter"],
            {"persistentVolumeClaim": {"claimName": "store"}}, id="normalised-before-use",
        ),
        pytest.param(
            "file:///artifacts/ft-1/adapter", ["/artifacts/ft-1/adapter"],
            {"hostPath": {"path": "/artifacts/ft-1", "type": "DirectoryOrCreate"}}, id="allowed-node-path-from-its-parent",
        ),
    ],
)
def test_removal_job_of_a_whole_version_location(location, removed, volume):
    """Retention removes a version's whole artifact location (never a root, never unallowed)."""
    from finetune_operator.builders import cleanup

    job = cleanup.removal_job(name="x", namespace="team", location=location, image="img", labels={},
                              allowed_host_paths=("/artifacts",))
    assert _removed(job) == (removed, volume)


@pytest.mark.parametrize(
    ("output", "settings", "problem"),
    [
        pytest.param("/var/lib/kubelet", SETTINGS, "FINETUNE_ALLOWED_HOST_PATHS: none", id="no-node-path-allowed-by-default"),
        pytest.param("file:///etc", HOST_PATHS, "FINETUNE_ALLOWED_HOST_PATHS: /artifacts", id="file-uri-outside-the-prefixes"),
        pytest.param("/artifacts/../etc", HOST_PATHS, "'..' segment", id="dot-dot-out-of-an-allowed-prefix"),
        pytest.param("pvc://store/.", SETTINGS, "'.' segment", id="claim-root-with-dot"),
        pytest.param("pvc://store/", SETTINGS, "is the root of a claim", id="claim-root"),
    ],
)
def test_unusable_output_location_is_a_render_error_naming_the_field(output, settings, problem):
    """The builders' own guard: a spec that never went through the model (an object stored before
    a rule existed) still cannot mount or write outside what it may."""
    ftj = spec().model_copy(update={"output": spec().output.model_copy(update={"uri": output})})
    with pytest.raises(RenderError) as caught:
        builders.train_job(OWNER, ftj, settings)
    assert str(caught.value).startswith("spec.output.uri: ") and problem in str(caught.value)
    assert builders.cleanup_job(OWNER, ftj, settings) is None


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        pytest.param("uid-1", "pvc://finetune-artifacts/ft-uid-1", id="first-run"),
        pytest.param("uid-2", "pvc://finetune-artifacts/ft-uid-2", id="same-name-re-created"),
    ],
)
def test_every_run_writes_to_a_location_of_its_own(uid, expected):
    owner = Owner(name="ft", namespace="team", uid=uid)
    assert builders.output_uri(owner, spec(), SETTINGS) == expected
    assert builders.trainer_config_dict(owner, spec(), SETTINGS)["output"]["dir"] == expected


# --- names: every child of the longest allowed name is a valid name -------------------------------

def test_every_child_of_the_longest_allowed_name_fits_in_a_dns_label():
    """The admission limit on metadata.name comes from the suffixes the builders really use."""
    from finetune_operator.api.finetunejob import MAX_EVAL_ATTEMPT, MAX_NODES, NAME_MAX_LENGTH

    owner = Owner(name="a" * NAME_MAX_LENGTH, namespace="team", uid="uid-1")
    ftj = spec(resources={"nodes": MAX_NODES, "gpusPerNode": 1}, deleteArtifactsOnDelete=True)
    objects = [
        *builders.setup_objects(owner, ftj, SETTINGS),
        builders.prepare_job(owner, ftj, SETTINGS),
        builders.train_job(owner, ftj, SETTINGS),
        builders.eval_job(owner, ftj, SETTINGS, attempt=MAX_EVAL_ATTEMPT),
        builders.cleanup_job(owner, ftj, SETTINGS),
    ]
    names = {obj["metadata"]["name"] for obj in objects}
    # An Indexed Job's Pods are named (and host-named) <job>-<index>.
    names.add(f"{builders.train_job_name(owner.name)}-{MAX_NODES - 1}")
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    assert all(len(name) <= 63 and dns_label.match(name) for name in names), sorted(names, key=len)[-1]
    assert max(len(name) for name in names) == 63  # the limit is tight, not guessed


DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@pytest.mark.parametrize("length", [1, 20, 50, 55, 56, 57, 63, 100, 253])
def test_children_made_from_the_name_alone_are_refused_only_where_the_jobs_are(length):
    """The dry runs skip ServiceAccount, Role and RoleBinding (dryrun.NAME_ONLY_KINDS): whenever the
    API server would accept every Job of a name, it accepts those too (same labels, looser names)."""
    from finetune_operator.k8s.dryrun import NAME_ONLY_KINDS

    owner = Owner(name=("a" * length), namespace="team", uid="uid-1")
    ftj = spec()
    jobs = [builders.prepare_job(owner, ftj, SETTINGS), builders.train_job(owner, ftj, SETTINGS), builders.eval_job(owner, ftj, SETTINGS)]
    name_only = [obj for obj in builders.setup_objects(owner, ftj, SETTINGS) if obj["kind"] in NAME_ONLY_KINDS]
    assert {obj["kind"] for obj in name_only} == set(NAME_ONLY_KINDS)
    jobs_accepted = all(len(job["metadata"]["name"]) <= 63 for job in jobs)  # a Job's name becomes a label value
    if not jobs_accepted:
        return
    job_labels = jobs[0]["metadata"]["labels"]
    for obj in name_only:
        assert DNS_SUBDOMAIN.fullmatch(obj["metadata"]["name"]) and len(obj["metadata"]["name"]) <= 253
        assert obj["metadata"]["labels"].items() <= job_labels.items()
        for binding in obj.get("subjects", []) + ([obj["roleRef"]] if "roleRef" in obj else []):
            assert DNS_SUBDOMAIN.fullmatch(binding["name"])
