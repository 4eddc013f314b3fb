"""Rollout (`ro`, `rollouts.finetune.ai`): serve a model's versions and shift traffic progressively.

A Rollout runs one model: a pinned version, or whatever version of the model was Approved
last. When the desired version changes, the new one becomes the canary and the steps are
walked: setWeight moves traffic, pause waits (for a duration, or for a promote), analysis
runs the Prometheus metrics and rolls back on failure. The default steps are
10% -> 25% -> 50% -> 100% with an analysis after each weight (an analysis with no metrics
passes at once).

Rollback is declarative (pin an earlier version: it goes straight back, no analysis) or
imperative: the CLI writes `status.abortRequest` / `status.promoteRequest` through the status
subresource, as Argo Rollouts does, so a GitOps tool sees no drift in spec.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, JsonValue, StringConstraints, field_validator, model_validator

from finetune_operator.api.common import (
    check_json_schema,
    check_regex,
    check_url,
    url_rules,
    AGE_COLUMN,
    MAX_DERIVED_NAME,
    PHASE_COLUMN,
    ApiModel,
    Condition,
    DnsLabel,
    Duration,
    KindInfo,
    ObjectName,
    PrinterColumn,
    Quantity,
    Resource,
    StatusModel,
    Toleration,
    VersionName,
    cel,
    cel_rules,
    conditions_field,
    max_owner_name,
    name_problem,
    name_rules,
    section,
)

MSG_VERSION_XOR_TRACK = "exactly one of spec.version (pinned) or spec.track must be set"
MSG_STEP_ONE_ACTION = "each canary step must set exactly one of setWeight, pause, analysis or experiment"
MSG_ONE_ROUTER = "exactly one of trafficRouter.gatewayAPI, istio, kserve or replicaRatio must be set"
MSG_THRESHOLDS = (
    "analysis metric thresholds need min, max, maxRatioToStable, minRatioToStable, maxIncrease or maxDecrease, "
    "and min <= max"
)
MSG_ONE_JUDGEMENT = "an analysis metric sets exactly one of thresholds or mannWhitney"
MSG_NONE_ALONE = (
    "spec.analysis.none: true opts out of analysis: remove spec.analysis.prometheus and spec.analysis.metrics, "
    "or drop none to analyse"
)
MSG_EXPERIMENT_WEIGHT = "an experiment step's weight must be between 1 and 99 (the split it holds)"
MSG_WEIGHTS_INCREASE = (
    "spec.strategy.canary.steps: the setWeight values must strictly increase from one step to the next "
    "(e.g. 10, 25, 50, 100); a repeated or lower weight would take traffic back from the canary without a "
    "rollback: remove or reorder the step"
)
# The analysis used when spec.analysis lists no metrics (logic.analysis.default_metrics): the
# names an analysis or experiment step may select without spec.analysis.metrics.
DEFAULT_METRIC_NAMES = ("error-rate", "latency-p95", "format-compliance")
MSG_TEMPLATES_DEFINED = (
    "every name in spec.strategy.canary.steps[*].analysis.templates and experiment.templates must be a metric "
    "defined in spec.analysis.metrics (without metrics, one of the defaults: "
    + ", ".join(DEFAULT_METRIC_NAMES)
    + "): define the metric in spec.analysis.metrics or fix the name"
)
# Every child is named `<rollout>-<suffix>`: the Services `<rollout>-stable`, `<rollout>-canary`
# and `<rollout>-<version>` (a DNS-1035 label, at most 63 characters).
CHILD_NAME_SUFFIXES = ("-stable", "-canary")
NAME_MAX_LENGTH = max_owner_name(CHILD_NAME_SUFFIXES)
MSG_NAME_VERSION_LENGTH = (
    "metadata.name and spec.version together must be at most 62 characters: the Service <name>-<version> "
    "is named after both and must fit in 63; shorten the Rollout's name or the version"
)


class Track(enum.StrEnum):
    LATEST_APPROVED = "LatestApproved"  # the most recently approved ModelVersion of the model


class ServingType(enum.StrEnum):
    VLLM = "vllm"  # vLLM OpenAI-compatible server; adapters served with multi-LoRA
    CUSTOM = "custom"  # your own image and args


class RolloutPhase(enum.StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    ROLLED_BACK = "RolledBack"


class HistoryAction(enum.StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    ABORT = "abort"


class HistoryTrigger(enum.StrEnum):
    """What made a history entry happen; the Rollout's decisions read this, never the reason text."""

    STEPS = "Steps"  # every canary step passed: the candidate became stable
    ANALYSIS = "Analysis"  # a failed analysis sent the candidate's traffic back to stable
    ABORT = "Abort"  # an abort request sent the candidate's traffic back to stable
    REQUEST = "Request"  # a promote or rollback request (kubectl finetune)
    SPEC = "Spec"  # spec.version was pinned to an earlier version (declarative rollback)
    SERVING = "ServingFailed"  # the candidate's serving Pods refused its artifact (digest mismatch)


# Versions ended by these triggers were refused: a rollback or pin to them needs force.
REFUSING_TRIGGERS = (HistoryTrigger.ANALYSIS, HistoryTrigger.ABORT, HistoryTrigger.SERVING)
FORCE_VERSION_ANNOTATION = "finetune.ai/force-version"


class MeasurementPhase(enum.StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"  # the query itself failed or returned no data


class AnalysisPhase(enum.StrEnum):
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class KeyRef(ApiModel):
    """A key of a Secret or ConfigMap in the Rollout's namespace."""

    name: ObjectName = Field(description="Name of the Secret or ConfigMap, in the same namespace.")
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in its data."
    )


MSG_ENV_ONE_SOURCE = "exactly one of valueFrom.secretKeyRef or valueFrom.configMapKeyRef must be set"
MSG_ENV_VALUE_AND_FROM = "set either value or valueFrom of an environment variable, not both"


class EnvVarSource(ApiModel):
    """Where a variable's value comes from: a Secret key (never copied anywhere) or a ConfigMap key."""

    model_config = {
        "json_schema_extra": cel_rules(cel("has(self.secretKeyRef) != has(self.configMapKeyRef)", MSG_ENV_ONE_SOURCE))
    }

    secret_key_ref: KeyRef | None = Field(default=None, description="A key of a Secret (secretKeyRef in the Pod).")
    config_map_key_ref: KeyRef | None = Field(default=None, description="A key of a ConfigMap.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError(MSG_ENV_ONE_SOURCE)
        return self


class EnvVar(ApiModel):
    """An environment variable of the serving container: a literal value, or a reference."""

    model_config = {
        "json_schema_extra": cel_rules(cel("!has(self.valueFrom) || !has(self.value) || self.value == ''", MSG_ENV_VALUE_AND_FROM))
    }

    name: str = Field(min_length=1, max_length=253, description="Variable name.")
    value: str = Field(default="", description="Variable value.")
    value_from: EnvVarSource | None = Field(
        default=None, description="The value from a Secret or ConfigMap key; secrets are referenced, never copied."
    )

    @model_validator(mode="after")
    def _value_or_reference(self) -> EnvVar:
        if self.value_from is not None and self.value:
            raise ValueError(MSG_ENV_VALUE_AND_FROM)
        return self

    def to_pod(self) -> dict[str, Any]:
        """The container env entry."""
        if self.value_from is None:
            return {"name": self.name, "value": self.value}
        source = self.value_from
        if source.secret_key_ref is not None:
            return {"name": self.name, "valueFrom": {"secretKeyRef": source.secret_key_ref.model_dump()}}
        assert source.config_map_key_ref is not None, "EnvVarSource validates that it has one reference"
        return {"name": self.name, "valueFrom": {"configMapKeyRef": source.config_map_key_ref.model_dump()}}


class ServingResources(ApiModel):
    """Compute per serving replica."""

    gpus: int = Field(default=1, ge=0, le=16, description="GPUs per replica.")
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per replica.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per replica.")
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu", max_length=253, description="Extended resource name of the GPUs."
    )


class ServingTemplate(ApiModel):
    """How each version is served."""

    type: ServingType = Field(
        default=ServingType.VLLM, description="vllm (default; adapters via multi-LoRA) or custom."
    )
    image: str | None = Field(
        default=None, max_length=1024, description="Serving image; defaults to the operator's vLLM image."
    )
    command: list[str] = Field(
        default_factory=list, max_length=64, description="Entrypoint override (custom serving)."
    )
    args: list[str] = Field(
        default_factory=list, max_length=128, description="Extra arguments to the server."
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=64, description="Extra environment variables.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the OpenAI-compatible HTTP API.")
    replicas: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Replicas of the stable version (the canary is scaled to its weight).",
    )
    resources: ServingResources = section(ServingResources, "Compute per replica.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the serving Pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations of the serving Pods."
    )
    format_schema: dict[str, Any] | None = Field(
        default=None,
        description=(
            "JSON Schema every answer must satisfy; the server counts passes and failures "
            "(finetune_serve_format_checks_total) and the default analysis compares compliance with stable."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )
    format_regex: str | None = Field(
        default=None,
        max_length=4096,
        description="Regular expression every answer must match in full (instead of, or with, formatSchema).",
    )

    @field_validator("format_schema")
    @classmethod
    def _schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_json_schema(schema, "spec.serving.formatSchema")

    @field_validator("format_regex")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        return check_regex(pattern, "spec.serving.formatRegex")

    @property
    def has_format_check(self) -> bool:
        return self.format_schema is not None or self.format_regex is not None


class PauseStep(ApiModel):
    """Wait: for a duration, or (without one) until promoted."""

    duration: Duration | None = Field(
        default=None, description="How long to wait, e.g. 30s, 10m, 1h; empty waits for a promote."
    )


MetricName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z][-A-Za-z0-9_]*$")
]


class AnalysisStep(ApiModel):
    """Run metric analysis against the canary and go on only if it succeeds."""

    templates: list[MetricName] = Field(
        default_factory=list,
        max_length=16,
        description="Names of spec.analysis.metrics to run; empty runs all of them.",
    )


class ExperimentOutcome(enum.StrEnum):
    CONTINUE = "Continue"  # better or equal: go on with the next step
    PROMOTE = "Promote"  # better or equal: straight to 100%, as the seed's A/B flow


class ExperimentStep(ApiModel):
    """A/B: hold a fixed split for a duration while the canary is judged against stable, then decide.

    Better or equal -> `onSuccess` (Continue, or Promote straight to 100%); worse -> rollback (at
    once, even before the duration ends); not enough data by the end -> pause for a human.
    """

    weight: int = Field(ge=1, le=99, description="Percentage of traffic on the canary during the experiment.")
    duration: Duration = Field(description="How long to hold the split, e.g. 30m.")
    templates: list[MetricName] = Field(
        default_factory=list,
        max_length=16,
        description="Names of spec.analysis.metrics (or of the defaults) to judge with; empty runs all.",
    )
    on_success: ExperimentOutcome = Field(
        default=ExperimentOutcome.CONTINUE,
        description="Continue with the next step, or Promote straight to 100%, when the canary is not worse.",
    )


class CanaryStep(ApiModel):
    """One step of the canary: exactly one of setWeight, pause, analysis or experiment."""

    model_config = {
        "json_schema_extra": cel_rules(
            cel(
                "[has(self.setWeight), has(self.pause), has(self.analysis), has(self.experiment)]"
                ".filter(x, x).size() == 1",
                MSG_STEP_ONE_ACTION,
            )
        )
    }

    set_weight: int | None = Field(
        default=None, ge=0, le=100, description="Send this percentage of traffic to the canary."
    )
    pause: PauseStep | None = Field(default=None, description="Wait for a duration or for a promote.")
    analysis: AnalysisStep | None = Field(
        default=None, description="Run metric analysis; failure rolls back."
    )
    experiment: ExperimentStep | None = Field(
        default=None, description="Hold a split for a duration and decide by comparing canary with stable."
    )

    @model_validator(mode="after")
    def _one_action(self) -> CanaryStep:
        if sum(a is not None for a in (self.set_weight, self.pause, self.analysis, self.experiment)) != 1:
            raise ValueError(MSG_STEP_ONE_ACTION)
        return self


DEFAULT_CANARY_STEPS: list[JsonValue] = [
    {"setWeight": 10},
    {"analysis": {}},
    {"setWeight": 25},
    {"analysis": {}},
    {"setWeight": 50},
    {"analysis": {}},
    {"setWeight": 100},
]


class CanaryStrategy(ApiModel):
    """The canary steps."""

    model_config = {
        "json_schema_extra": cel_rules(
            cel(
                "!has(self.steps) || (self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()"
                " && self.steps.filter(s, has(s.setWeight)).all(a,"
                " self.steps.filter(b, has(b.setWeight) && b.setWeight == a.setWeight).size() == 1))",
                MSG_WEIGHTS_INCREASE,
                field_path=".steps",
            )
        )
    }

    steps: list[CanaryStep] = Field(
        default_factory=lambda: [CanaryStep.model_validate(step) for step in DEFAULT_CANARY_STEPS],
        min_length=1,
        max_length=32,
        description=(
            "Steps walked in order; defaults to 10% -> 25% -> 50% -> 100% with an analysis after each weight. "
            "The setWeight values must strictly increase from step to step (a repeated or lower weight is "
            "refused: going back is a rollback, not a step)."
        ),
        json_schema_extra={"default": DEFAULT_CANARY_STEPS},
    )

    @field_validator("steps")
    @classmethod
    def _weights_increase(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        weights = [step.set_weight for step in steps if step.set_weight is not None]
        if any(later <= earlier for earlier, later in zip(weights, weights[1:])):
            raise ValueError(MSG_WEIGHTS_INCREASE)
        return steps


class Strategy(ApiModel):
    """How a new version replaces the stable one."""

    canary: CanaryStrategy = section(CanaryStrategy, "Progressive traffic shifting in steps.")


MSG_PROMETHEUS_CREDENTIALS = (
    "spec.analysis.prometheus.address must not carry credentials (user:password@host): they would be stored in "
    "the Rollout and its status; use an address that needs none (the in-cluster Prometheus Service, or an "
    "authenticating proxy in front of it)"
)
PROMETHEUS_FIELD = "spec.analysis.prometheus.address"


class PrometheusProvider(ApiModel):
    """The Prometheus to query."""

    model_config = {"json_schema_extra": cel_rules(*url_rules("address", PROMETHEUS_FIELD, MSG_PROMETHEUS_CREDENTIALS))}

    @field_validator("address")
    @classmethod
    def _plain_address(cls, address: str) -> str:
        return check_url(address, PROMETHEUS_FIELD, MSG_PROMETHEUS_CREDENTIALS)

    address: str = Field(
        max_length=2048,
        pattern=r"^https?://.+",
        description="Base URL, e.g. http://prometheus.monitoring:9090.",
    )


class Thresholds(ApiModel):
    """Range a measurement must lie in to succeed: absolute, or relative to the stable version.

    A relative threshold runs the same query for the stable version too (`{{version}}` filled
    with each) and compares the two values; every threshold given must hold.
    """

    model_config = {
        "json_schema_extra": cel_rules(
            cel(
                "(has(self.min) || has(self.max) || has(self.maxRatioToStable) || has(self.minRatioToStable)"
                " || has(self.maxIncrease) || has(self.maxDecrease))"
                " && (!has(self.min) || !has(self.max) || self.min <= self.max)",
                MSG_THRESHOLDS,
            )
        )
    }

    min: float | None = Field(default=None, description="A value below this fails.")
    max: float | None = Field(default=None, description="A value above this fails.")
    max_ratio_to_stable: float | None = Field(
        default=None,
        gt=0,
        description="Lower is better: canary / stable above this fails, e.g. 1.2 for latency at most 20% higher.",
    )
    min_ratio_to_stable: float | None = Field(
        default=None,
        gt=0,
        description="Higher is better: canary / stable below this fails, e.g. 0.95 for a score at most 5% lower.",
    )
    max_increase: float | None = Field(
        default=None,
        ge=0,
        description="Lower is better: canary - stable above this fails, e.g. 0.01 for an error rate at most 1 point higher.",
    )
    max_decrease: float | None = Field(
        default=None,
        ge=0,
        description="Higher is better: stable - canary above this fails, e.g. 0.01 for format compliance at most 1 point lower.",
    )

    @property
    def relative(self) -> bool:
        return any(
            v is not None
            for v in (self.max_ratio_to_stable, self.min_ratio_to_stable, self.max_increase, self.max_decrease)
        )

    @model_validator(mode="after")
    def _range(self) -> Thresholds:
        limits = (self.min, self.max, self.max_ratio_to_stable, self.min_ratio_to_stable, self.max_increase, self.max_decrease)
        if all(v is None for v in limits) or (
            self.min is not None and self.max is not None and self.min > self.max
        ):
            raise ValueError(MSG_THRESHOLDS)
        return self


class MannWhitneyTest(ApiModel):
    """Compare the canary's per-request samples with the stable version's (Mann–Whitney U).

    The query returns a Prometheus histogram for `{{version}}`: one series per bucket with its
    `le` label and the cumulative count, e.g.
    `sum by (le) (increase(finetune_serve_request_duration_seconds_bucket{...}[5m]))`.
    """

    higher_is_better: bool = Field(
        default=False, description="true for scores (feedback), false for latency, lengths and errors."
    )
    min_samples: int = Field(
        default=50,
        ge=5,
        le=1000000,
        description="Samples needed on each side; fewer is inconclusive, never a pass.",
    )
    min_effect_size: float = Field(
        default=0.06,
        ge=0.0,
        le=0.5,
        description=(
            "How far P(canary request worse than a stable one) must exceed 0.5 to fail (0.06: a small "
            "effect); smaller differences pass however many samples there are."
        ),
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1.0, description="Confidence of the one-sided test that the canary is worse."
    )


class AnalysisMetric(ApiModel):
    """A Prometheus query measured repeatedly against the canary (and the stable version, when relative)."""

    model_config = {
        "json_schema_extra": cel_rules(
            cel("has(self.thresholds) != has(self.mannWhitney)", MSG_ONE_JUDGEMENT)
        )
    }

    name: MetricName = Field(description="Metric name, referenced by analysis steps.")
    query: str = Field(
        min_length=1,
        max_length=8192,
        description=(
            "PromQL returning one number (a histogram by le for mannWhitney); {{model}}, {{version}} (the "
            "canary; the stable version when a relative threshold or mannWhitney runs it for stable too), "
            "{{stableVersion}}, {{rollout}} and {{namespace}} are substituted."
        ),
    )
    thresholds: Thresholds | None = Field(
        default=None, description="Range a measurement must lie in to succeed, absolute or relative to stable."
    )
    mann_whitney: MannWhitneyTest | None = Field(
        default=None, description="Judge per-request samples against the stable version's instead of thresholds."
    )
    inconclusive_band: float = Field(
        default=0.0,
        ge=0.0,
        description=(
            "A failing value within this distance of a threshold counts as inconclusive rather than failed."
        ),
    )
    interval: Duration = Field(default="1m", description="Time between measurements.")
    count: int = Field(
        default=5,
        ge=1,
        le=1000,
        description=(
            "Conclusive measurements (successful or failed) per analysis run; inconclusive ones and "
            "query errors are measured again."
        ),
    )
    failure_limit: int = Field(
        default=0, ge=0, description="Failed measurements tolerated; one more fails the analysis."
    )
    inconclusive_limit: int = Field(
        default=0,
        ge=0,
        description="Inconclusive measurements tolerated; one more pauses the rollout for a human.",
    )

    @property
    def relative(self) -> bool:
        """Measured for the stable version too."""
        return self.mann_whitney is not None or (self.thresholds is not None and self.thresholds.relative)

    @model_validator(mode="after")
    def _one_judgement(self) -> AnalysisMetric:
        if (self.thresholds is None) == (self.mann_whitney is None):
            raise ValueError(MSG_ONE_JUDGEMENT)
        return self


class AnalysisSpec(ApiModel):
    """Metric analysis run by the analysis and experiment steps.

    Without metrics the defaults run: error rate and p95 latency of the canary relative to
    stable, plus format compliance when the version has a format schema. Opting out takes
    `none: true`, and the status says the version was promoted without analysis.
    """

    model_config = {
        "json_schema_extra": cel_rules(
            cel("!has(self.none) || !self.none || (!has(self.prometheus) && !has(self.metrics))", MSG_NONE_ALONE)
        )
    }

    none: bool = Field(
        default=False,
        description="Promote without any analysis (steps pass at once; status says so). Off by default.",
    )
    prometheus: PrometheusProvider | None = Field(default=None, description="The Prometheus to query.")
    metrics: list[AnalysisMetric] = Field(
        default_factory=list,
        max_length=16,
        description="Metrics to measure; empty runs the defaults (relative to stable).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, metrics: list[AnalysisMetric]) -> list[AnalysisMetric]:
        # The API server refuses the same (a list map keyed by name: "Duplicate value").
        names = [metric.name for metric in metrics]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"spec.analysis.metrics: metric names must be unique ({', '.join(repeated)} given more than once): "
                "a step's templates could not say which one it means; rename or remove the copy"
            )
        return metrics

    @model_validator(mode="after")
    def _none_alone(self) -> AnalysisSpec:
        if self.none and (self.prometheus is not None or self.metrics):
            raise ValueError(MSG_NONE_ALONE)
        return self


class GatewayApiRouter(ApiModel):
    """Gateway API: the weights of an HTTPRoute's backendRefs."""

    http_route: DnsLabel | None = Field(
        default=None, description="HTTPRoute to manage; defaults to the Rollout's name."
    )
    namespace: DnsLabel | None = Field(
        default=None, description="Namespace of the HTTPRoute; defaults to the Rollout's."
    )


class IstioRouter(ApiModel):
    """Istio: the weights of a VirtualService's HTTP routes."""

    virtual_service: DnsLabel = Field(description="VirtualService to manage, in the Rollout's namespace.")
    routes: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=16,
        description="Names of the HTTP routes to weight; empty means all.",
    )


class KServeRouter(ApiModel):
    """KServe: canaryTrafficPercent of an InferenceService."""

    inference_service: DnsLabel = Field(description="InferenceService to manage, in the Rollout's namespace.")


class ReplicaRatioRouter(ApiModel):
    """No router: traffic follows the ratio of canary to stable replicas behind one Service."""


class TrafficRouter(ApiModel):
    """What shifts traffic between stable and canary: exactly one router."""

    model_config = {
        "json_schema_extra": cel_rules(
            cel(
                "[has(self.gatewayAPI), has(self.istio), has(self.kserve), has(self.replicaRatio)]"
                ".filter(x, x).size() == 1",
                MSG_ONE_ROUTER,
            )
        )
    }

    gateway_api: GatewayApiRouter | None = Field(
        default=None, alias="gatewayAPI", description="Gateway API HTTPRoute (the default)."
    )
    istio: IstioRouter | None = Field(default=None, description="Istio VirtualService.")
    kserve: KServeRouter | None = Field(default=None, description="KServe InferenceService.")
    replica_ratio: ReplicaRatioRouter | None = Field(
        default=None, description="Replica-ratio fallback without a router."
    )

    @model_validator(mode="after")
    def _one_router(self) -> TrafficRouter:
        routers = (self.gateway_api, self.istio, self.kserve, self.replica_ratio)
        if sum(router is not None for router in routers) != 1:
            raise ValueError(MSG_ONE_ROUTER)
        return self


# CEL: the template name `t` is a metric of spec.analysis.metrics or, without metrics, a default.
_DEFINED = (
    "(has(self.analysis) && has(self.analysis.metrics) && self.analysis.metrics.size() > 0"
    " ? self.analysis.metrics.exists(m, m.name == t) : t in " + str(list(DEFAULT_METRIC_NAMES)) + ")"
)


class RolloutSpec(ApiModel):
    """Which model version to serve and how to move traffic to a new one."""

    model_config = {
        "json_schema_extra": cel_rules(
            cel("has(self.version) != has(self.track)", MSG_VERSION_XOR_TRACK),
            # The twin is logic.rollout.parse_spec, which names the step (an InvalidSpec for an
            # object admitted before this rule).
            cel(
                "!has(self.strategy) || !has(self.strategy.canary) || !has(self.strategy.canary.steps)"
                " || (has(self.analysis) && has(self.analysis.none) && self.analysis.none)"
                " || self.strategy.canary.steps.all(s,"
                " (!has(s.analysis) || !has(s.analysis.templates) || s.analysis.templates.all(t, " + _DEFINED + "))"
                " && (!has(s.experiment) || !has(s.experiment.templates) || s.experiment.templates.all(t, "
                + _DEFINED + ")))",
                MSG_TEMPLATES_DEFINED,
                field_path=".strategy.canary.steps",
            ),
        )
    }

    model_name: DnsLabel = Field(
        description="Model whose ModelVersions are served (spec.modelName of the ModelVersions)."
    )
    version: VersionName | None = Field(
        default=None,
        description=(
            "Pinned version to run; pin an earlier one to roll back. A version that is Rejected or was "
            "aborted or rolled back by analysis is refused unless the annotation "
            "finetune.ai/force-version names it."
        ),
    )
    track: Track | None = Field(
        default=None, description="Follow a moving version instead of pinning: LatestApproved."
    )
    serving: ServingTemplate = section(ServingTemplate, "How each version is served.")
    strategy: Strategy = section(Strategy, "How a new version replaces the stable one.")
    analysis: AnalysisSpec | None = Field(
        default=None, description="Prometheus metrics checked by analysis steps."
    )
    traffic_router: TrafficRouter = Field(
        default_factory=lambda: TrafficRouter(gateway_api=GatewayApiRouter()),
        description="What shifts traffic; defaults to a Gateway API HTTPRoute named after the Rollout.",
        json_schema_extra={"default": {"gatewayAPI": {}}},
    )
    scale_down_delay_seconds: int = Field(
        default=30,
        ge=0,
        le=86400,
        description="Keep the old version's Pods this long after traffic left them.",
    )

    @model_validator(mode="after")
    def _version_xor_track(self) -> RolloutSpec:
        if (self.version is None) == (self.track is None):
            raise ValueError(MSG_VERSION_XOR_TRACK)
        return self


class Measurement(StatusModel):
    """One measurement of an analysis metric."""

    value: float | None = Field(default=None, description="Measured value; empty when the query failed.")
    stable_value: float | None = Field(
        default=None, description="The stable version's value, for a metric judged relative to stable."
    )
    phase: MeasurementPhase = Field(description="Successful, Failed, Inconclusive or Error.")
    time: datetime | None = Field(default=None, description="When it was measured.")
    message: str | None = Field(default=None, description="Error or explanation.")


class MetricResult(StatusModel):
    """Measurements of one metric in the current analysis run."""

    name: str = Field(description="Metric name.")
    phase: AnalysisPhase = Field(
        default=AnalysisPhase.RUNNING, description="Running, Successful, Failed or Inconclusive."
    )
    measurements: list[Measurement] = Field(
        default_factory=list, max_length=1000, description="Measurements so far, oldest first."
    )
    successful: int = Field(default=0, ge=0, description="Successful measurements.")
    failed: int = Field(default=0, ge=0, description="Failed measurements.")
    inconclusive: int = Field(default=0, ge=0, description="Inconclusive measurements.")
    error: int = Field(default=0, ge=0, description="Measurements whose query failed.")


class AnalysisStatus(StatusModel):
    """The analysis run of the current step."""

    step_index: int | None = Field(default=None, ge=0, description="Index of the analysis step.")
    phase: AnalysisPhase = Field(
        default=AnalysisPhase.RUNNING, description="Running, Successful, Failed or Inconclusive."
    )
    start_time: datetime | None = Field(default=None, description="When the run started.")
    metrics: list[MetricResult] = Field(
        default_factory=list, max_length=16, description="Results per metric."
    )
    message: str | None = Field(default=None, description="Summary of the run.")


class Judgement(StatusModel):
    """The last judgement of a canary against stable: the decision, the figures and the tests."""

    step_index: int | None = Field(default=None, ge=0, description="Index of the analysis or experiment step.")
    candidate: str | None = Field(default=None, description="The canary version judged.")
    stable: str | None = Field(default=None, description="The stable version it was compared with.")
    verdict: AnalysisPhase = Field(description="Successful (not worse), Failed (worse) or Inconclusive (not enough data).")
    decision: str = Field(description="What the Rollout did: continue, promote, rollback or pause.")
    figures: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Per metric: the last measurement, canary vs stable value and the test used.",
    )
    time: datetime | None = Field(default=None, description="When it was decided.")


class HistoryEntry(StatusModel):
    """A promotion, rollback or abort."""

    action: HistoryAction = Field(description="promote, rollback or abort.")
    from_version: str | None = Field(default=None, alias="from", description="Version serving before.")
    to_version: str | None = Field(default=None, alias="to", description="Version serving after.")
    reason: str | None = Field(
        default=None, description="Why, e.g. the failed metric or the person who aborted."
    )
    trigger: HistoryTrigger | None = Field(
        default=None,
        description=(
            "What caused it: Steps (all canary steps passed), Analysis (failed analysis), Abort, Request "
            "(kubectl finetune promote/rollback), Spec (an earlier spec.version pinned) or ServingFailed "
            "(the candidate's Pods refused its artifact)."
        ),
    )
    forced: bool | None = Field(
        default=None,
        description=(
            "true when the version was served although it was Rejected, aborted or rolled back by analysis (force)."
        ),
    )
    time: datetime | None = Field(default=None, description="When it happened.")


class AbortRequest(StatusModel):
    """An emergency abort written by the CLI: route all traffic back to stable."""

    requested_at: datetime = Field(description="When the abort was requested; handled once per value.")
    reason: str | None = Field(default=None, description="Why, for the history.")
    requested_by: str | None = Field(default=None, description="Who requested it.")


class PromoteRequest(StatusModel):
    """A manual promote written by the CLI: leave a pause, or (full) skip to 100%."""

    requested_at: datetime = Field(description="When the promote was requested; handled once per value.")
    full: bool = Field(default=False, description="Skip the remaining steps and analysis and go to 100%.")
    reason: str | None = Field(default=None, description="Why, for the history.")
    requested_by: str | None = Field(default=None, description="Who requested it.")


class RollbackRequest(StatusModel):
    """An emergency rollback written by the CLI: serve the previous stable version at once."""

    requested_at: datetime = Field(description="When the rollback was requested; handled once per value.")
    to_version: VersionName | None = Field(
        default=None, description="Version to go back to; default: the one before the current stable."
    )
    force: bool = Field(
        default=False,
        description=(
            "Serve the version even if it is Rejected or was aborted or rolled back by analysis "
            "(recorded in history and as a Warning Event); without it such a rollback is refused."
        ),
    )
    reason: str | None = Field(default=None, description="Why, for the history.")
    requested_by: str | None = Field(default=None, description="Who requested it.")


class RolloutStatus(StatusModel):
    """Observed state of a Rollout."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation this status reflects."
    )
    phase: RolloutPhase | None = Field(
        default=None, description="Progressing, Paused, Healthy, Degraded or RolledBack."
    )
    current_step_index: int | None = Field(
        default=None, ge=0, description="Index of the canary step being walked."
    )
    step_start_time: datetime | None = Field(
        default=None, description="When the current step started (for pauses)."
    )
    canary_weight: int = Field(default=0, ge=0, le=100, description="Percentage of traffic on the candidate.")
    stable_version: VersionName | None = Field(
        default=None, description="Version receiving the rest of the traffic."
    )
    candidate_version: VersionName | None = Field(
        default=None, description="Version being rolled out, if any."
    )
    analysis: AnalysisStatus | None = Field(default=None, description="The analysis run of the current step.")
    judgement: Judgement | None = Field(
        default=None, description="The last judgement of a canary against stable (analysis or experiment step)."
    )
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=100,
        description="Promotions, rollbacks and aborts, oldest first (the last 100).",
    )
    abort_request: AbortRequest | None = Field(
        default=None, description="Abort requested by the CLI; written to status only."
    )
    promote_request: PromoteRequest | None = Field(
        default=None, description="Promote requested by the CLI; written to status only."
    )
    rollback_request: RollbackRequest | None = Field(
        default=None, description="Rollback requested by the CLI; written to status only."
    )
    last_handled_request: datetime | None = Field(
        default=None, description="requestedAt of the last abort or promote request acted on."
    )
    conditions: list[Condition] = conditions_field()
    message: str | None = Field(default=None, description="Human-readable summary of the current state.")


class Rollout(Resource):
    """Progressive delivery of a model's versions to live traffic."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        kind="Rollout",
        plural="rollouts",
        singular="rollout",
        short_names=("ro",),
        # Names that would make invalid children are refused at admission.
        rules=(
            *name_rules("Rollout", NAME_MAX_LENGTH),
            cel(
                f"!has(self.spec.version) || self.metadata.name.size() + 1 + self.spec.version.size() <= {MAX_DERIVED_NAME}",
                MSG_NAME_VERSION_LENGTH,
            ),
        ),
        printer_columns=(
            PrinterColumn("Model", "string", ".spec.modelName", "Model served."),
            PrinterColumn("Stable", "string", ".status.stableVersion", "Stable version."),
            PrinterColumn("Candidate", "string", ".status.candidateVersion", "Version being rolled out."),
            PrinterColumn(
                "Weight", "integer", ".status.canaryWeight", "Percentage of traffic on the candidate."
            ),
            PHASE_COLUMN,
            AGE_COLUMN,
        ),
    )

    kind: Literal["Rollout"] = Field(default="Rollout", description="Rollout")
    spec: RolloutSpec = Field(description="Which version to serve and how to shift traffic to it.")
    status: RolloutStatus = Field(default_factory=RolloutStatus, description="Observed state.")

    @model_validator(mode="after")
    def _name_fits(self) -> Rollout:
        """The twins of KIND_INFO.rules (the API server checks them at admission)."""
        if self.name:
            problem = name_problem(self.name, NAME_MAX_LENGTH)
            if problem:
                raise ValueError(f"metadata.name {problem}: the Rollout's Services are named after it")
            if self.spec.version and len(self.name) + 1 + len(self.spec.version) > MAX_DERIVED_NAME:
                raise ValueError(MSG_NAME_VERSION_LENGTH)
        return self
