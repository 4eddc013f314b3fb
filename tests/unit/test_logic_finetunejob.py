"""decide() for FineTuneJob: the first status, validity, and nothing more until something changes."""

from __future__ import annotations

import datetime

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from finetune_operator.logic import finetunejob
from finetune_operator.logic.finetunejob import Children, decide, parse_spec, parse_status
from finetune_operator.logic.spec import InvalidSpec, SpecProblem

T0 = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
NO_CHILDREN = Children()

VALID = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "dataset": {"inline": [{"instruction": "Summarize: printer jams", "output": "{\"category\": \"hardware\"}"}]},
}
INVALID = InvalidSpec((SpecProblem("spec.baseModel.uri", "'s3://B/x': bad bucket", "use s3://<bucket>/<prefix>"),))
OTHER_INVALID = InvalidSpec((SpecProblem("spec.dataset.uri", "bad", "fix it"),))


def spec(**changes):
    raw = {**VALID, **changes}
    return FineTuneJobSpec.model_validate(raw)


def status_after(*steps):
    """The status after reconciling each (spec, generation, now) step in turn."""
    status = FineTuneJobStatus()
    for step_spec, generation, now in steps:
        status = decide(step_spec, status, NO_CHILDREN, now, generation=generation).status
    return status


def condition(status, type):
    return next(c for c in status.conditions if c.type == type)


# --- decide ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("history", "current", "generation", "expected"),
    [
        pytest.param(
            [], spec(), 1,
            dict(phase="Preparing", accepted=("True", "SpecValid", T1), succeeded=("Unknown", "Preparing", T1),
                 events=[("Normal", "Accepted"), ("Normal", "Preparing")], changed=True),
            id="first-status-of-a-valid-job",
        ),
        pytest.param(
            [(spec(), 1, T0)], spec(), 1,
            dict(phase="Preparing", accepted=("True", "SpecValid", T0), succeeded=("Unknown", "Preparing", T0),
                 events=[], changed=False),
            id="nothing-changed-no-patch-no-event",
        ),
        pytest.param(
            [(spec(), 1, T0)], spec(method="sft"), 2,
            dict(phase="Preparing", accepted=("True", "SpecValid", T0), succeeded=("Unknown", "Preparing", T0),
                 events=[], changed=True),
            id="new-generation-same-verdict-keeps-transition-time",
        ),
        pytest.param(
            [], INVALID, 1,
            dict(phase="Failed", accepted=("False", "InvalidSpec", T1), succeeded=("False", "InvalidSpec", T1),
                 events=[("Warning", "InvalidSpec")], changed=True),
            id="invalid-spec-first-status",
        ),
        pytest.param(
            [(spec(), 1, T0)], INVALID, 2,
            dict(phase="Failed", accepted=("False", "InvalidSpec", T1), succeeded=("False", "InvalidSpec", T1),
                 events=[("Warning", "InvalidSpec")], changed=True),
            id="valid-job-edited-into-invalid-flips-time",
        ),
        pytest.param(
            [(INVALID, 1, T0)], INVALID, 1,
            dict(phase="Failed", accepted=("False", "InvalidSpec", T0), succeeded=("False", "InvalidSpec", T0),
                 events=[], changed=False),
            id="same-invalid-spec-again-no-event",
        ),
        pytest.param(
            [(INVALID, 1, T0)], OTHER_INVALID, 2,
            dict(phase="Failed", accepted=("False", "InvalidSpec", T0), succeeded=("False", "InvalidSpec", T0),
                 events=[("Warning", "InvalidSpec")], changed=True),
            id="different-problem-is-news-but-keeps-transition-time",
        ),
        pytest.param(
            [(INVALID, 1, T0)], spec(), 2,
            dict(phase="Preparing", accepted=("True", "SpecValid", T1), succeeded=("Unknown", "Preparing", T1),
                 events=[("Normal", "Accepted"), ("Normal", "Preparing")], changed=True),
            id="fixed-spec-is-accepted",
        ),
    ],
)
def test_decide(history, current, generation, expected):
    before = status_after(*history)

    decision = decide(current, before, NO_CHILDREN, T1, generation=generation)

    status = decision.status
    assert status.observed_generation == generation
    assert status.phase == expected["phase"]
    for type, (cond_status, reason, since) in (("Accepted", expected["accepted"]), ("Succeeded", expected["succeeded"])):
        cond = condition(status, type)
        assert (cond.status, cond.reason, cond.last_transition_time, cond.observed_generation) == (
            cond_status, reason, since, generation
        ), type
    assert [(e.type, e.reason) for e in decision.events] == expected["events"]
    assert decision.status_changed is expected["changed"]


def test_invalid_spec_message_names_field_and_fix():
    decision = decide(INVALID, FineTuneJobStatus(), NO_CHILDREN, T1, generation=1)
    message = condition(decision.status, "Accepted").message
    assert "spec.baseModel.uri" in message and "use s3://<bucket>/<prefix>" in message
    assert decision.events[0].message == message
    assert decision.status.message == message


def test_first_patch_is_the_whole_wire_status():
    decision = decide(spec(), FineTuneJobStatus(), NO_CHILDREN, T1, generation=3)
    patch = decision.status_patch
    assert patch["observedGeneration"] == 3
    assert patch["phase"] == "Preparing"
    assert [c["type"] for c in patch["conditions"]] == ["Accepted", "Advice", "Succeeded"]
    assert patch["conditions"][0]["lastTransitionTime"] == "2025-01-01T12:05:00Z"


def test_status_written_by_the_operator_reads_back_unchanged():
    written = decide(spec(), FineTuneJobStatus(), NO_CHILDREN, T0, generation=1).status_patch
    again = decide(spec(), parse_status(written), NO_CHILDREN, T1, generation=1)
    assert again.status_patch == {} and again.events == ()


def test_sub_second_clock_does_not_leak_into_status():
    now = T1.replace(microsecond=123456)
    decision = decide(spec(), FineTuneJobStatus(), NO_CHILDREN, now, generation=1)
    assert condition(decision.status, "Accepted").last_transition_time == T1


# --- parse_spec -----------------------------------------------------------------------------

def with_(path, value):
    """VALID with one nested key set, e.g. with_("baseModel.uri", "...")."""
    import copy

    raw = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param({"dataset": VALID["dataset"]}, "spec.baseModel", id="missing-base-model"),
        pytest.param(with_("method", "ppo"), "spec.method", id="unknown-method"),
        pytest.param({**VALID, "datset": {}}, "spec.datset", id="misspelt-field"),
        pytest.param(with_("baseModel.uri", "gs://bucket/model"), "spec.baseModel.uri", id="unsupported-scheme"),
        pytest.param(with_("baseModel.uri", "s3://Bad_Bucket/model"), "spec.baseModel.uri", id="s3-bucket-name-invalid"),
        pytest.param(with_("baseModel.uri", "pvc://Models/llama"), "spec.baseModel.uri", id="pvc-claim-name-invalid"),
        pytest.param(with_("baseModel.uri", "hf://org/name/extra"), "spec.baseModel.uri", id="hf-id-too-deep"),
        pytest.param(with_("baseModel.uri", "/models/../etc"), "spec.baseModel.uri", id="local-path-escapes"),
        pytest.param(
            {**VALID, "baseModel": {"uri": "s3://models/llama", "revision": "main"}},
            "spec.baseModel.revision",
            id="revision-without-hf",
        ),
        pytest.param(
            {**VALID, "dataset": {"uri": "s3://Bad_Bucket/data.jsonl"}}, "spec.dataset.uri", id="dataset-bucket-invalid"
        ),
        pytest.param(
            with_("adaptation", {"type": "full", "targetModules": ["q_proj"]}),
            "spec.adaptation.targetModules",
            id="target-modules-with-full-training",
        ),
        pytest.param(
            with_("resources", {"gpusPerNode": 0}) | {"hyperparameters": {"precision": "fp16"}},
            "spec.hyperparameters.precision",
            id="fp16-on-cpus",
        ),
        pytest.param(
            with_("resources", {"gpusPerNode": 0}) | {"adaptation": {"type": "qlora"}},
            "spec.resources.gpusPerNode",
            id="qlora-without-gpus-points-at-the-field",
        ),
        pytest.param(
            {**VALID, "dataset": {"uri": "s3://data/x.jsonl", "inline": [{"a": 1}]}}, "spec.dataset", id="two-dataset-sources"
        ),
        # Locations are normalised before use; what could reach outside what they name is refused.
        pytest.param(with_("output", {"uri": "pvc://store/."}), "spec.output.uri", id="output-claim-dot-segment"),
        pytest.param(with_("output", {"uri": "pvc://store"}), "spec.output.uri", id="output-bare-claim-root"),
        pytest.param(with_("output", {"uri": "pvc://store/"}), "spec.output.uri", id="output-claim-root-slash"),
        pytest.param(with_("output", {"uri": "pvc://store//./"}), "spec.output.uri", id="output-claim-root-dot-slashes"),
        pytest.param(with_("output", {"uri": "pvc://store/runs/../.."}), "spec.output.uri", id="output-escapes-claim"),
        pytest.param(with_("output", {"uri": "s3://bucket"}), "spec.output.uri", id="output-bare-bucket"),
        pytest.param(with_("output", {"uri": "/srv/runs/./a"}), "spec.output.uri", id="output-host-path-dot"),
        pytest.param(with_("output", {"uri": "file://etc/passwd"}), "spec.output.uri", id="output-file-uri-with-host"),
        pytest.param(with_("output", {"uri": "/srv/runs?x=1"}), "spec.output.uri", id="output-query"),
        pytest.param({**VALID, "dataset": {"uri": "pvc://data/./train.jsonl"}}, "spec.dataset.uri", id="dataset-dot-segment"),
        pytest.param({**VALID, "dataset": {"uri": "file:///data/../etc/shadow"}}, "spec.dataset.uri",
                     id="dataset-file-uri-escapes"),
        pytest.param(with_("baseModel.uri", "pvc://models/../other"), "spec.baseModel.uri", id="model-escapes-claim"),
        pytest.param(
            {**VALID, "dataset": {"inline": [{"instruction": "x" * 1024, "output": "y"}] * 200}},
            "spec.dataset",
            id="inline-dataset-over-the-byte-cap",
        ),
    ],
)
def test_invalid_spec_names_the_field(raw, field):
    parsed = parse_spec(raw)
    assert isinstance(parsed, InvalidSpec), parsed
    assert field in [problem.field for problem in parsed.problems], parsed.message
    assert field in parsed.message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(VALID, id="minimal"),
        pytest.param(with_("baseModel.uri", "hf://gpt2"), id="hf-id-without-org"),
        pytest.param(with_("baseModel.uri", "s3://models/llama-3/8b"), id="s3-prefix"),
        pytest.param(with_("baseModel.uri", "pvc://models/llama"), id="pvc-path"),
        pytest.param(with_("baseModel.uri", "/opt/models/tiny"), id="local-path"),
        pytest.param(with_("baseModel.uri", "file:///opt/models/tiny"), id="file-uri"),
        pytest.param({**VALID, "output": {"uri": "pvc://artifacts/ftj"}}, id="pvc-output"),
        pytest.param({**VALID, "output": {"uri": "pvc://artifacts//ftj/"}}, id="pvc-output-extra-slashes"),
        pytest.param({**VALID, "output": {"uri": "/srv/runs"}}, id="host-path-output-is-checked-against-settings-later"),
        pytest.param(with_("baseModel.uri", "pvc://models"), id="model-at-a-claim-root-is-only-read"),
        pytest.param({**VALID, "dataset": {"inline": [{"instruction": "x" * 100, "output": "y"}] * 100}},
                     id="inline-dataset-under-the-byte-cap"),
    ],
)
def test_valid_spec_parses(raw):
    assert isinstance(parse_spec(raw), FineTuneJobSpec)


def test_every_problem_is_reported_at_once():
    raw = with_("baseModel.uri", "s3://Bad_Bucket/model") | {
        "adaptation": {"type": "full", "targetModules": ["q_proj"]}
    }
    parsed = parse_spec(raw)
    assert {p.field for p in parsed.problems} == {"spec.baseModel.uri", "spec.adaptation.targetModules"}


def test_problems_say_the_fix():
    parsed = parse_spec(with_("output", {"uri": "pvc://store/."}))
    [problem] = parsed.problems
    assert problem.field == "spec.output.uri" and "'.'" in str(problem) and "write the location" in str(problem), problem
    parsed = parse_spec({**VALID, "dataset": {"inline": [{"instruction": "x" * 1024, "output": "y"}] * 200}})
    assert "dataset.inline" in parsed.message and "dataset.uri" in parsed.message


def test_long_problem_lists_are_shortened():
    many = InvalidSpec(tuple(SpecProblem(f"spec.f{i}", "bad") for i in range(8)))
    assert many.message.endswith("(and 3 more)")
    assert finetunejob.MSG_INVALID_SPEC.format(problems="x").startswith("the spec is invalid")
