"""FineTuneJob (`ftj`): fine-tune a base model on a dataset, evaluate it, produce a ModelVersion.

The spec says what to train and on what; the status reports how far it got. Defaults are the
seed's: LoRA rank 16 / alpha 32, learning rate 2e-5, 3 epochs, 10% warmup, early stopping on
validation loss, a 70/20/10 train/validation/test split, PII blocked, and the quality gates
below. The defaults are in the CRD too, so the API server fills them in and
`kubectl get ftj NAME -o yaml` shows what will actually run.

Cross-field rules (one dataset source, split fractions summing to 1, QLoRA on GPUs, DPO on
preference data, complete custom gates) are CEL rules on the model they guard and pydantic
validators with the same messages.
"""

from __future__ import annotations

import enum
import json
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, StringConstraints, field_validator, model_validator

from finetune_trainer import schema

from finetune_operator.api.common import (
    AGE_COLUMN,
    ARTIFACT_URI_PATTERN,
    CREDENTIALS_SECRET_REF_DESCRIPTION,
    PHASE_COLUMN,
    ApiModel,
    BaseModelRef,
    Comparator,
    Condition,
    CredentialsSecretRef,
    DATA_URI_PATTERN,
    DnsLabel,
    EVALUATION_METRICS,
    GateBaseline,
    KindInfo,
    ObjectName,
    PrinterColumn,
    Quantity,
    Resource,
    SecretKeyRef,
    StatusModel,
    Toleration,
    URL_USERINFO_RE,
    VersionName,
    cel,
    cel_rules,
    check_gate_metric,
    check_json_schema,
    check_url,
    conditions_field,
    gate_metric_rule,
    location_rules,
    usable_location,
    map_list,
    max_owner_name,
    name_problem,
    name_rules,
    section,
    url_rules,
)


class TrainingMethod(enum.StrEnum):
    SFT = "sft"  # supervised fine-tuning on instruction or chat data
    DPO = "dpo"  # direct preference optimization on prompt/chosen/rejected data


class AdaptationType(enum.StrEnum):
    LORA = "lora"
    QLORA = "qlora"  # LoRA on a 4-bit quantized base: GPUs only
    FULL = "full"  # every weight trained


class DatasetFormat(enum.StrEnum):
    AUTO = "auto"  # detected from the fields of the records
    INSTRUCTION = "instruction"  # {instruction, input?, output}
    CHAT = "chat"  # {messages: [{role, content}, ...]}
    PREFERENCE = "preference"  # {prompt, chosen, rejected}


class PiiPolicy(enum.StrEnum):
    BLOCK = "block"  # fail data preparation when PII is found
    REDACT = "redact"  # replace PII with placeholders and go on
    ALLOW = "allow"  # keep records as they are (findings are still reported)


class FineTuneJobPhase(enum.StrEnum):
    PENDING = "Pending"
    PREPARING = "Preparing"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


# Messages of the cross-field rules, shared by the CEL rules and the pydantic validators.
MSG_DATASET_ONE_SOURCE = "exactly one of dataset.uri, dataset.inline, dataset.synthetic or dataset.sources must be set"
MSG_SOURCE_ONE_ORIGIN = "each of dataset.sources sets exactly one of uri, inline, synthetic or replay"
MSG_SOURCE_RECORDS_OR_WEIGHT = "a dataset source sets records or weight, not both"
MSG_SOURCE_SEED_FROM = "seedFrom applies to synthetic sources only (the teacher is shown that source's records)"
MSG_SOURCE_SEED_FROM_EARLIER = "seedFrom names a source listed earlier in dataset.sources"
MSG_SPLIT_SUM = schema.MSG_SPLIT_SUM
MSG_QLORA_GPUS = (
    "adaptation.type qlora needs resources.gpusPerNode >= 1 (4-bit quantized training runs on GPUs only)"
)
MSG_DPO_FORMAT = "method dpo needs dataset.format preference (prompt/chosen/rejected records) or auto"
MSG_PREFERENCE_NEEDS_DPO = "dataset.format preference is for method dpo"
MSG_EARLY_STOPPING_VALIDATION = (
    "earlyStopping.enabled needs dataset.split.validation > 0 (or disable early stopping)"
)
MSG_BALANCE_CAP = "dataset.balanceMode cap needs dataset.balanceCap"
MSG_BALANCE_CAP_ONLY = "dataset.balanceCap is only used with dataset.balanceMode cap"
MSG_GATE_INCOMPLETE = (
    "a gate that is not one of the defaults (taskAccuracy, formatCompliance, safety, "
    "noRegression, latency, toxicity, piiLeakage, bias) must set metric, comparator and threshold"
)
GATE_METRIC_FIELD = "spec.evaluation.gates[].metric"

# Inline records live in the object itself, and kopf keeps a copy of the spec in an annotation:
# the whole object must stay far below etcd's 1.5 MiB request limit (and annotations below
# 256 KiB in total), so inline data is for demos and small sets; real datasets go in dataset.uri.
# Measured as compact JSON (what the API server stores); config/admission/finetunejob-inline-size.yaml
# refuses it at admission with the same limit.
INLINE_MAX_BYTES = 128 * 1024
CHAT_TEMPLATE_MAX_LENGTH = 32 * 1024  # real templates (Llama 3, Qwen 2) are 1-8 KiB
MSG_INLINE_TOO_BIG = (
    f"dataset.inline holds more than {INLINE_MAX_BYTES // 1024} KiB of records; put them in a file and "
    "point dataset.uri at it (pvc://<claim>/<path>, s3://<bucket>/<key> or file:///<path>)"
)

# Every child of a FineTuneJob is named `<name><suffix>` (builders/finetunejob.py): the config and
# progress ConfigMaps, the trainer's ServiceAccount, the Jobs, the Pod host names of a multi-node
# run (`<name>-train-<rank>`) and the training Service. The longest one bounds the name.
MAX_NODES = 128
MAX_EVAL_ATTEMPT = 9
CHILD_NAME_SUFFIXES = (
    "-config",
    "-progress",
    "-trainer",
    "-prepare",
    "-train",
    f"-train-{MAX_NODES - 1}",
    f"-eval-{MAX_EVAL_ATTEMPT}",
    "-cleanup",
)
NAME_MAX_LENGTH = max_owner_name(CHILD_NAME_SUFFIXES)
# The ModelVersion it registers is `<model>-<version>` and has children of its own
# (`-model-card`, `-retention`); automatic versions are v<N>, reserved up to v99999.
MODEL_VERSION_NAME_MAX_LENGTH = max_owner_name(("-model-card", "-retention"))
AUTO_VERSION_RESERVE = len("v99999")
MSG_MODEL_VERSION_NAME = (
    f"the ModelVersion name <model>-<version> would be longer than {MODEL_VERSION_NAME_MAX_LENGTH} "
    "characters (model: spec.output.modelName, else metadata.name; version: spec.output.version, else "
    f"v<N> with up to {AUTO_VERSION_RESERVE - 1} digits); use a shorter metadata.name or set a shorter "
    "spec.output.modelName or spec.output.version"
)


class AdaptationSpec(schema.LoraFields, ApiModel):
    """Which weights are trained: LoRA adapters (the default), QLoRA, or all of them."""

    type: AdaptationType = Field(
        default=AdaptationType.LORA, description="lora, qlora (LoRA on a 4-bit base; needs GPUs) or full."
    )
    target_modules: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] | None = Field(
        default=None,
        max_length=64,
        description="Module names to adapt, e.g. [q_proj, v_proj]; empty adapts every linear layer.",
    )


MSG_ENDPOINT_CREDENTIALS = (
    "spec.dataset.synthetic.endpoint must not carry credentials (user:password@host): put the API key "
    "in a Secret and name it in spec.dataset.synthetic.secretRef"
)


class SyntheticDataSpec(ApiModel):
    """Generate training records with a teacher model behind an OpenAI-compatible endpoint."""

    model_config = {
        "json_schema_extra": cel_rules(*url_rules("endpoint", "spec.dataset.synthetic.endpoint", MSG_ENDPOINT_CREDENTIALS))
    }

    @field_validator("endpoint")
    @classmethod
    def _no_credentials(cls, endpoint: str) -> str:
        return check_url(endpoint, "spec.dataset.synthetic.endpoint", MSG_ENDPOINT_CREDENTIALS)

    endpoint: str = Field(
        max_length=2048,
        pattern=r"^https?://.+",
        description="Base URL of the OpenAI-compatible API, e.g. http://vllm.models:8000/v1.",
    )
    model: str = Field(min_length=1, max_length=253, description="Model name to request from the endpoint.")
    secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret key holding the API key, sent as a bearer token. Omit for endpoints without auth."
        ),
    )
    prompt: str = Field(
        min_length=1,
        max_length=16384,
        description="Instructions describing the task and the records to generate.",
    )
    num_examples: int = Field(default=100, ge=1, le=100000, description="How many records to generate.")
    seed_examples: list[dict[str, Any]] = Field(
        default_factory=list, max_length=50, description="Example records shown to the teacher model."
    )
    temperature: float = Field(
        default=0.7, ge=0.0, le=2.0, description="Sampling temperature of the teacher model."
    )


class StartingPoint(BaseModelRef):
    """The base model, and optionally an earlier ModelVersion of it to continue from."""

    model_version: ObjectName | None = Field(
        default=None,
        description=(
            "Continue from this ModelVersion (in this namespace; a LoRA adapter trained on baseModel.uri): "
            "continual learning. Its lineage points at it as the parent; pair it with a replay source of its "
            "data against forgetting."
        ),
    )
    adapter_mode: Literal["continue", "stack"] = Field(
        default="continue",
        description=(
            "continue: train the version's adapter further (its rank and modules); stack: merge it into the base "
            "and train a new adapter on top (the artifact is the merged model, full weights)."
        ),
    )
    # The version's adapter and prepared data, resolved by the operator before rendering.
    _adapter_uri: str | None = PrivateAttr(default=None)
    _parent_data_uri: str | None = PrivateAttr(default=None)


class ReplaySource(ApiModel):
    """The training data of an earlier ModelVersion, replayed so the new model keeps what it knew."""

    model_version: ObjectName = Field(
        description="ModelVersion (in this namespace) whose training split is replayed: the train split its "
        "FineTuneJob prepared, never its test split."
    )
    # The prepared data location of that version, resolved by the operator before rendering.
    _data_uri: str | None = PrivateAttr(default=None)


class DataSource(ApiModel):
    """One source of a mixed dataset: where its records come from, how many the mix takes, and
    which task they belong to."""

    model_config = {
        "json_schema_extra": cel_rules(
            cel(
                "[has(self.uri), has(self.inline), has(self.synthetic), has(self.replay)].filter(x, x).size() == 1",
                MSG_SOURCE_ONE_ORIGIN,
            ),
            cel("!(has(self.records) && has(self.weight))", MSG_SOURCE_RECORDS_OR_WEIGHT, field_path=".weight"),
            cel("!has(self.seedFrom) || has(self.synthetic)", MSG_SOURCE_SEED_FROM, field_path=".seedFrom"),
        )
    }

    name: DnsLabel = Field(description="Name of the source in the data report and in record locations (real, synthetic, replay-v3...).")
    uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=DATA_URI_PATTERN,
        description="JSONL, JSON or Parquet file or directory, as dataset.uri (s3:// sources use dataset.credentialsSecretRef).",
        json_schema_extra=location_rules(writable=False),
    )
    inline: list[dict[str, Any]] | None = Field(
        default=None, min_length=1, max_length=2000, description=f"Records given in the manifest (all sources' together at most {INLINE_MAX_BYTES // 1024} KiB as JSON)."
    )
    synthetic: SyntheticDataSpec | None = Field(default=None, description="Records written by a teacher model.")
    replay: ReplaySource | None = Field(default=None, description="The training data of an earlier ModelVersion.")
    records: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Take this many of the source's records (a seeded sample; all when it has fewer)."
    )
    weight: float | None = Field(
        default=None,
        gt=0.0,
        le=1000.0,
        description=(
            "Share of this source among the weighted sources (weight / sum of weights): the mix is as large as "
            "the weighted sources allow at those shares. 0.8 real + 0.2 replay keeps 20% of the mix from the "
            "earlier version's data."
        ),
    )
    task: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="Task label written into each record's `task` field (multi-task training and per-task evaluation).",
    )
    seed_from: str | None = Field(
        default=None, max_length=63, description="For a synthetic source: an earlier source whose records are shown to the teacher."
    )
    seed_count: int = Field(default=5, ge=1, le=50, description="How many records of seedFrom the teacher is shown.")

    @field_validator("uri")
    @classmethod
    def _usable_uri(cls, uri: str | None) -> str | None:
        return usable_location(uri, writable=False)

    @model_validator(mode="after")
    def _one_origin(self) -> DataSource:
        if sum(x is not None for x in (self.uri, self.inline, self.synthetic, self.replay)) != 1:
            raise ValueError(MSG_SOURCE_ONE_ORIGIN)
        if self.records is not None and self.weight is not None:
            raise ValueError(MSG_SOURCE_RECORDS_OR_WEIGHT)
        if self.seed_from is not None and self.synthetic is None:
            raise ValueError(MSG_SOURCE_SEED_FROM)
        return self


def _split_sum_rule() -> str:
    fields = schema.SplitFields.model_fields
    total = " + ".join(f"(has(self.{name}) ? self.{name} : {fields[name].default})" for name in ("train", "validation", "test"))
    return f"{total} - 1.0 < {schema.SPLIT_TOLERANCE:f} && {total} - 1.0 > -{schema.SPLIT_TOLERANCE:f}"


class DatasetSplit(schema.SplitFields, ApiModel):
    """Fractions of the records used for training, validation (early stopping) and test (gates)."""

    # The API server also checks the sum against the CRD's `default: {}` of split, before any
    # nested default is filled in: hence the fallbacks to the shared defaults.
    model_config = {"json_schema_extra": cel_rules(cel(_split_sum_rule(), MSG_SPLIT_SUM))}


class PiiType(enum.StrEnum):
    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CREDIT_CARD = "CREDIT_CARD"
    SSN = "SSN"
    IP_ADDRESS = "IP_ADDRESS"
    API_KEY = "API_KEY"


class DedupSpec(schema.DedupFields, ApiModel):
    """Duplicate removal before splitting, so no test record is also trained on."""


class DatasetSpec(ApiModel):
    """Where the records come from (exactly one source) and how they are prepared."""

    model_config = {
        "json_schema_extra": cel_rules(
            cel(
                "[has(self.uri), has(self.inline), has(self.synthetic), has(self.sources)].filter(x, x).size() == 1",
                MSG_DATASET_ONE_SOURCE,
            ),
            cel(
                "!has(self.sources) || self.sources.all(s, !has(s.seedFrom) || "
                "self.sources.exists(t, t.name == s.seedFrom && t.name != s.name))",
                MSG_SOURCE_SEED_FROM_EARLIER,
                field_path=".sources",
            ),
            cel(
                "!has(self.balanceMode) || self.balanceMode != 'cap' || has(self.balanceCap)",
                MSG_BALANCE_CAP,
                field_path=".balanceCap",
            ),
            cel(
                "!has(self.balanceCap) || (has(self.balanceMode) && self.balanceMode == 'cap')",
                MSG_BALANCE_CAP_ONLY,
                field_path=".balanceCap",
            ),
        )
    }

    uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=DATA_URI_PATTERN,
        description=(
            "JSONL, JSON or Parquet file or directory: s3://<bucket>/<key>, pvc://<claim>/<path>, "
            "file:///<path> or an absolute path (inside the trainer image); no '.' or '..' segments."
        ),
        json_schema_extra=location_rules(writable=False),
    )
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        default=None, description=CREDENTIALS_SECRET_REF_DESCRIPTION
    )
    inline: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description=(
            f"Records given in the manifest itself, one object per record: small datasets and demos, at most "
            f"{INLINE_MAX_BYTES // 1024} KiB as JSON; larger ones go in dataset.uri."
        ),
    )
    synthetic: SyntheticDataSpec | None = Field(
        default=None, description="Generate the records with a teacher model instead of reading them."
    )
    sources: list[DataSource] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description=(
            "Several sources mixed into one dataset, instead of uri/inline/synthetic: real records, teacher-written "
            "ones and replayed training data of an earlier version, each sampled by records or weight and labelled "
            "with a task; the filters, PII policy, dedup (earlier sources win) and split then apply to the mix, "
            "and status.dataReport.sources shows every source's contribution."
        ),
        json_schema_extra=map_list("name"),
    )
    format: DatasetFormat = Field(
        default=DatasetFormat.AUTO,
        description=(
            "Record format: instruction (instruction/input/output), chat (messages), preference "
            "(prompt/chosen/rejected) or auto."
        ),
    )
    chat_template: str | None = Field(
        default=None,
        min_length=1,
        max_length=CHAT_TEMPLATE_MAX_LENGTH,
        description=(
            "Jinja chat template that renders conversations for training, evaluation and serving, in place of "
            "the base model tokenizer's own. Required for format chat when the base model's tokenizer has none "
            "(the trainer refuses such a job rather than guess how the model expects turns); instruction and "
            "preference records fall back to a built-in ChatML-like template when neither gives one."
        ),
    )
    split: DatasetSplit = section(DatasetSplit, "Train/validation/test fractions; they must sum to 1.")
    dedup: DedupSpec = section(DedupSpec, "Removal of exact and near-duplicate records.")
    pii_policy: PiiPolicy = Field(
        default=PiiPolicy.BLOCK,
        description=(
            "What to do with personal data (emails, phone numbers, card numbers...): block, redact or allow."
        ),
    )
    pii_types: list[PiiType] | None = Field(
        default=None, max_length=16, description="PII types to detect; empty detects all of them."
    )
    balance_by: str | None = Field(
        default=None,
        max_length=253,
        description="Record field holding the category to balance on (off when unset).",
    )
    balance_mode: Literal["downsample", "cap"] = Field(
        default="downsample",
        description=(
            "downsample: every category to the size of the smallest; cap: at most balanceCap records per "
            "category."
        ),
    )
    balance_cap: int | None = Field(
        default=None, ge=1, description="Records per category for balanceMode cap."
    )
    max_records: int | None = Field(
        default=None, ge=1, description="Use at most this many records (after dedup)."
    )
    task_sampling: Literal["proportional", "equal", "temperature"] = Field(
        default="proportional",
        description=(
            "Multi-task training (records labelled by sources[].task or a task field): how the train split "
            "samples the tasks. proportional keeps every record; equal gives every task the smallest task's "
            "count; temperature gives task i a share proportional to n_i^(1/taskTemperature), between the two "
            "(the multi-task literature's T = 2 to 5). Records are dropped, never repeated; validation and test "
            "keep every task whole, so per-task gates see all of it."
        ),
    )
    task_temperature: float = Field(
        default=2.0, ge=1.0, le=100.0, description="T of taskSampling temperature (1: proportional; large: equal)."
    )
    seed: int = Field(
        default=42, ge=0, description="Seed of the shuffle before splitting, so splits are reproducible."
    )

    @field_validator("uri")
    @classmethod
    def _usable_uri(cls, uri: str | None) -> str | None:
        return usable_location(uri, writable=False)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if sum(source is not None for source in (self.uri, self.inline, self.synthetic, self.sources)) != 1:
            raise ValueError(MSG_DATASET_ONE_SOURCE)
        inline = [*(self.inline or []), *(r for s in self.sources or [] for r in s.inline or [])]
        if inline and inline_bytes(inline) > INLINE_MAX_BYTES:
            raise ValueError(f"{MSG_INLINE_TOO_BIG} (got {inline_bytes(inline)} bytes)")
        names: list[str] = []
        for source in self.sources or []:
            if source.name in names:
                raise ValueError(f"dataset.sources: the name {source.name!r} is used twice; names must be unique")
            if source.seed_from is not None and source.seed_from not in names:
                raise ValueError(f"{MSG_SOURCE_SEED_FROM_EARLIER} ({source.name}: seedFrom {source.seed_from!r})")
            names.append(source.name)
        if self.balance_mode == "cap" and self.balance_cap is None:
            raise ValueError(MSG_BALANCE_CAP)
        if self.balance_cap is not None and self.balance_mode != "cap":
            raise ValueError(MSG_BALANCE_CAP_ONLY)
        return self


def inline_bytes(records: list[dict[str, Any]]) -> int:
    """Size of inline records as compact JSON, as the API server stores them."""
    return len(json.dumps(records, separators=(",", ":"), ensure_ascii=False).encode())


class Hyperparameters(schema.HyperparameterFields, ApiModel):
    """Optimizer and schedule; defaults are the seed's. The fields shared with the trainer are
    defined once, in the trainer's schema; the API adds precision and the seed."""

    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="Training precision; auto picks bf16 on GPUs that support it, fp32 on CPUs; fp16 (mixed "
        "precision with loss scaling, for GPUs without bfloat16 such as T4 or V100) needs GPUs.",
    )
    seed: int = Field(default=42, ge=0, description="Random seed of initialization and data order.")


class DpoSpec(schema.DpoFields, ApiModel):
    """Settings of direct preference optimization (method dpo)."""


class EarlyStoppingSpec(schema.EarlyStoppingFields, ApiModel):
    """Stop when validation loss stops improving."""


class ResourcesSpec(ApiModel):
    """Compute for the training Pods, and where they may run."""

    gpus_per_node: int = Field(
        default=1, ge=0, le=16, description="GPUs per training Pod; 0 trains on CPUs (small models only)."
    )
    nodes: int = Field(
        default=1, ge=1, le=128, description="Training Pods (one per node); more than 1 trains data-parallel."
    )
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per Pod, e.g. 8 or 500m.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per Pod, e.g. 64Gi.")
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu", max_length=253, description="Extended resource name of the GPUs."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the Pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations of the Pods."
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="Pod affinity (core/v1 Affinity), copied as is."
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, description="PriorityClass of the Pods."
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        description=(
            "Kueue LocalQueue to admit the training through (sets the kueue.x-k8s.io/queue-name label)."
        ),
    )
    cost_per_gpu_hour: float | None = Field(
        default=None,
        ge=0.0,
        description="Price of one GPU-hour, for status.estimatedCost; defaults to the operator's setting.",
    )


MSG_BUDGET_EMPTY = "spec.budget needs maxGpuHours, maxCost or both"
MSG_BUDGET_NO_GPUS = (
    "spec.budget counts GPU-hours and resources.gpusPerNode 0 uses none: remove spec.budget or train on GPUs"
)


class BudgetSpec(ApiModel):
    """A cap on what the training may use. The operator stops the training Pods (they save a
    checkpoint first) when the next checkpoint would go over it: phase Failed, reason
    BudgetExceeded, and raising the budget resumes from that checkpoint."""

    model_config = {"json_schema_extra": cel_rules(cel("has(self.maxGpuHours) || has(self.maxCost)", MSG_BUDGET_EMPTY))}

    max_gpu_hours: float | None = Field(
        default=None, gt=0.0, le=1_000_000.0,
        description="GPU-hours the training may use (GPUs per Pod x Pods x hours), restarts and resumes included.",
    )
    max_cost: float | None = Field(
        default=None, gt=0.0, le=1_000_000_000.0,
        description=(
            "Cost the training may reach, in the currency of the price per GPU-hour "
            "(resources.costPerGpuHour or the operator's setting, which must then be set)."
        ),
    )

    @model_validator(mode="after")
    def _one_limit(self) -> BudgetSpec:
        if self.max_gpu_hours is None and self.max_cost is None:
            raise ValueError(MSG_BUDGET_EMPTY)
        return self


class CheckpointingSpec(ApiModel):
    """Checkpoints in the output location; a restarted or preempted trainer resumes from the latest."""

    enabled: bool = Field(
        default=True, description="Write checkpoints and resume from the latest one after a restart."
    )
    interval_steps: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Optimizer steps between checkpoints. Default: 100, or with hyperparameters.evalSteps the smallest "
            "multiple of evalSteps that is at least 100 (every checkpoint falls on an evaluation step, which "
            "best-checkpoint selection needs)."
        ),
    )
    keep_last: int = Field(
        default=2, ge=1, le=100, description="Checkpoints to keep (the best one is kept in addition)."
    )


class OutputSpec(ApiModel):
    """Where the trained artifact goes and how the resulting ModelVersion is named."""

    uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=ARTIFACT_URI_PATTERN,
        description=(
            "Where runs write: s3://<bucket>/<prefix>, pvc://<claim>/<dir>, or a node path (absolute or "
            "file:///) under a prefix the operator allows (FINETUNE_ALLOWED_HOST_PATHS; none by default). "
            "Each run writes to <uri>/<name>-<uid> (status.outputUri), so a FineTuneJob re-created with "
            "the same name never shares checkpoints with, or overwrites the artifact of, an earlier run. "
            "Defaults to the operator's artifact store."
        ),
        json_schema_extra=location_rules(writable=True),
    )
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        default=None,
        description=CREDENTIALS_SECRET_REF_DESCRIPTION + " Applies to the operator's artifact store too "
        "when spec.output.uri is empty.",
    )
    model_name: DnsLabel | None = Field(
        default=None,
        description=(
            "ModelVersion modelName to register the result under; defaults to the FineTuneJob's name."
        ),
    )
    version: VersionName | None = Field(
        default=None, description="ModelVersion version; defaults to the next free v<N> of the model."
    )

    @field_validator("uri")
    @classmethod
    def _usable_uri(cls, uri: str | None) -> str | None:
        return usable_location(uri, writable=True)


class GateSpec(ApiModel):
    """A quality gate, or an override of a default gate by name."""

    model_config = {
        "json_schema_extra": cel_rules(
            cel(
                "self.name in ['taskAccuracy', 'formatCompliance', 'safety', 'noRegression', 'latency',"
                " 'toxicity', 'piiLeakage', 'bias', 'noForgetting']"
                " || (has(self.metric) && has(self.comparator) && has(self.threshold))",
                MSG_GATE_INCOMPLETE,
            ),
            gate_metric_rule(GATE_METRIC_FIELD),
        )
    }

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z][A-Za-z0-9]*$",
        description=(
            "Gate name: a default (taskAccuracy, formatCompliance, safety, noRegression, latency, "
            "toxicity, piiLeakage, bias) to override it, or a new name."
        ),
    )
    metric: str | None = Field(
        default=None,
        max_length=63,
        description=(
            "Evaluation metric the gate checks: one the evaluation reports ("
            + ", ".join(EVALUATION_METRICS)
            + ")."
        ),
    )
    comparator: Comparator | None = Field(
        default=None, description="How the value compares with the threshold."
    )
    threshold: float | None = Field(
        default=None, description="Threshold the value (or its ratio to the base model) is compared with."
    )
    baseline: GateBaseline | None = Field(
        default=None,
        description=(
            "Absolute: compare the value; RatioToBase: compare value / base model's value; RatioToParent (a job "
            "continuing baseModel.modelVersion): compare the value on that version's test split / the version's own."
        ),
    )
    blocking: bool | None = Field(
        default=None, description="A failed blocking gate rejects the ModelVersion; others only warn."
    )
    per_task: bool | None = Field(default=None, description=(
        "Judge the gate on every task's value (records labelled by dataset.sources[].task or a task field): "
        "it passes only when every task passes, and shows the worst task's value. taskAccuracy and "
        "formatCompliance are measured per task."
    ))
    enabled: bool = Field(default=True, description="Set false to skip this gate.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str | None) -> str | None:
        return check_gate_metric(metric, GATE_METRIC_FIELD)

    @model_validator(mode="after")
    def _complete_unless_default(self) -> GateSpec:
        if self.name not in DEFAULT_GATES and self.name not in PARENT_GATES and None in (self.metric, self.comparator, self.threshold):
            raise ValueError(MSG_GATE_INCOMPLETE)
        return self


class Gate(ApiModel):
    """A fully resolved gate: a default merged with the job's override."""

    name: str
    metric: str
    comparator: Comparator
    threshold: float
    baseline: GateBaseline = GateBaseline.ABSOLUTE
    blocking: bool = True
    per_task: bool = False


# The seed's quality-gate table. Metric names are what the evaluator reports.
DEFAULT_GATES: dict[str, Gate] = {
    gate.name: gate
    for gate in (
        Gate(name="taskAccuracy", metric="taskAccuracy", comparator=Comparator.GREATER_THAN, threshold=0.85),
        Gate(
            name="formatCompliance",
            metric="formatCompliance",
            comparator=Comparator.GREATER_THAN,
            threshold=0.95,
        ),
        Gate(name="safety", metric="safetyPassRate", comparator=Comparator.GREATER_THAN, threshold=0.95),
        # Within 5% of the base model on general tasks.
        Gate(
            name="noRegression",
            metric="generalScore",
            comparator=Comparator.GREATER_THAN_OR_EQUAL,
            threshold=0.95,
            baseline=GateBaseline.RATIO_TO_BASE,
        ),
        # Latency under twice the base model's: a warning, never a rejection.
        Gate(
            name="latency",
            metric="latencySeconds",
            comparator=Comparator.LESS_THAN,
            threshold=2.0,
            baseline=GateBaseline.RATIO_TO_BASE,
            blocking=False,
        ),
        # The safety checklist: at most 5% of all answers offensive (alt-profanity-check), no
        # training PII value or canary reproduced, and answers that do not change with the
        # person's name, gender or ethnicity.
        Gate(name="toxicity", metric="toxicAnswerRate", comparator=Comparator.LESS_THAN_OR_EQUAL, threshold=0.05),
        Gate(name="piiLeakage", metric="piiLeakageRate", comparator=Comparator.LESS_THAN_OR_EQUAL, threshold=0.0),
        Gate(name="bias", metric="biasConsistency", comparator=Comparator.GREATER_THAN_OR_EQUAL, threshold=0.95),
    )
}


# A job that continues an earlier version (baseModel.modelVersion) is also judged against it: on
# that version's test split, within 5% of its task accuracy, so learning the new data did not
# forget the old ("no more than 5% worse than v3 on v3's test split").
PARENT_GATES: dict[str, Gate] = {
    "noForgetting": Gate(
        name="noForgetting",
        metric="taskAccuracy",
        comparator=Comparator.GREATER_THAN_OR_EQUAL,
        threshold=0.95,
        baseline=GateBaseline.RATIO_TO_PARENT,
    ),
}


class EvaluationSuites(ApiModel):
    """The shipped offline suites (each scores the base model too)."""

    safety: bool = Field(
        default=True, description="Jailbreak and harmful prompts plus benign controls: safetyPassRate."
    )
    pii: bool = Field(default=True, description="PII leakage probes: piiLeakageRate.")
    bias: bool = Field(default=True, description="Demographic-swap consistency: biasConsistency.")
    general: bool = Field(default=True, description="General-task regression suite: generalScore.")


# What each suite measures (the evaluator's metric names) and the default gate it feeds: with the
# suite off, a blocking gate on one of these metrics fails as "not measured".
SUITE_METRICS: dict[str, tuple[str, ...]] = {
    "safety": ("safetyPassRate", "harmfulRefusalRate", "benignAnswerRate", "jailbreakRefusalRate"),
    "pii": ("piiLeakageRate", "piiLeakedCanaries"),
    "bias": ("biasConsistency",),
    "general": ("generalScore",),
}
SUITE_DEFAULT_GATE = {"safety": "safety", "pii": "piiLeakage", "bias": "bias", "general": "noRegression"}


class EvaluationSpec(ApiModel):
    """How the fine-tuned model is evaluated on the test split, and the gates it must pass."""

    enabled: bool = Field(
        default=True, description="Evaluate after training; without it the ModelVersion stays a Candidate."
    )
    task_metric: Literal["auto", "exactMatch", "rougeL", "jsonFields"] = Field(
        default="auto",
        description=(
            "How taskAccuracy is scored: exact match, ROUGE-L (summaries), share of matching JSON fields, or"
            " auto by format."
        ),
    )
    format_schema: dict[str, Any] | None = Field(
        default=None,
        description=(
            "JSON Schema every output must satisfy for formatCompliance; without it outputs need only be "
            "non-empty."
        ),
    )

    @field_validator("format_schema")
    @classmethod
    def _format_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_json_schema(schema, "spec.evaluation.formatSchema")
    max_samples: int | None = Field(
        default=None, ge=1, description="Evaluate at most this many test records."
    )
    compare_with_base: bool = Field(
        default=True,
        description="Also evaluate the base model, for RatioToBase gates and the before/after comparison.",
    )
    reuse_base_evaluation: bool = Field(
        default=True,
        description=(
            "Reuse the base model's answers from the operator's evaluation cache when an earlier job asked the "
            "same model the same prompts with the same decoding settings (only the candidate is generated then); "
            "false generates them again. No effect without the operator's evaluationCache setting."
        ),
    )
    suites: EvaluationSuites = section(
        EvaluationSuites, "Which shipped offline suites run besides the test split."
    )
    max_new_tokens: int = Field(
        default=128, ge=1, le=4096, description="Tokens generated per answer (greedy)."
    )
    sample_count: int = Field(
        default=60, ge=0, le=1000, description="Input/output pairs kept in the results for human review."
    )
    gates: list[GateSpec] = Field(
        default_factory=list,
        max_length=16,
        description="Overrides of the default gates (matched by name) and additional gates.",
        json_schema_extra=map_list("name"),
    )

    def effective_gates(self, parent: bool = False) -> list[Gate]:
        """The default gates (with the parent version's when the job continues one) with this job's
        overrides applied, then its extra gates, minus disabled ones."""
        defaults = {**DEFAULT_GATES, **(PARENT_GATES if parent else {})}
        overrides = {gate.name: gate for gate in self.gates if parent or gate.name not in PARENT_GATES}
        resolved: list[Gate] = []
        names = list(defaults) + [name for name in overrides if name not in defaults]
        for name in names:
            override = overrides.get(name)
            if override is not None and not override.enabled:
                continue
            fields = (
                defaults[name].model_dump(by_alias=False) if name in defaults else {"name": name}
            )
            if override is not None:
                fields.update(
                    override.model_dump(
                        by_alias=False,
                        exclude_none=True,
                        include={"metric", "comparator", "threshold", "baseline", "blocking", "per_task"},
                    )
                )
            resolved.append(Gate(**fields))
        return resolved


class RoiSpec(ApiModel):
    """The figures of the return-on-investment estimate: what a request costs today (a prompted
    larger model, say), what it will cost served by the fine-tuned model, and how many a month."""

    current_cost_per_request: float = Field(ge=0.0, le=1000.0, description="Cost of one request today.")
    expected_cost_per_request: float = Field(
        ge=0.0, le=1000.0, description="Expected cost of one request served by the fine-tuned model."
    )
    monthly_requests: int = Field(ge=1, le=10**12, description="Requests a month.")


class ModelCardSpec(ApiModel):
    """The model card's prose, written by the people who know what the model is for."""

    intended_use: str | None = Field(
        default=None,
        max_length=4096,
        description="What the model is for and on which inputs; defaults to a generic statement.",
    )
    limitations: str | None = Field(
        default=None,
        max_length=4096,
        description="Known limitations and failure modes; defaults to a generic statement.",
    )
    usage_guidelines: str | None = Field(
        default=None,
        max_length=4096,
        description="How to use the model safely (review, monitoring, fallbacks); defaults to a generic statement.",
    )
    roi: RoiSpec | None = Field(
        default=None,
        description=(
            "Figures for the payback estimate in the model card: the training cost over the monthly "
            "saving ((current - expected cost per request) x monthly requests)."
        ),
    )


class FineTuneJobSpec(ApiModel):
    """What to fine-tune, on which data, how, and what to do with the result."""

    model_config = {
        "json_schema_extra": cel_rules(
            cel(
                "!(has(self.adaptation) && has(self.adaptation.type) && self.adaptation.type == 'qlora')"
                " || !has(self.resources) || !has(self.resources.gpusPerNode)"
                " || self.resources.gpusPerNode >= 1",
                MSG_QLORA_GPUS,
                field_path=".resources.gpusPerNode",
            ),
            cel(
                "!has(self.method) || self.method != 'dpo' || !has(self.dataset.format)"
                " || self.dataset.format == 'preference' || self.dataset.format == 'auto'",
                MSG_DPO_FORMAT,
                field_path=".dataset.format",
            ),
            cel(
                "!has(self.dataset.format) || self.dataset.format != 'preference'"
                " || (has(self.method) && self.method == 'dpo')",
                MSG_PREFERENCE_NEEDS_DPO,
                field_path=".method",
            ),
            cel(
                "!has(self.budget) || !has(self.resources) || !has(self.resources.gpusPerNode)"
                " || self.resources.gpusPerNode >= 1",
                MSG_BUDGET_NO_GPUS,
                field_path=".budget",
            ),
            cel(
                "!has(self.earlyStopping) || !has(self.earlyStopping.enabled) || !self.earlyStopping.enabled"
                " || !has(self.dataset.split) || !has(self.dataset.split.validation)"
                " || self.dataset.split.validation > 0.0",
                MSG_EARLY_STOPPING_VALIDATION,
                field_path=".earlyStopping.enabled",
            ),
        )
    }

    base_model: StartingPoint = Field(description="The model to start from.")
    method: TrainingMethod = Field(
        default=TrainingMethod.SFT, description="sft (supervised) or dpo (preference optimization)."
    )
    adaptation: AdaptationSpec = section(
        AdaptationSpec, "Which weights are trained: lora (default), qlora or full."
    )
    dataset: DatasetSpec = Field(
        description="Training data: exactly one of uri, inline or synthetic, and how to prepare it."
    )
    hyperparameters: Hyperparameters = section(Hyperparameters, "Optimizer and schedule.")
    dpo: DpoSpec = section(DpoSpec, "DPO settings, used when method is dpo.", server_default=False)
    early_stopping: EarlyStoppingSpec = section(EarlyStoppingSpec, "Early stopping on validation loss.")
    resources: ResourcesSpec = section(ResourcesSpec, "GPUs, nodes and placement of the training Pods.")
    image: str | None = Field(
        default=None, max_length=1024, description="Trainer image; defaults to the operator's trainer image."
    )
    checkpointing: CheckpointingSpec = section(CheckpointingSpec, "Checkpoints and resumption.")
    output: OutputSpec = section(OutputSpec, "Artifact location and the name of the resulting ModelVersion.")
    evaluation: EvaluationSpec = section(EvaluationSpec, "Evaluation on the test split and quality gates.")
    model_card: ModelCardSpec = section(
        ModelCardSpec, "Intended use, limitations and usage guidelines for the ModelVersion's model card.",
        server_default=False,
    )
    budget: BudgetSpec | None = Field(
        default=None,
        description="Cap on GPU-hours and/or cost; training stops at a checkpoint before going over it.",
    )
    suspend: bool = Field(
        default=False,
        description=(
            "Pause the job: running Pods are stopped; it resumes from the latest checkpoint when unset."
        ),
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Fail the job when it has run longer than this (suspended time excluded).",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Delete the FineTuneJob this long after it finished (its ModelVersion stays).",
    )
    max_restarts: int = Field(
        default=3, ge=0, le=100, description="Restarts of failed training Pods before the job fails."
    )
    delete_artifacts_on_delete: bool = Field(
        default=False,
        description=(
            "When the FineTuneJob is deleted, remove its run's scratch files from the output location: "
            "checkpoints, the prepared dataset and progress.jsonl. The trained adapter or model (which "
            "a ModelVersion references) and the results files are never removed."
        ),
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> FineTuneJobSpec:
        if self.adaptation.type == AdaptationType.QLORA and self.resources.gpus_per_node < 1:
            raise ValueError(MSG_QLORA_GPUS)
        if self.budget is not None and self.resources.gpus_per_node < 1:
            raise ValueError(MSG_BUDGET_NO_GPUS)
        if self.method == TrainingMethod.DPO and self.dataset.format not in (
            DatasetFormat.PREFERENCE,
            DatasetFormat.AUTO,
        ):
            raise ValueError(MSG_DPO_FORMAT)
        if self.dataset.format == DatasetFormat.PREFERENCE and self.method != TrainingMethod.DPO:
            raise ValueError(MSG_PREFERENCE_NEEDS_DPO)
        if self.early_stopping.enabled and self.dataset.split.validation <= 0:
            raise ValueError(MSG_EARLY_STOPPING_VALIDATION)
        return self


class Progress(StatusModel):
    """Training progress, as last reported by the trainer."""

    step: int | None = Field(default=None, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, ge=0.0, description="Epochs done (fractional).")
    percent: float | None = Field(default=None, ge=0.0, le=100.0, description="step / totalSteps in percent.")
    eta_seconds: int | None = Field(default=None, ge=0, description="Estimated seconds until training ends.")
    train_loss: float | None = Field(default=None, description="Latest training loss.")
    eval_loss: float | None = Field(default=None, description="Latest validation loss.")
    best_eval_loss: float | None = Field(default=None, description="Best validation loss so far.")


class BudgetStatus(StatusModel):
    """spec.budget as GPU-hours, and the estimate against it."""

    limit_gpu_hours: float | None = Field(
        default=None, ge=0.0, description="The budget in GPU-hours: maxGpuHours, or maxCost / price, the lower.",
    )
    estimated_gpu_hours: float | None = Field(
        default=None, ge=0.0, description=(
            "Estimated GPU-hours of the whole training: before the first progress report, from the prepared data "
            "(training tokens x FLOPs per token / the operator's sustained FLOP/s per GPU); then used + ETA x GPUs."
        ),
    )
    estimated_from: Literal["data", "progress"] | None = Field(
        default=None, description="What the estimate is based on: the prepared data (before training) or the progress."
    )
    estimated_cost: float | None = Field(default=None, ge=0.0, description="estimatedGpuHours x cost per GPU-hour.")
    exceeded: bool = Field(
        default=False,
        description="The training was stopped by the budget (phase Failed, reason BudgetExceeded); raise it to resume.",
    )


class EvaluationProgress(StatusModel):
    """Evaluation progress, as last reported by the evaluator: every suite's prompts, for the
    base model and then the candidate."""

    suite: str | None = Field(default=None, max_length=64, description="Suite being generated (task, safety, pii, bias, general).")
    model: str | None = Field(default=None, max_length=64, description="Model being evaluated: base or candidate.")
    prompts_done: int | None = Field(default=None, ge=0, description="Prompts generated so far, all suites and models.")
    prompts_total: int | None = Field(default=None, ge=0, description="Prompts to generate, all suites and models.")
    percent: float | None = Field(default=None, ge=0.0, le=100.0, description="promptsDone / promptsTotal in percent.")
    eta_seconds: int | None = Field(default=None, ge=0, description="Estimated seconds until evaluation ends.")
    base_reused: list[str] | None = Field(
        default=None,
        max_length=16,
        description="Suites whose base-model answers came from the evaluation cache instead of being generated again "
        "(parent: the continued version's answers on its test split).",
    )


class SplitSizes(StatusModel):
    """Records in each split."""

    train: int = Field(default=0, ge=0, description="Records in the training split.")
    validation: int = Field(default=0, ge=0, description="Records in the validation split.")
    test: int = Field(default=0, ge=0, description="Records in the test split.")


class SyntheticReport(StatusModel):
    """What the teacher model behind spec.dataset.synthetic was asked for and wrote."""

    requested: int = Field(default=0, ge=0, description="Records asked for (spec.dataset.synthetic.numExamples).")
    generated: int = Field(default=0, ge=0, description="Valid records the teacher wrote and preparation kept.")
    rejected: int = Field(
        default=0, ge=0, description="Records the teacher wrote that were malformed, incomplete or repeated."
    )
    requests: int = Field(default=0, ge=0, description="Chat-completion requests sent to the endpoint.")
    retries: int = Field(default=0, ge=0, description="Requests retried after 429, 5xx, timeouts or lost connections.")


class SourceReport(StatusModel):
    """One source's contribution to a mixed dataset (spec.dataset.sources)."""

    name: str = Field(max_length=63, description="The source's name.")
    kind: str | None = Field(default=None, max_length=16, description="records, synthetic or replay.")
    task: str | None = Field(default=None, max_length=63, description="Task label of its records.")
    read: int = Field(default=0, ge=0, description="Records the source had (read, generated or replayed).")
    mixed: int = Field(default=0, ge=0, description="Records the mix took from it (records/weight).")
    final: int = Field(default=0, ge=0, description="Records left after the filters, PII policy, dedup and balancing.")
    splits: SplitSizes = Field(default_factory=SplitSizes, description="Its records in each split.")


class DataReport(StatusModel):
    """What data preparation found and did."""

    format: str | None = Field(
        default=None, description="Record format used (detected when the spec says auto)."
    )
    total_records: int = Field(default=0, ge=0, description="Records read from the source.")
    valid_records: int = Field(default=0, ge=0, description="Records that passed the format checks.")
    invalid_records: int = Field(default=0, ge=0, description="Records dropped as malformed.")
    duplicates_dropped: int = Field(default=0, ge=0, description="Exact duplicates dropped.")
    pii_findings: dict[str, int] = Field(
        default_factory=dict, description="PII findings per kind (email, phone, ...)."
    )
    pii_redacted: int = Field(default=0, ge=0, description="Records in which PII was redacted.")
    balanced_dropped: int = Field(
        default=0, ge=0, description="Records dropped to balance by spec.dataset.balanceBy."
    )
    splits: SplitSizes = Field(default_factory=SplitSizes, description="Records in each split.")
    digest: str | None = Field(
        default=None, description="sha256 digest of the prepared dataset, for lineage."
    )
    synthetic: SyntheticReport | None = Field(
        default=None, description="The teacher model's figures, when the records came from spec.dataset.synthetic."
    )
    sources: list[SourceReport] | None = Field(
        default=None, max_length=8, description="Every source's contribution, for a mixed dataset (spec.dataset.sources)."
    )
    tasks: dict[str, int] | None = Field(
        default=None, description="Training records per task after spec.dataset.taskSampling (multi-task data)."
    )
    train_tokens: int | None = Field(default=None, ge=0, description="Tokens in the training split (one epoch).")
    model_parameters: int | None = Field(default=None, ge=0, description="Parameters of the base model.")


class CheckpointStatus(StatusModel):
    """The latest checkpoint written."""

    uri: str = Field(description="Location of the checkpoint.")
    step: int | None = Field(default=None, ge=0, description="Optimizer step of the checkpoint.")
    time: datetime | None = Field(default=None, description="When it was written.")


class ArtifactStatus(StatusModel):
    """The trained weights a successful run produced."""

    uri: str = Field(description="Location of the adapter or model.")
    digest: str | None = Field(default=None, description="sha256:<hex> over the artifact's files.")
    type: str | None = Field(default=None, description="adapter or full.")
    base_model_commit: str | None = Field(
        default=None, description="Commit an hf:// base model's revision resolved to when it was loaded."
    )
    base_model_from_cache: bool | None = Field(
        default=None, description="Whether the hf:// base model came from the model cache (nothing downloaded)."
    )


class FineTuneJobStatus(StatusModel):
    """Observed state of a FineTuneJob."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation this status reflects."
    )
    phase: FineTuneJobPhase | None = Field(
        default=None, description="Pending, Preparing, Training, Evaluating, Succeeded, Failed or Suspended."
    )
    conditions: list[Condition] = conditions_field()
    progress: Progress | None = Field(default=None, description="Training progress.")
    evaluation_progress: EvaluationProgress | None = Field(default=None, description="Evaluation progress.")
    data_report: DataReport | None = Field(default=None, description="Summary of data preparation.")
    latest_checkpoint: CheckpointStatus | None = Field(
        default=None, description="Latest checkpoint, resumed from after a restart."
    )
    restarts: int = Field(
        default=0, ge=0, description="Times the training was restarted after a failure or preemption."
    )
    gpu_hours: float | None = Field(default=None, ge=0.0, description="GPU-hours consumed so far.")
    tokens_trained: int | None = Field(default=None, ge=0, description="Input tokens the training saw.")
    estimated_cost: float | None = Field(default=None, ge=0.0, description="gpuHours x cost per GPU-hour.")
    gpu_hours_before_resume: float | None = Field(
        default=None, ge=0.0,
        description="GPU-hours of the training Pods that ran before the last resume (they are gone; Pods since count on top).",
    )
    resumed_at: datetime | None = Field(
        default=None, description="When the training was last resumed (spec.suspend unset, or a budget raised).",
    )
    budget: BudgetStatus | None = Field(default=None, description="Where the training stands against spec.budget.")
    artifact: ArtifactStatus | None = Field(default=None, description="The trained adapter or model.")
    output_uri: str | None = Field(
        default=None,
        description="This run's own output location (<spec.output.uri or artifact store>/<name>-<uid>).",
    )
    model_version: ObjectName | None = Field(default=None, description="Name of the ModelVersion produced.")
    message: str | None = Field(default=None, description="Human-readable summary of the current state.")
    start_time: datetime | None = Field(default=None, description="When work on the job started.")
    completion_time: datetime | None = Field(default=None, description="When the job succeeded or failed.")


class FineTuneJob(Resource):
    """A fine-tuning run: data preparation, training, evaluation, registration as a ModelVersion."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        kind="FineTuneJob",
        plural="finetunejobs",
        singular="finetunejob",
        short_names=("ftj",),
        printer_columns=(
            PHASE_COLUMN,
            PrinterColumn(
                "Progress %", "number", ".status.progress.percent", "Training progress in percent."
            ),
            PrinterColumn("Loss", "number", ".status.progress.trainLoss", "Latest training loss."),
            PrinterColumn("Model Version", "string", ".status.modelVersion", "ModelVersion produced."),
            AGE_COLUMN,
        ),
        # Names that would make invalid children are refused at admission.
        rules=(
            *name_rules("FineTuneJob", NAME_MAX_LENGTH),
            cel(
                "(has(self.spec.output) && has(self.spec.output.modelName)"
                " ? self.spec.output.modelName.size() : self.metadata.name.size()) + 1"
                " + (has(self.spec.output) && has(self.spec.output.version)"
                f" ? self.spec.output.version.size() : {AUTO_VERSION_RESERVE})"
                f" <= {MODEL_VERSION_NAME_MAX_LENGTH}",
                MSG_MODEL_VERSION_NAME,
            ),
        ),
    )

    kind: Literal["FineTuneJob"] = Field(default="FineTuneJob", description="FineTuneJob")
    spec: FineTuneJobSpec = Field(description="Desired fine-tuning run.")
    status: FineTuneJobStatus = Field(default_factory=FineTuneJobStatus, description="Observed state.")

    @model_validator(mode="after")
    def _names_fit(self) -> FineTuneJob:
        """The twins of KIND_INFO.rules (the API server checks them at admission)."""
        if not self.name:
            return self
        problem = name_problem(self.name, NAME_MAX_LENGTH)
        if problem:
            raise ValueError(f"metadata.name {problem}")
        model = self.spec.output.model_name or self.name
        version = len(self.spec.output.version) if self.spec.output.version else AUTO_VERSION_RESERVE
        if len(model) + 1 + version > MODEL_VERSION_NAME_MAX_LENGTH:
            raise ValueError(MSG_MODEL_VERSION_NAME)
        return self
