"""Evaluation progress lines: one count over every suite and model, with an ETA, in the log, the
progress file and the operator's ConfigMap, in the format the operator reads."""

from __future__ import annotations

import json

from finetune_operator.logic import finetunejob_children as ftj_children
from finetune_trainer.progress import EvaluationProgress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Remote:
    def __init__(self):
        self.lines, self.flushed = [], 0

    def report(self, line, *, final=False):
        self.lines.append((line, final))

    def flush(self):
        self.flushed += 1


def test_counts_every_suite_of_every_model_and_estimates_the_rest(tmp_path):
    clock, remote, emitted = Clock(), Remote(), []
    progress = EvaluationProgress(tmp_path / "progress.jsonl", emitted.append, {"task": 8, "safety": 4}, models=2,
                                  remote=remote, clock=clock)
    steps = [("task", "base", 4), ("task", "base", 8), ("safety", "base", 4), ("task", "candidate", 8),
             ("safety", "candidate", 4)]
    lines = []
    for suite, model, done in steps:
        lines.append(progress.update(suite, model, done, 8 if suite == "task" else 4))
        clock.now += 10.0
    progress.close()

    assert [line["prompts_done"] for line in lines] == [4, 8, 12, 20, 24]
    assert {line["prompts_total"] for line in lines} == {24}
    assert [line["percent"] for line in lines] == [16.67, 33.33, 50.0, 83.33, 100.0]
    # 10 s for the 8 prompts after the first line: 12 prompts in 20 s leave 12 for 20 s more.
    assert lines[0]["eta_seconds"] is None and lines[2]["eta_seconds"] == 20.0 and lines[-1]["eta_seconds"] == 0.0
    assert all(line["event"] == "progress" and line["stage"] == "evaluate" for line in lines)
    assert emitted == lines
    assert [json.loads(text) for text in (tmp_path / "progress.jsonl").read_text().splitlines()] == lines
    assert [final for _, final in remote.lines] == [False, False, False, False, True] and remote.flushed == 1


def test_the_operator_accepts_the_lines_as_they_are_written(tmp_path):
    progress = EvaluationProgress(tmp_path / "p.jsonl", lambda _: None, {"task": 3}, models=1, clock=Clock())
    line = progress.update("task", "candidate", 2, 3)
    config_map = {"metadata": {"name": "job-progress"}, "data": {"progress": json.dumps(line)}}
    read, problem = ftj_children.read_progress(config_map)
    assert (read, problem) == (line, None)
