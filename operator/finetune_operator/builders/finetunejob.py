"""The child objects of a FineTuneJob, rendered as plain dicts.

Every child has a deterministic name derived from the FineTuneJob's name, its labels and an
ownerReference, so applying the same spec twice (a restarted operator, a resync) creates
nothing new:

    <name>-config     ConfigMap  config.yaml (the trainer config), dataset.jsonl (inline data)
    <name>-progress   ConfigMap  the trainer's latest progress line, patched by the trainer
    <name>-trainer    ServiceAccount + Role + RoleBinding: get/patch of <name>-progress only
    <name>-prepare    Job        data preparation
    <name>-train      Job        training (an Indexed Job with a headless Service for >1 node)
    <name>-cleanup    Job        on deletion, when asked: removes the run's scratch (not owned)

Every run writes to a location of its own, <spec.output.uri or the artifact store>/<name>-<uid>:
a FineTuneJob deleted and applied again under the same name never resumes from, or overwrites,
what an earlier run wrote (an adapter a ModelVersion may reference). Node paths (absolute or
file://) are mounted as hostPath volumes, so only under the prefixes the operator allows.

The progress channel is deliberately narrow: the trainer's ServiceAccount may read and patch
exactly one ConfigMap, by name, and nothing else. The operator watches those ConfigMaps.
Secrets are narrow too: the API key of a synthetic dataset's teacher reaches only the prepare
Pod, as an environment variable from a secretKeyRef; the config names the variable, not the key.

The trainer config is rendered into `finetune_trainer.config.TrainerConfig` — the one schema
the trainer reads — and validated here, so a spec the trainer would refuse is refused before
any Pod starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from finetune_trainer import config as trainer_config
from finetune_trainer import exitcodes, storage
from finetune_trainer import evalcache, modelcache, schema
from finetune_trainer.schema import shared_fields

from finetune_operator.api.common import Location, LocationError, parse_location
from finetune_operator.api.finetunejob import DataSource, FineTuneJobSpec, SyntheticDataSpec
from finetune_operator.builders import cleanup
from finetune_operator.builders.labels import finetunejob_child_labels
from finetune_operator.builders.security import RUN_AS_USER, restricted_pod_security_context, restricted_security_context

CONFIG_DIR = "/etc/finetune"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
INLINE_DATASET_FILE = f"{CONFIG_DIR}/dataset.jsonl"
SYNTHETIC_API_KEY_ENV = trainer_config.SYNTHETIC_API_KEY_ENV
PVC_MOUNT_ROOT = "/mnt/pvc"
SCRATCH_DIR = "/tmp"
LOCAL_OUTPUT_DIR = "/workspace/output"  # used when artifacts go to s3://
MODEL_CACHE_DIR = "/var/cache/huggingface/hub"  # HF_HUB_CACHE when the operator has a model cache
EVALUATION_CACHE_DIR = "/var/cache/finetune/evaluations"  # the evaluation cache in evaluate Pods
CONTAINER = "trainer"
RENDEZVOUS_PORT = 29500
PROGRESS_KEY = "progress"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
STAGE_LABEL = "finetune.ai/stage"
# Set by the Job controller on each Pod of an Indexed Job: the node rank of a multi-node run.
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
TRAINER_UID = RUN_AS_USER  # the trainer image's user
# What a run writes in its output location besides the artifact: the trainer's defaults for the
# checkpoints, the prepared dataset and the progress log (TrainerConfig.checkpoints_path,
# prepared_path, progress_path). spec.deleteArtifactsOnDelete removes these and nothing else:
# the adapter/ or model/ directory beside them is what a ModelVersion references.
SCRATCH_ENTRIES = ("checkpoints", "data", "progress.jsonl")


class RenderError(ValueError):
    """The spec cannot be turned into a trainer config; the message names the field and the fix."""


@dataclass(frozen=True)
class Owner:
    """The FineTuneJob the children belong to."""

    name: str
    namespace: str
    uid: str
    api_version: str = "finetune.ai/v1alpha1"
    kind: str = "FineTuneJob"


@dataclass(frozen=True)
class Settings:
    """Operator-wide defaults (from its configuration)."""

    trainer_image: str = "ghcr.io/finetune-operator/trainer:0.1.0"
    artifact_store: str = "pvc://finetune-artifacts"
    artifact_store_size: str = "100Gi"
    image_pull_policy: str = "IfNotPresent"
    # Node directories under which spec.output.uri may be a node path (mounted as a hostPath).
    allowed_host_paths: tuple[str, ...] = ()
    # A Hugging Face hub cache (pvc://<claim> or a node path) mounted read-only in trainer Pods.
    model_cache: str = ""
    # Bound on the model cache (bytes; 0: unbounded): the downloading Pods evict LRU repos to fit.
    model_cache_max_bytes: int = 0
    # Annotations of every trainer ServiceAccount (a workload identity binding: IRSA, GKE WI...).
    trainer_service_account_annotations: tuple[tuple[str, str], ...] = ()
    hub_offline: bool = False
    # Endpoint URL of an S3-compatible store, given to the Pods that use s3:// locations.
    s3_endpoint: str = ""
    # HF_ENDPOINT of the Pods that download hf:// models (a mirror or proxy); empty: the Hub.
    hub_endpoint: str = ""
    # Where base models' generations are kept for later evaluations (pvc://<claim> or a node path).
    evaluation_cache: str = ""
    # Sustained training FLOP/s of one GPU, for budget estimates before training reports progress.
    gpu_sustained_flops: float = 4.0e14


def config_map_name(name: str) -> str:
    return f"{name}-config"


def progress_name(name: str) -> str:
    return f"{name}-progress"


def trainer_account_name(name: str) -> str:
    return f"{name}-trainer"


def prepare_job_name(name: str) -> str:
    return f"{name}-prepare"


def train_job_name(name: str) -> str:
    return f"{name}-train"


MSG_HOST_PATH_REFUSED = (
    "node path {path} is not under a directory the operator allows (its setting allowedHostPaths, "
    "FINETUNE_ALLOWED_HOST_PATHS: {allowed}); use pvc:// or s3://, or ask the operator's admin to allow it"
)


def run_directory_name(owner: Owner) -> str:
    """The run's own directory: a FineTuneJob re-created with the same name gets a new uid."""
    return f"{owner.name}-{owner.uid}" if owner.uid else owner.name


def output_location(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> Location:
    """Where this run writes (checkpoints, prepared data, the artifact), normalised:
    <spec.output.uri, else the artifact store>/<name>-<uid>.

    Raises RenderError when the location is unusable, or a node path the operator does not allow.
    """
    field = "spec.output.uri" if spec.output.uri else "the operator's artifact store"
    try:
        base = parse_location(spec.output.uri or settings.artifact_store, allow_root=not spec.output.uri)
        location = base.child(run_directory_name(owner))
    except LocationError as exc:
        raise RenderError(f"{field}: {exc}") from None
    if spec.output.uri and base.is_host_path and not cleanup.host_path_allowed(base, settings.allowed_host_paths):
        allowed = ", ".join(settings.allowed_host_paths) or "none"
        raise RenderError(f"{field}: " + MSG_HOST_PATH_REFUSED.format(path=base.host_path, allowed=allowed))
    return location


def output_uri(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> str:
    """The run's output location as a URI (see `output_location`)."""
    return str(output_location(owner, spec, settings))


def prepared_data_uri(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> str | None:
    """Where the run's prepared data stays (the trainer's default <output>/data), for replay by a
    later job; None for object storage, where it never leaves the Pod's local output."""
    location = output_location(owner, spec, settings)
    return None if location.scheme == "s3" else str(location.child("data"))


def host_paths_allowed(settings: Settings) -> tuple[str, ...]:
    """Node paths the operator may mount: the allowed prefixes, and its own artifact store."""
    try:
        store = parse_location(settings.artifact_store)
    except LocationError:
        return settings.allowed_host_paths
    return settings.allowed_host_paths + ((store.host_path,) if store.is_host_path and not store.is_root else ())


def claims(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> list[str]:
    """PersistentVolumeClaims the trainer Pods mount (named by pvc:// locations)."""
    uris = [*input_uris(spec), output_uri(owner, spec, settings)]
    return sorted({urlsplit(u).netloc for u in uris if u.startswith("pvc://")})


def artifact_store_claim(settings: Settings) -> str | None:
    """The claim of the default artifact store, which the operator creates when missing."""
    if settings.artifact_store.startswith("pvc://"):
        return urlsplit(settings.artifact_store).netloc
    return None


# --- trainer config ------------------------------------------------------------------------------

# The API's precision as the trainer's (bf16, fp16) mixed-precision switches.
_PRECISION: dict[str, tuple[bool | str, bool]] = {
    "auto": ("auto", False), "bf16": (True, False), "fp32": (False, False), "fp16": (False, True),
}


def trainer_config_dict(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> dict[str, Any]:
    """The TrainerConfig this spec asks for, validated by the trainer's own model."""
    out = output_uri(owner, spec, settings)
    output: dict[str, Any] = {"dir": out, "uri": out}
    if output_location(owner, spec, settings).scheme == "s3":
        output = {"dir": LOCAL_OUTPUT_DIR, "upload_uri": out, "uri": out}
    hp = spec.hyperparameters
    bf16, fp16 = _PRECISION[hp.precision]
    adaptation: dict[str, Any] = {"type": spec.adaptation.type.value, **shared_fields(spec.adaptation, schema.LoraFields)}
    if spec.adaptation.target_modules:
        adaptation["target_modules"] = list(spec.adaptation.target_modules)
    dataset = spec.dataset
    rendered: dict[str, Any] = {
        "model": {
            "uri": spec.base_model.uri,
            "gguf_file": spec.base_model.gguf_file,
            "revision": spec.base_model.revision,
            "cache_dir": f"{SCRATCH_DIR}/finetune-cache/models",
            **_starting_adapter(spec),
        },
        "method": spec.method.value,
        "adaptation": adaptation,
        "dataset": {
            **_dataset_source(spec),
            "format": dataset.format.value,
            "chat_template": dataset.chat_template,
            "split": shared_fields(dataset.split, schema.SplitFields),
            "dedup": shared_fields(dataset.dedup, schema.DedupFields),
            "pii_policy": dataset.pii_policy.value,
            "balance_by": dataset.balance_by,
            "balance_mode": dataset.balance_mode,
            "balance_cap": dataset.balance_cap,
            "max_records": dataset.max_records,
            "task_sampling": dataset.task_sampling,
            "task_temperature": dataset.task_temperature,
            "seed": dataset.seed,
        },
        "hyperparameters": {
            **shared_fields(hp, schema.HyperparameterFields),
            "bf16": bf16,
            "fp16": fp16,
            "eval_steps": hp.eval_steps or checkpoint_interval(spec),
        },
        "dpo": shared_fields(spec.dpo, schema.DpoFields),
        "early_stopping": shared_fields(spec.early_stopping, schema.EarlyStoppingFields),
        "checkpointing": {
            "every_n_steps": checkpoint_interval(spec),
            "keep_last": spec.checkpointing.keep_last,
            "resume": spec.checkpointing.enabled,
        },
        "output": output,
        "evaluation": {
            "enabled": spec.evaluation.enabled,
            "task_metric": spec.evaluation.task_metric,
            "format_schema": spec.evaluation.format_schema,
            "max_samples": spec.evaluation.max_samples,
            "compare_with_base": spec.evaluation.compare_with_base,
            "suites": spec.evaluation.suites.model_dump(),
            "max_new_tokens": spec.evaluation.max_new_tokens,
            "sample_count": spec.evaluation.sample_count,
            "reuse_base": spec.evaluation.reuse_base_evaluation,
            "parent_test_split": parent_test_split(spec),
            # Drawn into the model card image; the operator still judges them at registration.
            "gates": [g.model_dump(mode="json", by_alias=False) for g in spec.evaluation.effective_gates(parent=continues(spec))],
        },
        "termination_message_path": "/dev/termination-log",
        "pvc_mount_root": PVC_MOUNT_ROOT,
        "seed": hp.seed,
    }
    if dataset.pii_types:
        rendered["dataset"]["pii_types"] = [t.value for t in dataset.pii_types]
    rendered = _drop_none(rendered)
    try:
        trainer_config.parse_config(rendered, origin=f"FineTuneJob {owner.namespace}/{owner.name}")
    except trainer_config.ConfigFileError as exc:
        problem = str(exc).split("invalid trainer config: ", 1)[-1].removeprefix("<root>: ").removeprefix("Value error, ")
        raise RenderError(f"{_spec_field_of(problem)}: {_in_spec_terms(problem)}") from None
    return rendered


def _teacher(teacher: SyntheticDataSpec, key_env: str) -> dict[str, Any]:
    """A teacher model as the trainer reads it: the variable holding its API key, never the key
    (the prepare Pod gets that variable from the Secret, see `_secret_env`)."""
    return {
        "endpoint": teacher.endpoint,
        "model": teacher.model,
        "prompt": teacher.prompt,
        "num_examples": teacher.num_examples,
        "seed_examples": [dict(example) for example in teacher.seed_examples],
        "temperature": teacher.temperature,
        "api_key_env": key_env if teacher.secret_ref is not None else None,
    }


def inline_source_file(source: str) -> str:
    """Where a mixed dataset's inline source is mounted (a key of the config ConfigMap)."""
    return f"{CONFIG_DIR}/dataset-{source}.jsonl"


def source_key_env(index: int) -> str:
    """The variable holding the API key of the teacher of dataset.sources[index]."""
    return f"{SYNTHETIC_API_KEY_ENV}_{index}"


def replay_data_uri(source: DataSource) -> str:
    """The prepared data a replay source reads, as the operator resolved it from the ModelVersion."""
    assert source.replay is not None
    uri = source.replay._data_uri
    if uri is None:
        raise RenderError(
            f"spec.dataset.sources: replay of ModelVersion {source.replay.model_version} was not resolved to its data; "
            "the operator resolves it before rendering"
        )
    return uri


def _mixed_source(index: int, source: DataSource) -> dict[str, Any]:
    rendered: dict[str, Any] = {"name": source.name, "records": source.records, "weight": source.weight, "task": source.task}
    if source.synthetic is not None:
        rendered["synthetic"] = _teacher(source.synthetic, source_key_env(index))
        rendered.update(seed_from=source.seed_from, seed_count=source.seed_count)
    elif source.replay is not None:
        rendered.update(replay=replay_data_uri(source), replay_of=source.replay.model_version)
    else:
        rendered["source"] = source.uri if source.uri is not None else inline_source_file(source.name)
    return {key: value for key, value in rendered.items() if value is not None}


def _dataset_source(spec: FineTuneJobSpec) -> dict[str, Any]:
    """Where the records come from: a URI, the inline file in the ConfigMap, a teacher model, or
    several of these (and replayed data) mixed."""
    dataset = spec.dataset
    if dataset.sources is not None:
        return {"sources": [_mixed_source(i, s) for i, s in enumerate(dataset.sources)]}
    if dataset.synthetic is not None:
        return {"synthetic": _teacher(dataset.synthetic, SYNTHETIC_API_KEY_ENV)}
    return {"source": dataset.uri if dataset.uri is not None else INLINE_DATASET_FILE}


def _starting_adapter(spec: FineTuneJobSpec) -> dict[str, Any]:
    """The earlier version a run continues from (baseModel.modelVersion), as the trainer reads it."""
    start = spec.base_model
    if start.model_version is None:
        return {}
    if start._adapter_uri is None:
        raise RenderError(
            f"spec.baseModel.modelVersion: ModelVersion {start.model_version} was not resolved to its adapter; "
            "the operator resolves it before rendering"
        )
    return {"adapter": start._adapter_uri, "adapter_mode": start.adapter_mode, "adapter_of": start.model_version}


def continues(spec: FineTuneJobSpec) -> bool:
    """The run continues a version whose test split it is also judged on (the parent gates)."""
    return spec.base_model.model_version is not None and spec.base_model._parent_data_uri is not None


def parent_test_split(spec: FineTuneJobSpec) -> str | None:
    """The test split of the version the run continues: the candidate and that version are both
    scored on it (forgetting)."""
    return f"{spec.base_model._parent_data_uri}/test.jsonl" if continues(spec) else None


def input_uris(spec: FineTuneJobSpec) -> list[str]:
    """Every location the run reads: the base model, the data, and what was resolved from
    ModelVersions (see `resolved_uris`)."""
    return [spec.base_model.uri, *data_uris(spec), *resolved_uris(spec)]


def data_uris(spec: FineTuneJobSpec) -> list[str]:
    """The record locations the spec names: dataset.uri and the sources' URIs."""
    dataset = spec.dataset
    return [uri for uri in (dataset.uri, *(s.uri for s in dataset.sources or [])) if uri is not None]


def resolved_uris(spec: FineTuneJobSpec) -> list[str]:
    """What the operator resolved from ModelVersions of the job's namespace: the adapter the run
    continues, that version's prepared data, and the data replay sources read."""
    start = spec.base_model
    replays = [s.replay._data_uri for s in spec.dataset.sources or [] if s.replay is not None]
    return [uri for uri in (start._adapter_uri, start._parent_data_uri, *replays) if uri is not None]


# Trainer config fields -> the FineTuneJob fields they are rendered from, for error messages.
_TRAINER_TO_SPEC = {
    "checkpointing.every_n_steps": "spec.checkpointing.intervalSteps",
    "hyperparameters.eval_steps": "spec.hyperparameters.evalSteps",
    "hyperparameters.max_steps": "spec.hyperparameters.maxSteps",
    "hyperparameters.packing": "spec.hyperparameters.packing",
    "dataset.balance_cap": "spec.dataset.balanceCap",
    "dataset.balance_mode": "spec.dataset.balanceMode",
    "dataset.split": "spec.dataset.split",
    "dataset.format": "spec.dataset.format",
    "dataset.chat_template": "spec.dataset.chatTemplate",
    "dataset.source": "spec.dataset.uri",
    "dataset.synthetic": "spec.dataset.synthetic",
    "early_stopping.enabled": "spec.earlyStopping.enabled",
    "model.uri": "spec.baseModel.uri",
    "model.gguf_file": "spec.baseModel.ggufFile",
    "output.dir": "spec.output.uri",
    "method": "spec.method",
}


DEFAULT_CHECKPOINT_INTERVAL = 100


def checkpoint_interval(spec: FineTuneJobSpec) -> int:
    """spec.checkpointing.intervalSteps, or its default, which follows the field it depends on: the
    smallest multiple of hyperparameters.evalSteps that is at least 100 (100 without evalSteps), so
    setting evalSteps alone never makes the default interval invalid."""
    if spec.checkpointing.interval_steps is not None:
        return spec.checkpointing.interval_steps
    every = spec.hyperparameters.eval_steps
    if not every:
        return DEFAULT_CHECKPOINT_INTERVAL
    return every * -(-DEFAULT_CHECKPOINT_INTERVAL // every)


def _in_spec_terms(problem: str) -> str:
    """A trainer-config problem in the FineTuneJob's field names (spec.checkpointing.intervalSteps,
    never checkpointing.every_n_steps): users write the spec, not the trainer's config."""
    for key, spec_field in sorted(_TRAINER_TO_SPEC.items(), key=lambda item: -len(item[0])):
        problem = re.sub(rf"(?<![\w.]){re.escape(key)}\b", spec_field, problem)
    return problem


def _spec_field_of(problem: str) -> str:
    """The spec field a trainer-config problem is about: the first trainer field it names."""
    hits = [(problem.find(key), spec_field) for key, spec_field in _TRAINER_TO_SPEC.items() if key in problem]
    return min(hits)[1] if hits else "spec"


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


# --- objects -------------------------------------------------------------------------------------


def _metadata(owner: Owner, name: str, stage: str | None = None, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    labels = finetunejob_child_labels(owner.name)
    if stage:
        labels[STAGE_LABEL] = stage
    labels.update(extra_labels or {})
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": owner.api_version,
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def config_map(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> dict[str, Any]:
    """`<name>-config`: the rendered trainer config (YAML is a superset of this JSON)."""
    data = {"config.yaml": json.dumps(trainer_config_dict(owner, spec, settings), indent=2, sort_keys=True)}
    if spec.dataset.inline is not None:
        data["dataset.jsonl"] = "".join(json.dumps(r, sort_keys=True) + "\n" for r in spec.dataset.inline)
    for source in spec.dataset.sources or []:
        if source.inline is not None:
            key = inline_source_file(source.name).rsplit("/", 1)[1]
            data[key] = "".join(json.dumps(r, sort_keys=True) + "\n" for r in source.inline)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(owner, config_map_name(owner.name)), "data": data}


def progress_config_map(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, progress_name(owner.name), stage="progress"),
        "data": {},
    }


def trainer_rbac(owner: Owner, settings: Settings | None = None) -> list[dict[str, Any]]:
    """A ServiceAccount that may get and patch its progress ConfigMap, and nothing else; annotated
    as the operator's settings say (the workload identity s3:// locations without a Secret use)."""
    name = trainer_account_name(owner.name)
    account_metadata = _metadata(owner, name)
    annotations = dict(settings.trainer_service_account_annotations) if settings else {}
    if annotations:
        account_metadata["annotations"] = {**account_metadata.get("annotations", {}), **annotations}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": account_metadata,
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(owner, name),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [progress_name(owner.name)],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(owner, name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def artifact_store_pvc(namespace: str, settings: Settings) -> dict[str, Any] | None:
    """The default artifact store's claim. Not owned by any FineTuneJob: artifacts outlive jobs."""
    claim = artifact_store_claim(settings)
    if claim is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "finetune-operator", "finetune.ai/artifact-store": "true"},
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": settings.artifact_store_size}}},
    }


# A container the kernel's OOM killer ended exits 128 + SIGKILL. The Job API cannot match the
# OOMKilled reason itself, so the exit code stands for it; disruptions (preemption, eviction,
# drain) are matched first and ignored, so a SIGKILL after a deletion's grace period never counts.
OOM_KILLED_EXIT_CODE = 137


def _pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            {
                # Preemption, eviction, node drain: not the trainer's fault, resume from a checkpoint.
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                # Bad config or data, a missing model, OOM (the trainer's own or the kernel's),
                # divergence: retrying the same Pod cannot help.
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": sorted({*exitcodes.FAIL_FAST, OOM_KILLED_EXIT_CODE}),
                },
            },
        ]
    }


def _volumes(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(owner.name)}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
    ]
    location = output_location(owner, spec, settings)
    if location.scheme == "s3":
        volumes.append({"name": "output", "emptyDir": {}})
        mounts.append({"name": "output", "mountPath": LOCAL_OUTPUT_DIR})
    elif location.is_host_path:
        # A node-local directory under an allowed prefix (single-node clusters, development):
        # the run's own directory, mounted where it is.
        volumes.append({"name": "output", "hostPath": {"path": location.host_path, "type": "DirectoryOrCreate"}})
        mounts.append({"name": "output", "mountPath": location.host_path})
    for i, claim in enumerate(claims(owner, spec, settings)):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"pvc-{i}", "mountPath": f"{PVC_MOUNT_ROOT}/{claim}"})
    if settings.model_cache.startswith("pvc://"):
        claim = urlsplit(settings.model_cache).netloc
        # Writable unless offline: jobs download into the shared cache (huggingface_hub locks
        # each file there, so jobs starting together download it once).
        read_only = settings.hub_offline
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_DIR, "readOnly": read_only})
    elif settings.model_cache:
        volumes.append({"name": "model-cache", "hostPath": {"path": settings.model_cache, "type": "Directory"}})
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_DIR, "readOnly": settings.hub_offline})
    for i, path in enumerate(node_inputs(spec, settings)):
        volumes.append({"name": f"input-{i}", "hostPath": {"path": path}})
        mounts.append({"name": f"input-{i}", "mountPath": path, "readOnly": True})
    return volumes, mounts


def node_inputs(spec: FineTuneJobSpec, settings: Settings) -> list[str]:
    """Node paths the run reads (base model, dataset) under the node directories the operator
    allows: mounted read-only where they are.  Any other absolute path is read from the image.

    What the operator itself resolved from a ModelVersion of the job's namespace (the adapter it
    continues, the data it replays) may also lie in the artifact store's node path; a path the
    user wrote may not (that store holds every namespace's runs)."""
    resolved = set(resolved_uris(spec))
    paths = []
    for uri in input_uris(spec):
        try:
            location = parse_location(uri)
        except LocationError:
            continue
        allowed = host_paths_allowed(settings) if uri in resolved else settings.allowed_host_paths
        if location.is_host_path and not location.is_root and cleanup.host_path_allowed(location, allowed):
            paths.append(location.host_path)
    return sorted(set(paths))


def _secret_env(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    """The teacher's API key, for the prepare Pod only: a secretKeyRef, so the value never
    passes through the operator, the ConfigMap or the FineTuneJob."""
    teachers = [(SYNTHETIC_API_KEY_ENV, spec.dataset.synthetic)] + [
        (source_key_env(i), s.synthetic) for i, s in enumerate(spec.dataset.sources or [])
    ]
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": teacher.secret_ref.name, "key": teacher.secret_ref.key}}}
        for env, teacher in teachers
        if teacher is not None and teacher.secret_ref is not None
    ]


# Stages whose Pods load the base model (prepare counts tokens with its tokenizer).
HUB_STAGES = ("prepare", "train", "evaluate")
HUB_TOKEN_REF_ENV = "FINETUNE_HF_TOKEN_REF"  # which Secret key the token came from (error messages)


def _hub_env(spec: FineTuneJobSpec, settings: Settings, stage: str) -> list[dict[str, Any]]:
    """Hub access for an hf:// base model, in the Pods that download it and only those: the
    operator's endpoint (HF_ENDPOINT) and the token as a secretKeyRef (HF_TOKEN). Online, the
    offline switches are set to 0 explicitly: the operator's setting wins over an image default."""
    base = spec.base_model
    if stage not in HUB_STAGES or not base.uri.startswith("hf://"):
        return []
    env: list[dict[str, Any]] = []
    if not settings.hub_offline:
        env += [{"name": "HF_HUB_OFFLINE", "value": "0"}, {"name": "TRANSFORMERS_OFFLINE", "value": "0"}]
    if settings.hub_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": settings.hub_endpoint})
    if settings.model_cache and settings.model_cache_max_bytes and not settings.hub_offline:
        env.append({"name": modelcache.CACHE_MAX_BYTES_ENV, "value": str(settings.model_cache_max_bytes)})
    ref = base.token_secret_ref
    if ref is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        env.append({"name": HUB_TOKEN_REF_ENV, "value": f"{ref.name}/{ref.key}"})
    return env


# The s3:// locations each stage reads or writes: prepare reads the dataset and the base model's
# tokenizer; train all three; evaluate the base model and the output (its report).
S3_ROLES_OF_STAGE = {
    "prepare": ("dataset", "base_model"),
    "train": ("dataset", "base_model", "output"),
    "evaluate": ("base_model", "output"),
}


def s3_locations(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> dict[str, tuple[str, str | None]]:
    """role -> (s3:// URI, name of its credentials Secret or None) for the run's s3:// locations."""
    found: dict[str, tuple[str, str | None]] = {}
    candidates = (
        # Every s3:// source of the dataset is read with dataset.credentialsSecretRef.
        ("dataset", next((u for u in data_uris(spec) if u.startswith("s3://")), ""), spec.dataset.credentials_secret_ref),
        ("base_model", spec.base_model.uri, spec.base_model.credentials_secret_ref),
        ("output", output_uri(owner, spec, settings), spec.output.credentials_secret_ref),
    )
    for role, uri, ref in candidates:
        if uri.startswith("s3://"):
            found[role] = (uri, ref.name if ref is not None else None)
    return found


def _s3_env(owner: Owner, spec: FineTuneJobSpec, settings: Settings, stage: str) -> list[dict[str, Any]]:
    """Object-store access for the s3:// locations this stage uses, and only those: each
    location's credentials as secretKeyRefs under variables of its own (the trainer hands them
    to s3fs for that location), and the operator's endpoint. A location without a Secret gets
    no credentials: the AWS SDK's default chain (the ServiceAccount's workload identity)."""
    locations = s3_locations(owner, spec, settings)
    used = [role for role in S3_ROLES_OF_STAGE.get(stage, ()) if role in locations]
    env: list[dict[str, Any]] = []
    if used and settings.s3_endpoint:
        env.append({"name": storage.ENDPOINT_ENV, "value": settings.s3_endpoint})
    for role in used:
        secret = locations[role][1]
        if secret is None:
            continue
        for key in storage.CREDENTIAL_KEYS:
            ref: dict[str, Any] = {"name": secret, "key": key}
            if key == "AWS_SESSION_TOKEN":
                ref["optional"] = True
            env.append({"name": storage.credential_env(role, key), "valueFrom": {"secretKeyRef": ref}})
    return env


def _resources(spec: FineTuneJobSpec, stage: str) -> dict[str, Any]:
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    res = spec.resources
    if res.cpu:
        limits["cpu"] = requests["cpu"] = str(res.cpu)
    if res.memory:
        limits["memory"] = requests["memory"] = str(res.memory)
    if stage == "train" and res.gpus_per_node > 0:
        limits[res.gpu_resource_name] = str(res.gpus_per_node)
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _evaluation_cache(settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The evaluation cache of evaluate Pods: (volumes, mounts, env); empty without one."""
    if not settings.evaluation_cache:
        return [], [], []
    if settings.evaluation_cache.startswith("pvc://"):
        volume: dict[str, Any] = {"persistentVolumeClaim": {"claimName": urlsplit(settings.evaluation_cache).netloc}}
    else:
        volume = {"hostPath": {"path": settings.evaluation_cache, "type": "DirectoryOrCreate"}}
    return (
        [{"name": "evaluation-cache", **volume}],
        [{"name": "evaluation-cache", "mountPath": EVALUATION_CACHE_DIR}],
        [{"name": evalcache.CACHE_ENV, "value": EVALUATION_CACHE_DIR}],
    )


def _job(owner: Owner, spec: FineTuneJobSpec, settings: Settings, stage: str, name: str) -> dict[str, Any]:
    volumes, mounts = _volumes(owner, spec, settings)
    cache_volumes, cache_mounts, cache_env = _evaluation_cache(settings) if stage == "evaluate" else ([], [], [])
    volumes, mounts = volumes + cache_volumes, mounts + cache_mounts
    env = [
        {"name": "FINETUNE_PROGRESS_CONFIGMAP", "value": progress_name(owner.name)},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "HOME", "value": SCRATCH_DIR},
        {"name": "HF_HOME", "value": f"{SCRATCH_DIR}/hf"},
        *([{"name": "HF_HUB_CACHE", "value": MODEL_CACHE_DIR}] if settings.model_cache else []),
        *([{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "TRANSFORMERS_OFFLINE", "value": "1"}]
          if settings.hub_offline else []),
        *(_secret_env(spec) if stage == "prepare" else []),
        *_s3_env(owner, spec, settings, stage),
        *_hub_env(spec, settings, stage),
        *cache_env,
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": [stage, "--config", CONFIG_FILE],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_security_context(TRAINER_UID),
    }
    resources = _resources(spec, stage)
    if resources:
        container["resources"] = resources
    res = spec.resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": trainer_account_name(owner.name),
        "terminationGracePeriodSeconds": 120 if stage == "train" else 30,
        "securityContext": restricted_pod_security_context(TRAINER_UID),
        "containers": [container],
        "volumes": volumes,
    }
    if stage in ("train", "evaluate"):
        if res.node_selector:
            pod_spec["nodeSelector"] = dict(res.node_selector)
        if res.tolerations:
            pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in res.tolerations]
        if res.affinity:
            pod_spec["affinity"] = dict(res.affinity)
        if res.priority_class_name:
            pod_spec["priorityClassName"] = res.priority_class_name
    extra_labels = {QUEUE_LABEL: res.queue_name} if (res.queue_name and stage == "train") else {}
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.max_restarts if stage == "train" else 2,
        "podFailurePolicy": _pod_failure_policy(),
        "template": {
            "metadata": {"labels": {**finetunejob_child_labels(owner.name), STAGE_LABEL: stage, **extra_labels}},
            "spec": pod_spec,
        },
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    # Created suspended when a Kueue queue admits it, or when the user paused the job.
    if extra_labels or spec.suspend:
        job_spec["suspend"] = True
    if stage == "train" and res.nodes > 1:
        _make_distributed(owner, spec, job_spec, container)
    elif stage == "train" and res.gpus_per_node > 1:
        container["command"] = ["torchrun", f"--nproc_per_node={res.gpus_per_node}", "-m", "finetune_trainer"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, name, stage=stage, extra_labels=extra_labels),
        "spec": job_spec,
    }


def _make_distributed(owner: Owner, spec: FineTuneJobSpec, job_spec: dict[str, Any], container: dict[str, Any]) -> None:
    """Indexed Job + headless Service: Pod i is node rank i; rank 0 hosts the rendezvous."""
    nodes = spec.resources.nodes
    service = train_job_name(owner.name)
    job_spec.update(completions=nodes, parallelism=nodes, completionMode="Indexed")
    job_spec["template"]["spec"]["subdomain"] = service
    master = f"{train_job_name(owner.name)}-0.{service}"
    container["env"] += [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        {"name": "NNODES", "value": str(nodes)},
        {"name": "NPROC_PER_NODE", "value": str(max(spec.resources.gpus_per_node, 1))},
        {"name": "WORLD_SIZE", "value": str(nodes * max(spec.resources.gpus_per_node, 1))},
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}},
    ]
    container["ports"] = [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}]
    container["command"] = [
        "torchrun",
        "--nnodes=$(NNODES)",
        "--nproc_per_node=$(NPROC_PER_NODE)",
        "--node_rank=$(NODE_RANK)",
        "--master_addr=$(MASTER_ADDR)",
        "--master_port=$(MASTER_PORT)",
        "-m",
        "finetune_trainer",
    ]


def prepare_job(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> dict[str, Any]:
    return _job(owner, spec, settings, "prepare", prepare_job_name(owner.name))


def train_job(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> dict[str, Any]:
    return _job(owner, spec, settings, "train", train_job_name(owner.name))


def eval_job_name(name: str, attempt: int = 1) -> str:
    return f"{name}-eval-{attempt}"


def eval_job(owner: Owner, spec: FineTuneJobSpec, settings: Settings, attempt: int = 1) -> dict[str, Any]:
    """Evaluation of the trained artifact and the base model on one node (GPUs as for training)."""
    job = _job(owner, spec, settings, "evaluate", eval_job_name(owner.name, attempt))
    container = job["spec"]["template"]["spec"]["containers"][0]
    container.pop("command", None)
    gpus = min(spec.resources.gpus_per_node, 1)
    if gpus:
        container.setdefault("resources", {}).setdefault("limits", {})[spec.resources.gpu_resource_name] = str(gpus)
    return job


def headless_service(owner: Owner) -> dict[str, Any]:
    """DNS names <name>-train-<i>.<name>-train for the Indexed Job's Pods (rendezvous)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, train_job_name(owner.name), stage="train"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {**finetunejob_child_labels(owner.name), STAGE_LABEL: "train"},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
        },
    }


def setup_objects(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> list[dict[str, Any]]:
    """Everything the Jobs need before the first one starts, in apply order."""
    objects = [config_map(owner, spec, settings), progress_config_map(owner), *trainer_rbac(owner, settings)]
    if spec.resources.nodes > 1:
        objects.append(headless_service(owner))
    return objects


def cleanup_job_name(name: str) -> str:
    return f"{name}-cleanup"


def cleanup_job(owner: Owner, spec: FineTuneJobSpec, settings: Settings) -> dict[str, Any] | None:
    """A Job that removes this run's scratch (spec.deleteArtifactsOnDelete): its checkpoints,
    prepared data and progress log. Never the adapter or model directory, which a ModelVersion
    may reference, nor anything outside the run's own location.

    None when there is nothing the operator may remove (an unusable or refused location). An
    s3:// run is removed object by object with the output's credentials (builders/cleanup.py).
    Not owned by the FineTuneJob (it is being deleted) and gone 5 minutes after it ends.
    """
    try:
        location = output_uri(owner, spec, settings)
    except RenderError:
        return None
    return cleanup.removal_job(
        name=cleanup_job_name(owner.name),
        namespace=owner.namespace,
        location=location,
        image=spec.image or settings.trainer_image,
        labels={"finetune.ai/cleanup-of": owner.name},
        entries=SCRATCH_ENTRIES,
        allowed_host_paths=host_paths_allowed(settings),
        s3_endpoint=settings.s3_endpoint,
        credentials_secret=spec.output.credentials_secret_ref.name if spec.output.credentials_secret_ref else None,
    )
