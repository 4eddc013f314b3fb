"""`make demo`'s live line: training figures while training, evaluation figures while evaluating."""

from __future__ import annotations

from devcluster import demo


def test_evaluating_shows_suite_prompts_and_eta():
    job = {"status": {"phase": "Evaluating",
                      "progress": {"step": 40, "totalSteps": 40, "percent": 100.0, "trainLoss": 0.25},
                      "evaluationProgress": {"suite": "task", "model": "candidate", "promptsDone": 12,
                                             "promptsTotal": 48, "percent": 25.0, "etaSeconds": 95}}}
    line = demo.progress_line(job, 130)
    assert "task suite, candidate model" in line and "12/48 prompts" in line
    assert "25.0%" in line and "ETA 1m35s" in line and "loss" not in line


def test_training_line_is_unchanged_and_evaluating_without_a_report_says_so():
    training = {"status": {"phase": "Training", "progress": {"step": 4, "totalSteps": 40, "percent": 10.0}}}
    assert "step 4/40" in demo.progress_line(training, 5)
    waiting = {"status": {"phase": "Evaluating", "progress": {"step": 40, "totalSteps": 40}}}
    assert "prompts" not in demo.progress_line(waiting, 5)
