"""The trainer's progress ConfigMap is untrusted input: what a hostile or broken trainer writes
there is ignored with a Warning, never crashes a reconcile, never reaches the status, and never
makes the next reconcile do something new (no loop of Events or patches)."""

from __future__ import annotations

import datetime
import json

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from finetune_operator.builders.finetunejob import Owner
from finetune_operator.logic import finetunejob
from finetune_operator.logic.finetunejob import Children, decide, parse_status
from finetune_operator.logic.finetunejob_children import read_progress
from tests.unit.pipeline_fixtures import job, pod, progress_map

NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
OWNER = Owner(name="ft", namespace="team", uid="uid-1")
SPEC = FineTuneJobSpec.model_validate(
    {"baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}, "dataset": {"uri": "s3://data/t.jsonl"}}
)
PREPARED = Children(
    jobs=(job("ft-prepare", conditions=["Complete"], succeeded=1), job("ft-train", active=1)),
    pods=(pod("ft-train", started="2025-01-01T11:30:00Z"),),
)
GOOD = dict(step=40, total_steps=120, percent=33.3, epoch=1.0, loss=1.93, eval_loss=2.01, best_eval_loss=1.98,
            eta_seconds=96.0)


def raw(text) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ft-progress"}, "data": {"progress": text}}


HOSTILE = [
    pytest.param(progress_map("ft-progress", step=-1), "step is -1", id="negative-step"),
    pytest.param(progress_map("ft-progress", step="12"), "step is '12'", id="step-as-text"),
    pytest.param(progress_map("ft-progress", step=True), "step is True", id="step-as-boolean"),
    pytest.param(progress_map("ft-progress", step=1.5), "step is 1.5", id="fractional-step"),
    pytest.param(progress_map("ft-progress", step=10**30), "step is 1000", id="astronomic-step"),
    pytest.param(progress_map("ft-progress", step=5, total_steps=4), "past total_steps", id="step-past-the-end"),
    pytest.param(progress_map("ft-progress", epoch=-0.5), "epoch is -0.5", id="negative-epoch"),
    pytest.param(progress_map("ft-progress", loss="x" * 5000), "loss is 'xxx", id="huge-string-loss"),
    pytest.param(progress_map("ft-progress", loss=[1, 2]), "loss is [1, 2]", id="loss-as-list"),
    pytest.param(raw('{"step": 3, "loss": NaN}'), "loss is nan", id="nan-loss"),
    pytest.param(raw('{"step": 3, "loss": Infinity}'), "loss is nan", id="infinite-loss"),
    pytest.param(progress_map("ft-progress", percent="50%"), "percent is '50%'", id="percent-as-text"),
    pytest.param(progress_map("ft-progress", eta_seconds=-3), "eta_seconds is -3", id="negative-eta"),
    pytest.param(progress_map("ft-progress", eta_seconds=1e300), "eta_seconds is 1e+300", id="eta-beyond-int"),
    pytest.param(progress_map("ft-progress", checkpoint="/x"), "checkpoint is '/x'", id="checkpoint-as-text"),
    pytest.param(progress_map("ft-progress", checkpoint={"uri": "/x" * 1500}), "checkpoint uri", id="long-checkpoint-uri"),
    pytest.param(progress_map("ft-progress", checkpoint={"uri": 7}), "checkpoint uri is 7", id="checkpoint-uri-as-number"),
    pytest.param(progress_map("ft-progress", checkpoint={"uri": "/c", "step": -4}), "checkpoint step", id="checkpoint-negative-step"),
    pytest.param(progress_map("ft-progress", checkpoint={"uri": "/c", "time": "yesterday"}), "checkpoint time", id="checkpoint-bad-time"),
    pytest.param(raw("{not json"), "not JSON", id="not-json"),
    pytest.param(raw("[1, 2, 3]"), "JSON list, not an object", id="json-list"),
    pytest.param(raw('"step 3"'), "JSON str, not an object", id="json-string"),
    pytest.param(raw(json.dumps({"step": 1, "pad": "x" * 100_000})), "more than 8192 bytes", id="huge-line"),
    pytest.param(raw(12), "not text", id="data-not-text"),
]


@pytest.mark.parametrize(("progress", "problem"), HOSTILE)
def test_hostile_progress_is_refused_with_a_reason(progress, problem):
    line, why = read_progress(progress)
    assert line is None
    assert problem in why
    assert len(why) < 400  # a huge value is never copied into a message


@pytest.mark.parametrize(("progress", "problem"), HOSTILE)
def test_hostile_progress_keeps_the_last_valid_progress_and_warns_once(progress, problem):
    # A valid line first, then the hostile one, then the same hostile one again (a resync).
    valid = Children(jobs=PREPARED.jobs, pods=PREPARED.pods, progress=progress_map("ft-progress", **GOOD))
    first = decide(SPEC, FineTuneJobStatus(), valid, NOW, generation=1, owner=OWNER)
    written = parse_status(first.status.model_dump(mode="json", exclude_none=True))
    hostile = Children(jobs=PREPARED.jobs, pods=PREPARED.pods, progress=progress)

    second = decide(SPEC, written, hostile, NOW, generation=1, owner=OWNER)
    assert second.status.progress == written.progress  # the last valid progress stays
    [warning] = [e for e in second.events if e.reason == "ProgressIgnored"]
    assert warning.type == "Warning" and problem in warning.message and "ft-progress" in warning.message
    cond = next(c for c in second.status.conditions if c.type == finetunejob.PROGRESS_REPORTED)
    assert (cond.status, cond.reason) == ("False", "MalformedProgress")

    again = decide(SPEC, parse_status(second.status.model_dump(mode="json", exclude_none=True)), hostile, NOW,
                   generation=1, owner=OWNER)
    assert again.events == () and not again.status_changed  # no loop: nothing new to do


def test_valid_progress_after_a_hostile_one_is_used_again():
    hostile = Children(jobs=PREPARED.jobs, pods=PREPARED.pods, progress=progress_map("ft-progress", step=-1))
    status = parse_status(decide(SPEC, FineTuneJobStatus(), hostile, NOW, generation=1, owner=OWNER)
                          .status.model_dump(mode="json", exclude_none=True))
    good = Children(jobs=PREPARED.jobs, pods=PREPARED.pods, progress=progress_map("ft-progress", **GOOD))
    decision = decide(SPEC, status, good, NOW, generation=1, owner=OWNER)
    assert decision.status.progress.step == 40
    cond = next(c for c in decision.status.conditions if c.type == finetunejob.PROGRESS_REPORTED)
    assert (cond.status, cond.reason) == ("True", "Valid")
    assert not [e for e in decision.events if e.reason == "ProgressIgnored"]


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        pytest.param(progress_map("ft-progress", **GOOD), {"step": 40, "total_steps": 120}, id="a-real-line"),
        pytest.param(progress_map("ft-progress", step=3, learning_rate="unused", event="progress"), {"step": 3},
                     id="fields-not-read-are-not-judged"),
        pytest.param(progress_map("ft-progress", step=3, checkpoint={"uri": ""}), {"step": 3}, id="empty-checkpoint-dropped"),
        pytest.param(progress_map("ft-progress"), None, id="no-line-yet"),
        pytest.param(None, None, id="no-config-map-yet"),
        pytest.param({"metadata": {"name": "ft-progress"}, "data": None}, None, id="no-data"),
    ],
)
def test_valid_progress_is_read(progress, expected):
    line, why = read_progress(progress)
    assert why is None
    if expected is None:
        assert line is None
    else:
        assert {k: line[k] for k in expected} == expected
        assert "checkpoint" not in line or line["checkpoint"]["uri"]
