"""decide() for FineTuneJob while the evaluation Job runs: the evaluator's progress lines reach
status.evaluationProgress and the message, and leave the training progress as training left it."""

from __future__ import annotations

import dataclasses

import pytest

from finetune_operator.logic import finetunejob
from tests.unit.pipeline_fixtures import progress_map
from tests.unit.test_logic_finetunejob_pipeline import PROGRESS, S, SPEC, run, status_after

EVAL_LINE = dict(stage="evaluate", suite="safety", model="base", suite_done=8, suite_total=20,
                 prompts_done=48, prompts_total=160, percent=30.0, eta_seconds=95.4)


def evaluating(**line):
    return dataclasses.replace(S["evaluating"], progress=progress_map(PROGRESS, **line))


def test_evaluation_progress_reaches_status_and_message():
    before = status_after((SPEC, S["train-complete"]))
    decision = run(SPEC, evaluating(**EVAL_LINE), before)
    ev = decision.status.evaluation_progress
    assert (ev.suite, ev.model, ev.prompts_done, ev.prompts_total, ev.percent, ev.eta_seconds) == (
        "safety", "base", 48, 160, 30.0, 95)
    assert decision.status.phase == "Evaluating"
    assert decision.status.message == "evaluating: safety suite, base model, 48/160 prompts, ETA 95s"
    # The training progress is kept: the ConfigMap now holds the evaluator's line.
    assert decision.status.progress == before.progress and before.progress.step is not None


def test_before_the_first_evaluation_line_the_message_is_the_plain_one():
    before = status_after((SPEC, S["train-complete"]))
    decision = run(SPEC, S["evaluating"], before)
    assert decision.status.evaluation_progress is None
    assert decision.status.message == finetunejob.MSG_EVALUATING


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param({**EVAL_LINE, "prompts_done": 161}, "prompts_done 161 is past prompts_total 160", id="past-total"),
        pytest.param({**EVAL_LINE, "suite": "x" * 65}, "suite is", id="suite-too-long"),
        pytest.param({**EVAL_LINE, "stage": "deploy"}, "stage is 'deploy', expected train or evaluate", id="unknown-stage"),
        pytest.param({**EVAL_LINE, "prompts_total": -1}, "prompts_total is -1", id="negative"),
    ],
)
def test_a_malformed_evaluation_line_is_ignored(line, problem):
    before = status_after((SPEC, S["train-complete"]), (SPEC, evaluating(**EVAL_LINE)))
    decision = run(SPEC, evaluating(**line), before)
    assert decision.status.evaluation_progress == before.evaluation_progress
    reported = next(c for c in decision.status.conditions if c.type == finetunejob.PROGRESS_REPORTED)
    assert reported.status == "False" and problem in reported.message
