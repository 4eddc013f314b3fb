"""Property-based: any spec of the three kinds is refused naming a field, or decided without error.

Hand-written strategies cover the fields where bad input concentrates (locations, weights,
templates, gate metrics, counts and ratios) with valid and invalid values mixed. For every
spec drawn: the operator's spec parsing (pydantic plus the semantic checks of logic/) either
refuses it with problems that each name a `spec.` field, or accepts it, and then the pure
reconcile logic never raises on it. Deterministic (derandomize) and without an example
database, so nothing is written into the checkout. tests/integration/test_spec_hypothesis.py
sends the children of accepted specs to the real API server.
"""

from __future__ import annotations

import datetime
from typing import Any

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis import strategies as st

from finetune_operator.api.common import EVALUATION_METRICS
from finetune_operator.api.finetunejob import FineTuneJobStatus
from finetune_operator.api.modelversion import ModelVersionStatus
from finetune_operator.api.rollout import DEFAULT_METRIC_NAMES, RolloutSpec
from finetune_operator.builders.finetunejob import Owner, Settings
from finetune_operator.logic import analysis as analysis_logic
from finetune_operator.logic import finetunejob as finetunejob_logic
from finetune_operator.logic import modelversion as modelversion_logic
from finetune_operator.logic import rollout as rollout_logic
from finetune_operator.logic.spec import InvalidSpec
from tests.unit.rollout_fixtures import GOOD, Cluster

# Hypothesis caches what it learns (constants of the code under test) in its home directory,
# `.hypothesis` in the working directory by default: keep it out of the checkout.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="hypothesis-"))
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
OWNER = Owner(name="ft", namespace="team", uid="uid-1")
SETTINGS = Settings(allowed_host_paths=("/srv/allowed",))

# --- strategies ----------------------------------------------------------------------------------

SCHEMES = st.sampled_from(["s3://", "pvc://", "file://", "file:///", "hf://", "", "/", "ftp://"])
AUTHORITIES = st.sampled_from(["datasets", "models", "ab", "Bad_Bucket", "claim.one", "-x", "", "HuggingFaceTB"])
SEGMENTS = st.lists(st.sampled_from(["data", "v1", "SmolLM2-135M", "t.jsonl", ".", "..", "", "allowed"]), max_size=3)
SUFFIXES = st.sampled_from(["", "", "", "?v=1", "#x", "/"])


def _uri(scheme: str, authority: str, segments: list[str], suffix: str) -> str:
    return scheme + authority + ("/" + "/".join(segments) if segments else "") + suffix


ANY_LOCATION = st.builds(_uri, SCHEMES, AUTHORITIES, SEGMENTS, SUFFIXES)


def mostly(valid: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Three draws in four from `valid`: most specs get far enough to exercise the logic."""
    return st.one_of(valid, valid, valid, anything)


MODEL_LOCATIONS = mostly(
    st.sampled_from(["hf://HuggingFaceTB/SmolLM2-135M", "s3://models/base", "pvc://models/base", "/models/base"]),
    ANY_LOCATION,
)
DATA_LOCATIONS = mostly(st.sampled_from(["s3://datasets/t.jsonl", "pvc://data/t.jsonl", "/data/t.jsonl"]), ANY_LOCATION)
OUTPUT_LOCATIONS = mostly(
    st.sampled_from(["s3://artifacts/runs", "pvc://store/runs", "/srv/allowed/out", "/srv/other/out"]), ANY_LOCATION
)
LOCATIONS = st.one_of(MODEL_LOCATIONS, ANY_LOCATION)
RATIOS = mostly(st.floats(min_value=0, max_value=1, allow_nan=False), st.floats(-0.5, 1.5, allow_nan=False))
SMALL_INTS = mostly(st.integers(min_value=1, max_value=50), st.integers(min_value=-2, max_value=70))

GATE_NAMES = mostly(st.sampled_from(["taskAccuracy", "safety", "latency"]), st.sampled_from(["rougeFloor", "bad name"]))
GATE_METRICS = mostly(st.sampled_from(EVALUATION_METRICS), st.sampled_from(["accuracy", "RougeL", ""]))
GATES = st.fixed_dictionaries(
    {"name": GATE_NAMES},
    optional={
        "metric": GATE_METRICS,
        "comparator": mostly(st.sampled_from(["GreaterThan", "LessThan"]), st.just(">")),
        "threshold": st.floats(min_value=-1, max_value=3, allow_nan=False),
        "baseline": st.sampled_from(["Absolute", "RatioToBase"]),
        "enabled": st.booleans(),
    },
)

FINETUNEJOB_SPECS = st.fixed_dictionaries(
    {
        "baseModel": st.fixed_dictionaries({"uri": MODEL_LOCATIONS}),
        "dataset": mostly(
            st.fixed_dictionaries({"uri": DATA_LOCATIONS}),
            st.one_of(
                st.fixed_dictionaries({"uri": DATA_LOCATIONS, "split": st.fixed_dictionaries(
                    {"train": RATIOS, "validation": RATIOS, "test": RATIOS})}),
                st.just({"inline": [{"instruction": "Summarise: a", "output": "a"}] * 10}),
                st.just({}),
            ),
        ),
    },
    optional={
        "method": mostly(st.just("sft"), st.sampled_from(["dpo", "ppo"])),
        "adaptation": st.fixed_dictionaries({}, optional={
            "type": mostly(st.sampled_from(["lora", "full"]), st.sampled_from(["qlora", "adapter"])),
            "rank": mostly(st.integers(min_value=1, max_value=64), st.integers(min_value=-1, max_value=300)),
            "dropout": RATIOS,
        }),
        "hyperparameters": st.fixed_dictionaries({}, optional={
            "learningRate": mostly(st.floats(1e-6, 1e-3), st.floats(min_value=-1e-3, max_value=1e-2, allow_nan=False)),
            "epochs": SMALL_INTS,
            "warmupRatio": RATIOS,
            "evalSteps": SMALL_INTS,
        }),
        "resources": st.fixed_dictionaries({}, optional={
            "gpusPerNode": mostly(st.integers(min_value=0, max_value=8), st.integers(min_value=-1, max_value=9)),
            "nodes": mostly(st.integers(min_value=1, max_value=4), st.just(0)),
        }),
        "evaluation": st.fixed_dictionaries({}, optional={"gates": st.lists(GATES, max_size=3)}),
        "output": st.fixed_dictionaries({}, optional={"uri": OUTPUT_LOCATIONS}),
        "suspend": st.booleans(),
    },
)

METRIC_NAMES = mostly(st.sampled_from(["error-ratio", *DEFAULT_METRIC_NAMES]), st.sampled_from(["latency", "9bad"]))
METRICS = st.fixed_dictionaries(
    {"name": METRIC_NAMES, "query": mostly(st.just("sum(rate(errors[1m]))"), st.just(""))},
    optional={
        "count": mostly(st.integers(min_value=1, max_value=5), st.just(0)),
    },
).flatmap(lambda metric: mostly(
    st.just({**metric, "thresholds": {"maxIncrease": 0.01}}),
    st.one_of(
        st.fixed_dictionaries({}, optional={"min": st.floats(-1, 1), "max": st.floats(-1, 1)}).map(
            lambda t: {**metric, "thresholds": t}),
        st.just({**metric, "mannWhitney": {}}),
        st.just({**metric, "thresholds": {"max": 1}, "mannWhitney": {}}),
    ),
))
VALID_STEPS = st.one_of(
    st.just({"pause": {"duration": "1m"}}),
    st.just({"pause": {}}),
    st.fixed_dictionaries({"analysis": st.fixed_dictionaries({}, optional={
        "templates": st.lists(METRIC_NAMES, max_size=2, unique=True)})}),
    st.fixed_dictionaries({"experiment": st.fixed_dictionaries(
        {"weight": st.integers(min_value=1, max_value=99), "duration": st.just("10m")},
        optional={"templates": st.lists(METRIC_NAMES, max_size=2, unique=True)})}),
)


def _with_weights(steps: list[dict[str, Any]], weights: list[int]) -> list[dict[str, Any]]:
    """The steps with setWeight steps (in the order the weights are drawn) put in front of each."""
    out: list[dict[str, Any]] = []
    for index, weight in enumerate(weights):
        out.append({"setWeight": weight})
        out += steps[index:index + 1]
    return out + steps[len(weights):]


STEP_LISTS = mostly(
    st.builds(_with_weights, st.lists(VALID_STEPS, max_size=4),
              st.lists(st.integers(min_value=0, max_value=100), max_size=4, unique=True).map(sorted)),
    st.lists(st.one_of(VALID_STEPS, st.just({}), st.fixed_dictionaries(
        {"setWeight": st.integers(min_value=-5, max_value=120)})), max_size=6),
)
ROLLOUT_SPECS = st.fixed_dictionaries(
    {"modelName": mostly(st.just("chat"), st.sampled_from(["Chat", ""]))},
    optional={
        "strategy": st.fixed_dictionaries({"canary": st.fixed_dictionaries({"steps": STEP_LISTS})}),
        "analysis": st.one_of(
            st.just({"none": True}),
            st.fixed_dictionaries({"prometheus": st.just({"address": "http://prometheus.monitoring:9090"})},
                                  optional={"metrics": st.lists(METRICS, max_size=3)}),
        ),
        "trafficRouter": mostly(st.sampled_from([{"gatewayAPI": {}}, {"replicaRatio": {}}]),
                                st.sampled_from([{}, {"istio": {}}])),
    },
).flatmap(lambda spec: mostly(
    st.sampled_from([{**spec, "track": "LatestApproved"}, {**spec, "version": "v2"}]),
    st.sampled_from([{**spec, "version": "V3"}, {**spec, "version": "v1", "track": "LatestApproved"}, spec]),
))

DIGEST = "sha256:" + "ab" * 32
MODELVERSION_SPECS = st.fixed_dictionaries(
    {
        "modelName": mostly(st.just("chat"), st.just("Chat")),
        "version": mostly(st.just("v1"), st.just("v1.2")),
        "baseModel": st.fixed_dictionaries({"uri": MODEL_LOCATIONS}),
        "artifact": st.fixed_dictionaries({"uri": OUTPUT_LOCATIONS, "digest": mostly(st.just(DIGEST), st.just("md5:x"))}),
    },
    optional={
        "evaluation": st.fixed_dictionaries({}, optional={
            "metrics": st.dictionaries(st.sampled_from(["taskAccuracy", "safetyPassRate", "accuracy"]),
                                       st.floats(0, 1)),
            "gates": st.lists(GATES.map(lambda g: {**g, "metric": g.get("metric", "taskAccuracy"),
                                                     "comparator": "GreaterThan", "threshold": 0.5}),
                              max_size=3, unique_by=lambda g: g["name"]),
        }),
    },
)


def assert_problems_name_fields(invalid: InvalidSpec) -> None:
    assert invalid.problems, "an InvalidSpec without problems"
    for problem in invalid.problems:
        assert problem.field.startswith("spec"), problem
        # A rule over several fields is reported on `spec`; its message names them itself.
        assert problem.field != "spec" or "spec." in problem.problem, problem


# --- properties ----------------------------------------------------------------------------------


@PROPERTY
@given(raw=FINETUNEJOB_SPECS)
def test_finetunejob_spec_is_refused_naming_a_field_or_decided(raw: dict[str, Any]) -> None:
    spec = finetunejob_logic.parse_spec(raw)
    if isinstance(spec, InvalidSpec):
        assert_problems_name_fields(spec)
        return
    decision = finetunejob_logic.decide(
        spec, FineTuneJobStatus(), finetunejob_logic.Children(), NOW, generation=1, owner=OWNER, settings=SETTINGS
    )
    accepted = next(c for c in decision.status.conditions if c.type == "Accepted")
    if accepted.reason == "InvalidSpec":
        # Refused at render time (a node path the operator does not allow): named, nothing created.
        assert "spec." in accepted.message and not decision.create
    for child in decision.create:
        assert child["metadata"]["name"] and len(child["metadata"]["name"]) <= 63, child["metadata"]


@PROPERTY
@given(raw=ROLLOUT_SPECS)
def test_rollout_spec_is_refused_naming_a_field_or_walked(raw: dict[str, Any]) -> None:
    spec = rollout_logic.parse_spec(raw)
    if isinstance(spec, InvalidSpec):
        assert_problems_name_fields(spec)
        return
    assert isinstance(spec, RolloutSpec)
    weights = [s.set_weight for s in spec.strategy.canary.steps if s.set_weight is not None]
    assert weights == sorted(set(weights)), "accepted weights strictly increase"
    # Every name a step selects is defined (admission and parse_spec agree on this).
    for step in spec.strategy.canary.steps:
        judged = step.analysis or step.experiment
        if judged is not None:
            analysis_logic.effective_metrics(spec.analysis, judged.templates, has_format_schema=True)
    cluster = Cluster(spec)
    cluster.approve(1, ready=True)
    cluster.approve(2, ready=True)
    for seconds in (0, 5, 70, 140, 300, 700, 1500, 4000):
        decision = cluster.reconcile(seconds, GOOD)
        assert 0 <= decision.status.canary_weight <= 100


@PROPERTY
@given(raw=MODELVERSION_SPECS)
def test_modelversion_spec_is_refused_naming_a_field_or_judged(raw: dict[str, Any]) -> None:
    spec = modelversion_logic.parse_spec(raw)
    if isinstance(spec, InvalidSpec):
        assert_problems_name_fields(spec)
        return
    for gate in spec.evaluation.gates if spec.evaluation else ():
        assert gate.metric in EVALUATION_METRICS
    decision = modelversion_logic.decide(spec, ModelVersionStatus(), NOW, generation=1)
    assert decision.status.phase is not None


def test_default_metric_names_are_the_analysis_defaults():
    """The names admission lets a step select without spec.analysis.metrics are logic's defaults."""
    assert {m.name for m in analysis_logic.default_metrics(has_format_schema=True)} == set(DEFAULT_METRIC_NAMES)
