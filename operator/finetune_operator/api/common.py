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
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

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


# user:password@ in a URL would put a credential in the object, its kopf annotation, the trainer
# config and every log line naming the URL: refused at admission for every URL field.
URL_USERINFO_RE = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@"
# Link-local addresses and cloud metadata services (AWS/Azure/GCP 169.254.169.254, AWS IPv6
# fd00:ec2::254, GCP metadata.google.internal, Alibaba 100.100.100.200): a URL the operator or a
# Pod fetches must never reach the node's instance metadata, which answers with the node's cloud
# credentials to anything on it. RE2 (CEL) and Python read this pattern alike.
METADATA_HOST_RE = (
    r"(?i)^[a-z][a-z0-9+.-]*://(169\.254\.[0-9]{1,3}\.[0-9]{1,3}|\[fe80:[^\]]*\]|\[fd00:ec2::254\]"
    r"|metadata\.google\.internal|metadata|100\.100\.100\.200)\.?([:/?#]|$)"
)


def metadata_message(field: str) -> str:
    return (
        f"{field} points at a link-local or cloud metadata-service address, which answers with the node's "
        "cloud credentials: use the service's cluster address (a Service name or its ClusterIP)"
    )


def check_url(value: str, field: str, credentials_message: str) -> str:
    """The pydantic side of the URL rules (the CRD's CEL says the same)."""
    if re.match(URL_USERINFO_RE, value):
        raise ValueError(credentials_message)
    if re.match(METADATA_HOST_RE, value):
        raise ValueError(metadata_message(field))
    return value


def check_json_schema(schema: Any, field: str) -> Any:
    """A JSON Schema field is checked as one (against its metaschema) before any Pod runs: an
    invalid schema would otherwise surface only in the evaluation, after the whole training run."""
    if schema is None:
        return schema
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "its top level"
        raise ValueError(
            f"{field} is not a valid JSON Schema: {exc.message} (at {where}); write a JSON Schema such as "
            "{type: object, required: [summary, priority]}"
        ) from None
    return schema


def check_regex(pattern: str | None, field: str) -> str | None:
    """A regular expression field is compiled before any Pod runs."""
    if pattern is None:
        return pattern
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{field} is not a valid regular expression: {exc}") from None
    return pattern


def url_rules(attribute: str, field: str, credentials_message: str) -> list[dict[str, str]]:
    """The CEL rules of a URL attribute: no credentials in it, no metadata-service address."""
    return [
        cel(f"!self.{attribute}.matches('{URL_USERINFO_RE}')", credentials_message, field_path=f".{attribute}"),
        # A raw CEL string: the pattern's backslashes are the regular expression's, not CEL escapes.
        cel(f"!self.{attribute}.matches(r'{METADATA_HOST_RE}')", metadata_message(field), field_path=f".{attribute}"),
    ]


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
    extra: JsonDict | None = {"default": {}} if server_default else None
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
# A version is part of object names (`<model>-<version>`, `<rollout>-<version>`), so it is a
# lowercase DNS label, short enough to leave room for the model's name in front of it.
VERSION_MAX_LENGTH = 32
VersionName = Annotated[
    str, StringConstraints(min_length=1, max_length=VERSION_MAX_LENGTH, pattern=DNS_LABEL_PATTERN)
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


# --- names of derived objects ----------------------------------------------------------------------
# The operator names every child `<owner name><suffix>`. Job names become a Pod label (`job-name`),
# Pod host names and Service names become DNS labels: each at most 63 characters. So the owner's
# name may be at most 63 minus its longest suffix, and must itself be a DNS-1035 label (a
# Service name starts with a letter). The API server checks both at admission (`name_rules`).
MAX_DERIVED_NAME = 63
DNS_1035_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def max_owner_name(suffixes: tuple[str, ...]) -> int:
    """How long an owner's name may be so that `<name><suffix>` fits for every suffix."""
    return MAX_DERIVED_NAME - max(len(suffix) for suffix in suffixes)


def name_rules(kind: str, max_length: int) -> tuple[dict[str, str], ...]:
    """Root CEL rules on `metadata.name`: a DNS-1035 label short enough for every child name."""
    return (
        cel(
            f"self.metadata.name.size() <= {max_length}",
            f"metadata.name must be at most {max_length} characters: the {kind}'s Jobs, Pods and "
            f"Services are named after it and must fit in {MAX_DERIVED_NAME}",
        ),
        cel(
            f"self.metadata.name.matches('{DNS_1035_LABEL_PATTERN}')",
            "metadata.name must start with a lowercase letter and hold only lowercase letters, "
            "digits and '-' (it names Jobs, Pods and Services)",
        ),
    )


def name_problem(name: str, max_length: int) -> str | None:
    """What `name_rules` would refuse about `name`, in the same words; None when it is fine."""
    if len(name) > max_length:
        return f"must be at most {max_length} characters (got {len(name)})"
    if not re.fullmatch(DNS_1035_LABEL_PATTERN, name):
        return "must start with a lowercase letter and hold only lowercase letters, digits and '-'"
    return None


# --- locations -------------------------------------------------------------------------------------
# A location (pvc://<claim>/<path>, s3://<bucket>/<key>, file:///<path> or /<path>) is used in its
# normalised form only: no '.' or '..' segments, no query or fragment, duplicate and trailing
# slashes dropped. What a location must never be is refused twice: by CEL at admission (`location_rules`)
# and by `parse_location` wherever a location is used, so a rule the API server did not see (an
# object created before the rule, a location reported by a trainer) still holds.

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_S3_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
MSG_LOCATION_DOT_SEGMENT = "must not contain '.' or '..' segments: write the location itself"
MSG_LOCATION_QUERY = "must not contain '?' or '#'"
MSG_LOCATION_CLAIM = "must name a PersistentVolumeClaim first: pvc://<claim>/<path>"
MSG_LOCATION_FILE_HOST = "file:// locations name no host: file:///<absolute path>"
MSG_LOCATION_ROOT_PROBLEM = "is the root of a claim, bucket or filesystem"
MSG_LOCATION_ROOT_FIX = "name a directory under it, e.g. pvc://<claim>/<dir>"
MSG_LOCATION_ROOT = f"{MSG_LOCATION_ROOT_PROBLEM}; {MSG_LOCATION_ROOT_FIX}"


class LocationError(ValueError):
    """A location that cannot be used: what is wrong with it, and the fix."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class Location:
    """A normalised storage location. `path` has no leading or trailing '/'; '' is the root."""

    scheme: Literal["pvc", "s3", "file", ""]
    authority: str  # the claim or bucket; '' for file:// and absolute paths
    path: str

    def __str__(self) -> str:
        if self.scheme == "":
            return "/" + self.path
        if self.scheme == "file":
            return "file:///" + self.path
        return f"{self.scheme}://{self.authority}" + (f"/{self.path}" if self.path else "")

    @property
    def is_root(self) -> bool:
        return not self.path

    @property
    def is_host_path(self) -> bool:
        """A node-local path (absolute or file://): mounted from the node, so guarded."""
        return self.scheme in ("", "file")

    @property
    def host_path(self) -> str:
        return "/" + self.path

    def child(self, *segments: str) -> Location:
        """This location with more segments; each must be a plain name."""
        for segment in segments:
            if not segment or "/" in segment or segment in (".", ".."):
                raise LocationError(f"{segment!r} is not a plain name", "use a name without '/'")
        return Location(self.scheme, self.authority, "/".join(s for s in (self.path, *segments) if s))

    def contains(self, other: Location) -> bool:
        """Whether `other` is this location or lies under it."""
        if (self.scheme, self.authority) != (other.scheme, other.authority):
            return False
        return not self.path or other.path == self.path or other.path.startswith(self.path + "/")


def parse_location(uri: str, *, allow_root: bool = True) -> Location:
    """The normalised location of `uri`, or LocationError saying what is wrong and the fix."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in uri):
        raise LocationError(f"{uri!r} contains control characters", "remove them")
    if "?" in uri or "#" in uri:
        raise LocationError(f"{uri!r} {MSG_LOCATION_QUERY}", "remove the query or fragment")
    scheme, separator, rest = uri.partition("://")
    if not separator:
        if not uri.startswith("/"):
            raise LocationError(f"{uri!r} is neither a URI nor an absolute path", "use pvc://, s3:// or an absolute path")
        scheme, authority, path = "", "", uri
    elif scheme == "file":
        if not rest.startswith("/"):
            raise LocationError(f"{uri!r} names a host", "use file:///<absolute path>")
        authority, path = "", rest
    elif scheme in ("pvc", "s3"):
        authority, _, path = rest.partition("/")
        if scheme == "pvc" and (len(authority) > 253 or not re.match(_DNS_SUBDOMAIN, authority)):
            raise LocationError(
                f"{authority!r} is not a PersistentVolumeClaim name",
                "use pvc://<claim>/<path> with the claim's name (lowercase letters, digits, '-' and '.')",
            )
        if scheme == "s3" and not re.match(_S3_BUCKET, authority):
            raise LocationError(
                f"{authority!r} is not a valid S3 bucket name",
                "use s3://<bucket>/<prefix> with a bucket of 3-63 lowercase letters, digits, dots or hyphens",
            )
    else:
        raise LocationError(f"scheme {scheme}:// is not a storage location", "use pvc://, s3:// or an absolute path")
    segments = [segment for segment in path.split("/") if segment]
    for segment in segments:
        if segment in (".", ".."):
            raise LocationError(f"{uri!r} has a {segment!r} segment", "write the location without '.' and '..' segments")
    location = Location(scheme, authority, "/".join(segments))  # type: ignore[arg-type]
    if location.is_root and not allow_root:
        raise LocationError(f"{uri!r} {MSG_LOCATION_ROOT_PROBLEM}", MSG_LOCATION_ROOT_FIX)
    return location


def location_rules(*, writable: bool) -> dict[str, Any]:
    """`json_schema_extra` of a location field: CEL twins of `parse_location`'s refusals.

    `writable` locations (outputs, registered artifacts) may not be the root of a claim, bucket
    or filesystem: a cleanup of such a location would remove everything else stored there.
    """
    rules = [
        cel("!self.matches('(^|/)[.][.]?(/|$)')", MSG_LOCATION_DOT_SEGMENT),
        cel("!self.matches('[?#]')", MSG_LOCATION_QUERY),
        cel("!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/|$)')", MSG_LOCATION_CLAIM),
        cel("!self.startsWith('file://') || self.startsWith('file:///')", MSG_LOCATION_FILE_HOST),
    ]
    if writable:
        rules.append(cel("!self.matches('^(pvc|s3)://[^/]*/*$') && !self.matches('^(file://)?/*$')", MSG_LOCATION_ROOT))
    return cel_rules(*rules)


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


# A key of a Secret's data.
SecretKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class SecretKeyRef(ApiModel):
    """A key of a Secret in the object's namespace. Secrets are only ever referenced, never copied."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")
    key: SecretKey = Field(default="apiKey", description="Key in the Secret's data that holds the value.")


class CredentialsSecretRef(ApiModel):
    """A Secret in the object's namespace holding object-store credentials: keys
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and optionally AWS_SESSION_TOKEN. Only the Pods
    that read or write the location get them, as secretKeyRef environment variables."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")


CREDENTIALS_SECRET_REF_DESCRIPTION = (
    "For an s3:// location: a Secret (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional "
    "AWS_SESSION_TOKEN) whose credentials reach only the Pods that use this location. Without it "
    "those Pods use the ServiceAccount's workload identity (the AWS SDK's default credential chain)."
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


class HubTokenSecretRef(ApiModel):
    """The Secret key holding a Hugging Face Hub token (an access token, hf_...)."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")
    key: SecretKey = Field(default="token", description="Key in the Secret's data that holds the token.")


class BaseModelRef(ApiModel):
    """The model that fine-tuning starts from."""

    uri: str = Field(
        min_length=1,
        max_length=1024,
        pattern=MODEL_URI_PATTERN,
        json_schema_extra=location_rules(writable=False),
        description=(
            "Where the base model lives: hf://<org>/<name> (downloaded from the Hub or the operator's "
            "hubEndpoint mirror into the model cache; only the cache answers when the operator runs "
            "with hubOffline), s3://<bucket>/<prefix>, pvc://<claim>/<path>, "
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
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        default=None, description=CREDENTIALS_SECRET_REF_DESCRIPTION
    )
    token_secret_ref: HubTokenSecretRef | None = Field(
        default=None,
        description="For an hf:// model: the Secret key holding a Hub token (private or gated repos). "
        "It reaches only the Pods that download the model (prepare, train, evaluate), as HF_TOKEN.",
    )

    @field_validator("uri")
    @classmethod
    def _plain_location(cls, uri: str) -> str:
        return usable_location(uri, writable=False)


@overload
def usable_location(uri: str, *, writable: bool) -> str: ...
@overload
def usable_location(uri: None, *, writable: bool) -> None: ...
@overload
def usable_location(uri: str | None, *, writable: bool) -> str | None: ...
def usable_location(uri: str | None, *, writable: bool) -> str | None:
    """The pydantic twin of `location_rules` (same patterns, same messages): the URI as written,
    or ValueError. Scheme-specific shapes (bucket names, hf:// ids) are checked in logic."""
    if uri is None:
        return uri
    if re.search(r"(^|/)[.][.]?(/|$)", uri):
        raise ValueError(MSG_LOCATION_DOT_SEGMENT)
    if re.search(r"[?#]", uri):
        raise ValueError(MSG_LOCATION_QUERY)
    if uri.startswith("pvc://") and not re.match(r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/|$)", uri):
        raise ValueError(MSG_LOCATION_CLAIM)
    if uri.startswith("file://") and not uri.startswith("file:///"):
        raise ValueError(MSG_LOCATION_FILE_HOST)
    if writable and (re.match(r"^(pvc|s3)://[^/]*/*$", uri) or re.match(r"^(file://)?/*$", uri)):
        raise ValueError(MSG_LOCATION_ROOT)
    return uri


# Every metric the trainer's evaluation reports (finetune_trainer.evaluate; the trainer's README
# describes each): a gate names one of these, since a gate on a metric that is never measured
# could only fail. Refused at admission (`gate_metric_rules`) and by pydantic (`check_gate_metric`).
EVALUATION_METRICS = (
    "taskAccuracy", "exactMatch", "tokenF1", "rougeL", "labelAccuracy", "jsonFieldAccuracy",
    "jsonValidity", "schemaCompliance", "regexCompliance", "formatCompliance",
    "safetyPassRate", "harmfulRefusalRate", "benignAnswerRate", "jailbreakRefusalRate",
    "piiLeakageRate", "piiLeakedCanaries", "toxicityMean", "toxicAnswerRate", "biasConsistency",
    "generalScore", "latencySeconds", "latencyP95Seconds", "tokensPerSecond",
)


def gate_metric_message(field: str) -> str:
    return (
        f"{field} must be a metric the evaluation reports: {', '.join(EVALUATION_METRICS)}; "
        "fix the name (metrics are case-sensitive)"
    )


def gate_metric_rule(field: str) -> dict[str, str]:
    """The CEL rule of a gate model: its `metric`, when set, is one of EVALUATION_METRICS."""
    names = ", ".join(f"'{name}'" for name in EVALUATION_METRICS)
    return cel(f"!has(self.metric) || self.metric in [{names}]", gate_metric_message(field), field_path=".metric")


def check_gate_metric(metric: str | None, field: str) -> str | None:
    """The pydantic twin of `gate_metric_rule`."""
    if metric is not None and metric not in EVALUATION_METRICS:
        raise ValueError(gate_metric_message(field))
    return metric


class GateBaseline(enum.StrEnum):
    """What a gate's threshold is compared against."""

    ABSOLUTE = "Absolute"  # the measured value itself
    RATIO_TO_BASE = "RatioToBase"  # measured value / the base model's value on the same test
    # the value on the parent version's test split / the parent's value there (continual learning)
    RATIO_TO_PARENT = "RatioToParent"


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
    # CEL rules on the whole object (e.g. on metadata.name, which only the root may see).
    rules: tuple[dict[str, str], ...] = ()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


AGE_COLUMN = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since the object was created.")
PHASE_COLUMN = PrinterColumn("Phase", "string", ".status.phase", "Current phase.")


class Resource(ApiModel):
    """Fields every top-level object has; subclasses add `spec`, `status` and `KIND_INFO`."""

    model_config = ConfigDict(extra="ignore")
    KIND_INFO: ClassVar[KindInfo]

    api_version: Literal["finetune.ai/v1alpha1"] = Field(
        default="finetune.ai/v1alpha1", description="finetune.ai/v1alpha1"
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
