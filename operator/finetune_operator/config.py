"""Operator configuration, read once from the environment at start-up.

Every setting is a typed field with its environment variable and help text next to it, so the
table in the chart's values, the docs and the validation all come from one place. Parsing is
strict: a bad value stops the operator before it watches anything, with a message that names
the variable, the value and what would be accepted (the entry point exits with status 2).

`KUBECONFIG` is deliberately not a field here: kopf's default login (and the Kubernetes client
the `k8s` layer uses) read it themselves, and in a Pod the service-account token wins.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "FINETUNE_"

_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0", ""}

Port = Annotated[int, Field(ge=0, le=65535)]


class ConfigError(ValueError):
    """The environment holds a value the operator cannot run with."""


class OperatorConfig(BaseModel):
    """Settings of one operator process. Field `x` is read from `FINETUNE_X`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    watch_namespaces: tuple[str, ...] = Field(
        default=(),
        description="Comma-separated namespaces to watch; empty watches the whole cluster.",
    )
    log_format: Literal["json", "text"] = Field(
        default="text", description="`json` (one object per line, for log pipelines) or `text`."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Python logging level of the operator and kopf. kopf's success line for every run of an "
        "event handler, timer or daemon shows at DEBUG only (thousands a minute under load)."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address the Prometheus /metrics server binds to."
    )
    metrics_port: Port = Field(
        default=8080, description="Port of the Prometheus /metrics server; 0 disables it."
    )
    health_host: str = Field(
        default="127.0.0.1", description="Address the liveness endpoint (/healthz) binds to."
    )
    health_port: Port = Field(
        default=8081, description="Port of the liveness endpoint (/healthz); 0 disables it."
    )
    peering: bool = Field(
        default=False,
        description="`on`: coordinate replicas through kopf peering (needs the kopf.dev peering "
        "CRDs and a peering object); `off`: run standalone (one replica).",
    )
    peering_name: str = Field(
        default="finetune-operator", description="Name of the kopf peering object when peering is on."
    )
    leader_election: bool = Field(
        default=False,
        description="`on`: several replicas run, one active: the one holding the coordination.k8s.io "
        "Lease FINETUNE_LEADER_ELECTION_NAMESPACE/FINETUNE_LEADER_ELECTION_NAME runs the controllers, the "
        "others wait and take over when it stops renewing; `off`: this process always acts (one replica).",
    )
    leader_election_namespace: str = Field(
        default="",
        description="Namespace of the leader-election Lease (the chart: the release namespace); "
        "required when leader election is on.",
    )
    leader_election_name: str = Field(
        default="finetune-operator",
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="Name of the leader-election Lease.",
    )
    lease_duration_seconds: int = Field(
        default=15,
        ge=2,
        le=3600,
        description="How long a standby waits, from the last renewal it saw, before it takes the Lease "
        "of a leader that stopped renewing (killed, node lost): the failover time is about this plus "
        "the operator's start-up.",
    )
    lease_renew_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A leader that could not renew its Lease for this long stops (exits) before a standby "
        "may take over; less than FINETUNE_LEASE_DURATION_SECONDS.",
    )
    lease_retry_period_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the leader renews the Lease and a standby checks it; less than "
        "FINETUNE_LEASE_RENEW_DEADLINE_SECONDS.",
    )
    gpu_hour_price: float = Field(
        default=0.0,
        ge=0.0,
        description="Price of one GPU-hour, used to estimate the cost of a FineTuneJob; "
        "0 leaves the cost unestimated.",
    )

    gpu_sustained_flops: float = Field(
        default=4.0e14,
        ge=0.0,
        description="Training FLOP/s one GPU sustains (peak x model FLOPs utilisation; 4e14 is an H100's 989 "
        "TFLOP/s bf16 at about 40%), for spec.budget estimates before a training reports progress; 0 turns "
        "those off (the estimate then comes with the first progress report).",
    )

    trainer_image: str = Field(
        default="ghcr.io/finetune-operator/trainer:0.1.0",
        min_length=1,
        description="Trainer image for FineTuneJobs that do not name one in spec.image.",
    )
    artifact_store: str = Field(
        default="pvc://finetune-artifacts",
        pattern=r"^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?|s3://[a-z0-9][a-z0-9.-]+[a-z0-9](/.*)?|/.+)$",
        description="Where artifacts go when a FineTuneJob has no spec.output.uri: pvc://<claim> "
        "(created per namespace when missing, never deleted with a job), s3://<bucket>[/prefix] "
        "or an absolute path; each run writes under <store>/<job name>-<job uid>.",
    )
    allowed_host_paths: tuple[str, ...] = Field(
        default=(),
        description="Comma-separated node directories (absolute paths) under which a FineTuneJob's "
        "spec.output.uri may be a node path (absolute or file:///), mounted into its Pods as a "
        "hostPath. Empty (the default) refuses node paths: a hostPath lets whoever creates a "
        "FineTuneJob read, write and delete files on the node. For single-node and dev clusters only.",
    )
    artifact_store_size: str = Field(
        default="100Gi", description="Size requested for the artifact store claim the operator creates."
    )
    model_cache: str = Field(
        default="",
        pattern=r"^(|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?|/.+)$",
        description="A Hugging Face hub cache (the layout huggingface_hub reads) that every trainer "
        "Pod mounts at /var/cache/huggingface/hub, with HF_HUB_CACHE pointing there: hf://<org>/<name> "
        "base models download into it once and every later job reuses them (read-only with hubOffline): "
        "pvc://<claim> (ReadWriteMany) or an absolute node path. Empty (the default): none; each Pod "
        "downloads into its scratch space.",
    )
    model_cache_max_size: str = Field(
        default="",
        pattern=r"^(|[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?)$",
        description="Bound on the model cache's size (a quantity: 200Gi): after a download, the trainer "
        "evicts the least recently used models, whole repos, until the cache fits; never the model the "
        "job uses nor one used or written in the last 10 minutes. Empty (the default): unbounded.",
    )
    evaluation_cache: str = Field(
        default="",
        pattern=r"^(|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?|/.+)$",
        description="Where evaluation Pods keep the base model's answers (mounted at "
        "/var/cache/finetune/evaluations): a later job that asks the same base model the same prompts with "
        "the same decoding reuses them and generates only its candidate's. pvc://<claim> (ReadWriteMany; a "
        "claim is per namespace) or an absolute node path (one cache per node, shared by every namespace on "
        "it; a hostPath volume, which Pod Security baseline and restricted refuse). Empty (the default): "
        "none; every job evaluates its base again.",
    )
    trainer_service_account_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations on the ServiceAccount `<job>-trainer` of every FineTuneJob, as a JSON "
        "object: how a workload identity is bound to the Pods that read and write s3:// locations without a "
        "credentialsSecretRef, e.g. {\"eks.amazonaws.com/role-arn\": \"arn:aws:iam::123456789012:role/finetune\"} "
        "(IRSA) or {\"iam.gke.io/gcp-service-account\": ...}. Empty (the default): none.",
    )
    hub_offline: bool = Field(
        default=False,
        description="Trainer Pods get HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1: nothing asks the "
        "Hub, only the model cache answers (air-gapped clusters, the dev cluster, CI).",
    )
    hub_endpoint: str = Field(
        default="",
        pattern=r"^(|https?://[^\s/@]+(/\S*)?)$",
        description="Hugging Face Hub endpoint (a mirror or proxy) given as HF_ENDPOINT to the Pods "
        "that download hf:// base models. Empty (the default): https://huggingface.co.",
    )
    s3_endpoint: str = Field(
        default="",
        pattern=r"^(|https?://[^\s/@]+(/\S*)?)$",
        description="Endpoint URL of an S3-compatible object store (MinIO, SeaweedFS, Ceph...) for s3:// "
        "locations, given to the Pods that use them as AWS_ENDPOINT_URL_S3. Empty (the default): AWS S3. "
        "Credentials come from each location's credentialsSecretRef, else the workload identity.",
    )
    retain_versions: int = Field(
        default=10,
        ge=1,
        le=10000,
        description="Artifacts of the newest N ModelVersions per model are kept (and any in "
        "Production or named by a Rollout); older artifacts are deleted, their records stay.",
    )
    workers: int = Field(
        default=16, ge=1, le=256, description="Threads that run reconciles in parallel."
    )

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("watch_namespaces")
    @classmethod
    def _namespaces_are_dns_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for namespace in value:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
                raise ValueError(
                    f"{namespace!r} is not a namespace name (lowercase letters, digits and '-', "
                    "at most 63 characters)"
                )
        return value

    @field_validator("trainer_service_account_annotations", mode="before")
    @classmethod
    def _annotations_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not a JSON object of annotations: {exc}") from None
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ValueError("a JSON object of string annotations, e.g. {\"eks.amazonaws.com/role-arn\": \"arn:...\"}")
        for key in value:
            if not re.fullmatch(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", key) or len(key) > 316:
                raise ValueError(f"{key!r} is not an annotation key")
        return value

    @field_validator("allowed_host_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_host_paths")
    @classmethod
    def _absolute_normalised_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        normalised = []
        for path in value:
            segments = [segment for segment in path.split("/") if segment]
            if not path.startswith("/") or any(segment in (".", "..") for segment in segments):
                raise ValueError(f"{path!r} is not an absolute path without '.' or '..' segments")
            if not segments:
                raise ValueError("'/' would allow every node path; name the directories to allow")
            normalised.append("/" + "/".join(segments))
        return tuple(normalised)

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("peering", "leader_election", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        if isinstance(value, str):
            word = value.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            raise ValueError("expected on or off")
        return value

    @model_validator(mode="after")
    def _leader_election_settings(self) -> OperatorConfig:
        if not self.leader_election:
            return self
        if self.peering:
            raise ValueError(
                "FINETUNE_LEADER_ELECTION=on and FINETUNE_PEERING=on: choose one way to run several "
                "replicas (leader election is the one that keeps a single replica active); set FINETUNE_PEERING=off"
            )
        if not self.leader_election_namespace:
            raise ValueError(
                "FINETUNE_LEADER_ELECTION_NAMESPACE is empty: leader election needs the namespace of its Lease "
                "(the operator's own namespace)"
            )
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.leader_election_namespace):
            raise ValueError(f"FINETUNE_LEADER_ELECTION_NAMESPACE={self.leader_election_namespace!r} is not a namespace name")
        if not self.lease_retry_period_seconds < self.lease_renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(
                f"FINETUNE_LEASE_RETRY_PERIOD_SECONDS ({self.lease_retry_period_seconds:g}) < "
                f"FINETUNE_LEASE_RENEW_DEADLINE_SECONDS ({self.lease_renew_deadline_seconds:g}) < "
                f"FINETUNE_LEASE_DURATION_SECONDS ({self.lease_duration_seconds}) must hold, so that a leader "
                "that cannot renew stops before a standby takes over; e.g. 2, 10 and 15"
            )
        return self

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces

    @property
    def liveness_endpoint(self) -> str | None:
        """The URL kopf serves its liveness probe on, or None when disabled."""
        if not self.health_port:
            return None
        host = f"[{self.health_host}]" if ":" in self.health_host else self.health_host
        return f"http://{host}:{self.health_port}/healthz"

    @classmethod
    def env_name(cls, field: str) -> str:
        return ENV_PREFIX + field.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read the settings from `environ` (default: the process environment).

        Raises ConfigError naming the first offending variable(s).
        """
        environ = os.environ if environ is None else environ
        raw = {
            name: environ[cls.env_name(name)]
            for name in cls.model_fields
            if cls.env_name(name) in environ
        }
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                variable = cls.env_name(field) if field else "environment"
                value = raw.get(field, "")
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"{variable}={value!r}: {message}" if field else message)
            raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


_current: OperatorConfig | None = None


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(quantity: str) -> int:
    """Bytes of a size setting (`200Gi`, `500M`, `1024`); 0 for an empty one."""
    import re

    match = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T)?", quantity or "")
    return int(match.group(1)) * _UNITS[match.group(2) or ""] if match else 0


def current() -> OperatorConfig:
    """The configuration of this process, read from the environment once."""
    global _current
    if _current is None:
        _current = OperatorConfig.from_env()
    return _current
