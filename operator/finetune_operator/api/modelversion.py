"""ModelVersion (`mv`): one immutable, evaluated artifact of a model, and its gate verdict.

The spec is a registry entry: what the artifact is (URI and sha256 digest), where it came
from (lineage) and its model card. The API server refuses any change to it (CEL
`self == oldSelf`), so a version name always means the same bytes. Everything that changes
lives in status: the phase (Candidate until evaluated, then Approved or Rejected by the gates;
Production while a Rollout serves it as stable; Deprecated when replaced), every gate's
verdict, and the before/after comparison with the base model.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar, Literal

import re

from pydantic import Field, field_validator, model_validator

from finetune_operator.api.common import (
    AGE_COLUMN,
    ARTIFACT_URI_PATTERN,
    PHASE_COLUMN,
    ApiModel,
    BaseModelRef,
    Comparator,
    CredentialsSecretRef,
    DNS_LABEL_PATTERN,
    EVALUATION_METRICS,
    Condition,
    DnsLabel,
    GateBaseline,
    KindInfo,
    ObjectName,
    PrinterColumn,
    Resource,
    Sha256Digest,
    StatusModel,
    VersionName,
    LocationError,
    cel,
    cel_rules,
    check_gate_metric,
    conditions_field,
    gate_metric_rule,
    location_rules,
    map_list,
    max_owner_name,
    parse_location,
)

MSG_SPEC_IMMUTABLE = "spec is immutable"
# A ModelVersion's children are `<name>-model-card` (ConfigMap), `<name>-retention` and
# `<name>-verify` (Jobs).
CHILD_NAME_SUFFIXES = ("-model-card", "-retention", "-verify")
NAME_MAX_LENGTH = max_owner_name(CHILD_NAME_SUFFIXES)
MSG_NAME_LENGTH = (
    f"metadata.name must be at most {NAME_MAX_LENGTH} characters: the ModelVersion's model card "
    "ConfigMap and retention Job are named after it and must fit in 63"
)
MSG_NAME_LABEL = "metadata.name must be a DNS label: lowercase letters, digits and '-', starting and ending alphanumeric"


class ModelVersionPhase(enum.StrEnum):
    CANDIDATE = "Candidate"  # registered, not yet judged by the gates
    APPROVED = "Approved"  # every blocking gate passed
    REJECTED = "Rejected"  # a blocking gate failed
    PRODUCTION = "Production"  # served as the stable version of a Rollout
    DEPRECATED = "Deprecated"  # was in production, replaced by a newer version


class ServingState(enum.StrEnum):
    """What a Rollout does with a version (status.serving.state, written by the Rollout)."""

    STABLE = "Stable"  # served as a Rollout's stable version
    REPLACED = "Replaced"  # was stable, a newer version replaced it
    REFUSED = "Refused"  # a Rollout refused it (aborted canary, failed analysis, refused pin or rollback)


# The phase a version takes from what a Rollout does with it (a Refused version keeps its verdict).
PHASE_OF_SERVING = {ServingState.STABLE: ModelVersionPhase.PRODUCTION, ServingState.REPLACED: ModelVersionPhase.DEPRECATED}


class ArtifactType(enum.StrEnum):
    ADAPTER = "adapter"  # LoRA/QLoRA adapter weights, served on top of the base model
    FULL = "full"  # complete model weights


class Artifact(ApiModel):
    """The trained weights."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=ARTIFACT_URI_PATTERN,
        description=(
            "Location of the artifact: s3://<bucket>/<key>, pvc://<claim>/<dir> or an absolute path (file:///<path>);"
            " never the root of a claim or bucket, no '.' or '..' segments."
        ),
        json_schema_extra=location_rules(writable=True),
    )
    digest: Sha256Digest = Field(
        description="sha256:<hex> digest over the artifact's files, checked before serving."
    )
    type: ArtifactType = Field(
        default=ArtifactType.ADAPTER, description="adapter (served on the base model) or full weights."
    )
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        default=None,
        description="For an s3:// artifact: the Secret (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional "
        "AWS_SESSION_TOKEN) the serving Pods' fetch-artifact init container reads it with; without it, "
        "the workload identity. Copied from the FineTuneJob's spec.output.credentialsSecretRef.",
    )

    @field_validator("uri")
    @classmethod
    def _usable_location(cls, uri: str) -> str:
        # The CEL rules' twin, for objects the API server admitted before they existed. The URI
        # is kept as written: the spec is immutable and its digest names these bytes.
        try:
            parse_location(uri, allow_root=False)
        except LocationError as exc:
            raise ValueError(str(exc)) from None
        return uri


class Lineage(ApiModel):
    """Where the artifact came from, for reproducibility and audits."""

    fine_tune_job: ObjectName | None = Field(
        default=None, description="Name of the FineTuneJob that produced it."
    )
    dataset_digest: str | None = Field(
        default=None, max_length=128, description="sha256 digest of the prepared dataset."
    )
    trainer_image: str | None = Field(
        default=None, max_length=1024, description="Trainer image that produced it."
    )
    method: str | None = Field(
        default=None, max_length=32, description="Training method (sft, dpo) and adaptation, e.g. sft/lora."
    )
    base_model_commit: str | None = Field(
        default=None, max_length=64, description="Commit the hf:// base model's revision resolved to."
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Effective hyperparameters of the training run (free-form)."
    )
    parent_version: ObjectName | None = Field(
        default=None, description="The ModelVersion this one was trained from (continual learning), if any."
    )
    prepared_data_uri: str | None = Field(
        default=None,
        max_length=2048,
        description="Where the run's prepared data (train/validation/test JSONL) is: what a later FineTuneJob's "
        "replay source reads. Absent when the run wrote to object storage (the prepared data stays in the Pod).",
    )


GATE_METRIC_FIELD = "spec.evaluation.gates[].metric"


class GateRule(ApiModel):
    """A quality gate as it was set for this version (the job's defaults and overrides, resolved)."""

    model_config = {"json_schema_extra": cel_rules(gate_metric_rule(GATE_METRIC_FIELD))}

    name: str = Field(min_length=1, max_length=63, description="Gate name.")
    metric: str = Field(
        min_length=1,
        max_length=63,
        description="Metric the gate checks: one the evaluation reports (" + ", ".join(EVALUATION_METRICS) + ").",
    )
    comparator: Comparator = Field(description="How the value compares with the threshold.")
    threshold: float = Field(description="Threshold the value (or its ratio to the base) is compared with.")
    baseline: GateBaseline = Field(default=GateBaseline.ABSOLUTE, description="Absolute or RatioToBase.")
    blocking: bool = Field(default=True, description="A failed blocking gate rejects the version.")
    per_task: bool = Field(default=False, description=(
        "Judge the gate on every task's value (records labelled by dataset.sources[].task or a task field): "
        "it passes only when every task passes, and shows the worst task's value. taskAccuracy and "
        "formatCompliance are measured per task."
    ))

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        check_gate_metric(metric, GATE_METRIC_FIELD)
        return metric


class EvaluationRecord(ApiModel):
    """What the evaluation measured, fixed at registration: the gates are judged from this."""

    metrics: dict[str, float] = Field(
        default_factory=dict, description="Metrics of the fine-tuned model (taskAccuracy, formatCompliance, ...)."
    )
    base_metrics: dict[str, float] = Field(
        default_factory=dict, description="The same metrics of the base model, for RatioToBase gates."
    )
    standard_errors: dict[str, float] = Field(
        default_factory=dict, description="Bootstrap standard errors of the fine-tuned model's metrics."
    )
    gates: list[GateRule] = Field(
        default_factory=list,
        max_length=32,
        description="The gates this version is judged by.",
        json_schema_extra=map_list("name"),
    )
    results_uri: str | None = Field(
        default=None, max_length=2048, description="Full evaluation results, with samples for human review."
    )
    evaluated_at: datetime | None = Field(default=None, description="When the evaluation finished.")
    parent_metrics: dict[str, float] | None = Field(
        default=None,
        description="The parent version's task metrics on its own test split (a version trained from another).",
    )
    metrics_on_parent_split: dict[str, float] | None = Field(
        default=None,
        description="This version's task metrics on the parent version's test split, for RatioToParent gates.",
    )
    base_reused_suites: list[str] | None = Field(
        default=None,
        max_length=16,
        description="Suites whose baseMetrics were computed from the base model's answers in the evaluation "
        "cache (an earlier job's generation with the same model, prompts and decoding).",
    )


class ModelVersionSpec(ApiModel):
    """An immutable registry entry: the artifact, its lineage and its model card."""

    model_config = {"json_schema_extra": cel_rules(cel("self == oldSelf", MSG_SPEC_IMMUTABLE))}

    model_name: DnsLabel = Field(description="Name of the model this is a version of; Rollouts select by it.")
    version: VersionName = Field(description="Version name, unique per model, e.g. v3.")
    base_model: BaseModelRef = Field(
        description="Base model the artifact was trained from (adapters are served on it)."
    )
    artifact: Artifact = Field(description="The trained weights and their digest.")
    lineage: Lineage = Field(default_factory=Lineage, description="Where the artifact came from.")
    model_card: dict[str, Any] = Field(
        default_factory=dict, description="Model card: intended use, data, metrics, limitations (free-form)."
    )
    evaluation: EvaluationRecord | None = Field(
        default=None,
        description="Metrics and gates of the evaluation; without it the version stays a Candidate.",
    )
    format_schema: dict[str, Any] | None = Field(
        default=None,
        description=(
            "JSON Schema the version's answers must satisfy (copied from the FineTuneJob's "
            "spec.evaluation.formatSchema at registration). Its serving Pods check every answer against it "
            "when the Rollout names no format of its own, and the default canary analysis compares the "
            "format compliance of candidate and stable when both have one."
        ),
    )


class GateResult(StatusModel):
    """The verdict of one gate."""

    name: str = Field(description="Gate name.")
    metric: str = Field(description="Metric the gate checks.")
    comparator: Comparator = Field(description="How the value compares with the threshold.")
    threshold: float = Field(description="Threshold the value (or its ratio to the base) is compared with.")
    baseline: GateBaseline = Field(default=GateBaseline.ABSOLUTE, description="Absolute or RatioToBase.")
    value: float | None = Field(default=None, description="Measured value of the fine-tuned model.")
    base_value: float | None = Field(default=None, description="Measured value of the base model.")
    passed: bool = Field(description="Whether the gate passed.")
    blocking: bool = Field(
        default=True, description="A failed blocking gate rejects the version; others only warn."
    )
    message: str | None = Field(default=None, description="Why the gate passed or failed, in words.")


class MetricComparison(StatusModel):
    """One metric of the base model (before) and the fine-tuned one (after)."""

    before: float | None = Field(default=None, description="Base model's value.")
    after: float | None = Field(default=None, description="Fine-tuned model's value.")


class ServingRecord(ApiModel):
    """What a Rollout last did with the version; owned by the Rollout controller."""

    state: ServingState = Field(description="Stable, Replaced or Refused.")
    rollout: ObjectName = Field(description="The Rollout that set it.")
    last_transition_time: datetime | None = Field(default=None, description="When the state last changed.")


class ModelVersionStatus(StatusModel):
    """Observed state of a ModelVersion."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation this status reflects."
    )
    phase: ModelVersionPhase | None = Field(
        default=None, description="Candidate, Approved, Rejected, Production or Deprecated."
    )
    gates: list[GateResult] = Field(
        default_factory=list,
        max_length=32,
        description="Verdict of every gate.",
        json_schema_extra=map_list("name"),
    )
    comparison: dict[str, MetricComparison] = Field(
        default_factory=dict, description="Before (base model) and after (fine-tuned) values per metric."
    )
    evaluation_time: datetime | None = Field(default=None, description="When the gates were evaluated.")
    model_card_config_map: str | None = Field(
        default=None, description="ConfigMap holding the rendered model card (key README.md)."
    )
    serving: ServingRecord | None = Field(
        default=None,
        description=(
            "What a Rollout does with this version (written by the Rollout controller; the phase "
            "Production or Deprecated follows from it). The Serving condition says the same for people."
        ),
    )
    conditions: list[Condition] = conditions_field()
    message: str | None = Field(default=None, description="Human-readable summary of the verdict.")


class ModelVersion(Resource):
    """One trained, immutable version of a model, with its gate verdict."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        kind="ModelVersion",
        plural="modelversions",
        singular="modelversion",
        short_names=("mv",),
        printer_columns=(
            PrinterColumn("Model", "string", ".spec.modelName", "Model this is a version of."),
            PrinterColumn("Version", "string", ".spec.version", "Version name."),
            PHASE_COLUMN,
            AGE_COLUMN,
        ),
        rules=(
            cel(f"self.metadata.name.size() <= {NAME_MAX_LENGTH}", MSG_NAME_LENGTH),
            cel("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')", MSG_NAME_LABEL),
        ),
    )

    kind: Literal["ModelVersion"] = Field(default="ModelVersion", description="ModelVersion")

    @model_validator(mode="after")
    def _name_fits(self) -> ModelVersion:
        """The twins of KIND_INFO.rules (the API server checks them at admission)."""
        if self.name and len(self.name) > NAME_MAX_LENGTH:
            raise ValueError(MSG_NAME_LENGTH)
        if self.name and not re.fullmatch(DNS_LABEL_PATTERN, self.name):
            raise ValueError(MSG_NAME_LABEL)
        return self
    spec: ModelVersionSpec = Field(description="The artifact, its lineage and model card (immutable).")
    status: ModelVersionStatus = Field(default_factory=ModelVersionStatus, description="Observed state.")
