"""Building blocks shared by the three kinds: the model base classes, conditions, CEL rules.

`ApiModel` fixes the wire conventions once: camelCase aliases (Python attributes stay
snake_case), unknown fields rejected so a typo in a manifest fails loudly. `StatusModel`
ignores unknown fields instead, because the status of a live object may carry fields written
by other tools (kopf, a newer operator) that this version must tolerate.

CEL rules (`x-kubernetes-validations`) are attached with `cel(...)` to the model they guard,
through `json_schema_extra`; crdgen copies them into the CRD unchanged. Each rule is mirrored
by a pydantic validator with the same message, so the operator and the API server agree on
what a valid object is. Rules are kept to `has()`, `size()` and arithmetic so their cost is
small and bounded, and every list whose items carry a rule has a `maxItems` (the API server
costs a rule once per possible item and refuses a CRD over budget). Rules must also hold with
optional fields absent: the API server checks them against each `default: {}` as written,
before the nested defaults are filled in.

Conditions follow the Kubernetes API conventions (metav1.Condition): `set_condition` keeps
`lastTransitionTime` unless the status flips.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

GROUP = "finetune.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, snake_case in Python, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


class StatusModel(ApiModel):
    """Base of every status model: like `ApiModel`, but tolerant of fields it does not know."""

    model_config = ConfigDict(extra="ignore")


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One entry of `x-kubernetes-validations`: a CEL rule, its message, where it points."""
    validation = {"rule": rule, "message": message}
    if field_path:
        validation["fieldPath"] = field_path
    if reason:
        validation["reason"] = reason
    return validation


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` for a model guarded by the given CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


def section(model: type[BaseModel], description: str, *, server_default: bool = True) -> Any:
    """A nested object whose fields all have defaults: always present after parsing.

    With `server_default` the CRD also defaults it to `{}`, so the API server fills in the nested
    defaults too and `kubectl get -o yaml` (and CEL rules) see the effective values.
    """
    extra = {"default": {}} if server_default else None
    return Field(default_factory=model, description=description, json_schema_extra=extra)


def map_list(key: str = "type") -> dict[str, Any]:
    """`json_schema_extra` for a list of objects merged by `key` (server-side apply, conditions)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


# Constrained strings, named for what they hold. Lengths are bounded so CEL rules stay cheap.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
ObjectName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]
VersionName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"),
]
Duration = Annotated[
    str,
    StringConstraints(max_length=32, pattern=r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"),
]
Sha256Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[a-f0-9]{64}$")]
# A Kubernetes resource quantity: 4, "500m", "16Gi".
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
MODEL_URI_PATTERN = r"^((hf|s3|pvc|file)://.+|/.*)$"
DATA_URI_PATTERN = r"^((s3|pvc|file)://.+|/.*)$"
ARTIFACT_URI_PATTERN = r"^((s3|pvc|file)://.+|/.*)$"


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One aspect of the object's state, per the Kubernetes API conventions."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of the condition in CamelCase, e.g. Succeeded, Ready, DataReady.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable reason for the last transition, in CamelCase.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable details about the last transition, with the fix where there is one.",
    )
    last_transition_time: datetime | None = Field(
        default=None,
        description="When the status last changed (kept while the status stays the same).",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the object that this condition was computed from.",
    )


def conditions_field(description: str = "Current state of the object, one entry per condition type.") -> Any:
    return Field(
        default_factory=list, max_length=32, description=description, json_schema_extra=map_list("type")
    )


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of the given type, or None."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(conditions: list[Condition], new: Condition, now: datetime) -> list[Condition]:
    """A copy of `conditions` with `new` in place of the one of its type.

    lastTransitionTime is kept when the status does not change (only reason, message or
    observedGeneration moved), and set to `now` when it flips or the condition is new.
    """
    old = get_condition(conditions, new.type)
    if old is not None and old.status == new.status and old.last_transition_time is not None:
        transition = old.last_transition_time
    else:
        transition = new.last_transition_time or now
    updated = new.model_copy(update={"last_transition_time": transition})
    result = [updated if c.type == new.type else c for c in conditions]
    if old is None:
        result.append(updated)
    return result


class Comparator(enum.StrEnum):
    """How a measured value is compared with a threshold (names, not symbols: `>` breaks YAML)."""

    GREATER_THAN = "GreaterThan"
    GREATER_THAN_OR_EQUAL = "GreaterThanOrEqual"
    LESS_THAN = "LessThan"
    LESS_THAN_OR_EQUAL = "LessThanOrEqual"

    def holds(self, value: float, threshold: float) -> bool:
        """Whether `value <comparator> threshold`."""
        match self:
            case Comparator.GREATER_THAN:
                return value > threshold
            case Comparator.GREATER_THAN_OR_EQUAL:
                return value >= threshold
            case Comparator.LESS_THAN:
                return value < threshold
            case Comparator.LESS_THAN_OR_EQUAL:
                return value <= threshold
        raise AssertionError(self)


class SecretKeyRef(ApiModel):
    """A key of a Secret in the object's namespace. Secrets are only ever referenced, never copied."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")
    key: str = Field(
        default="apiKey",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in the Secret's data that holds the value.",
    )


class Toleration(ApiModel):
    """A Pod toleration (core/v1 Toleration) copied onto the workload's Pods."""

    key: str | None = Field(
        default=None,
        max_length=316,
        description="Taint key to tolerate; empty with operator Exists tolerates every taint.",
    )
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Exists or Equal (the default)."
    )
    value: str | None = Field(
        default=None, max_length=63, description="Taint value to match when operator is Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the Pod stays bound after the taint appears."
    )


class BaseModelRef(ApiModel):
    """The model that fine-tuning starts from."""

    uri: str = Field(
        min_length=1,
        max_length=1024,
        pattern=MODEL_URI_PATTERN,
        description=(
            "Where the base model lives: hf://<org>/<name> (resolved from the trainer's offline cache; "
            "nothing is downloaded at run time), s3://<bucket>/<prefix>, pvc://<claim>/<path>, "
            "file://<path> or an absolute path inside the trainer image."
        ),
    )
    gguf_file: str | None = Field(
        default=None,
        max_length=253,
        description="A GGUF file inside the model location to load (dequantized before training).",
    )
    revision: str | None = Field(
        default=None, max_length=253, description="Revision (branch, tag or commit) of an hf:// model."
    )


class GateBaseline(enum.StrEnum):
    """What a gate's threshold is compared against."""

    ABSOLUTE = "Absolute"  # the measured value itself
    RATIO_TO_BASE = "RatioToBase"  # measured value / the base model's value on the same test


@dataclass(frozen=True)
class PrinterColumn:
    """One `additionalPrinterColumns` entry of a CRD (what `kubectl get` shows)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0


@dataclass(frozen=True)
class KindInfo:
    """Names and `kubectl get` columns of a kind; the schema comes from the model itself."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = ("finetune",)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


AGE_COLUMN = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since the object was created.")
PHASE_COLUMN = PrinterColumn("Phase", "string", ".status.phase", "Current phase.")


class Resource(ApiModel):
    """Fields every top-level object has; subclasses add `spec`, `status` and `KIND_INFO`."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["finetune.ai/v1alpha1"] = Field(
        default=API_VERSION, description="finetune.ai/v1alpha1"
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")

    @property
    def name(self) -> str:
        return self.metadata.get("name", "")

    @property
    def namespace(self) -> str:
        return self.metadata.get("namespace", "")

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0))
