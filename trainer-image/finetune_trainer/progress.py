"""Trainer callbacks: progress reporting, graceful stop on SIGTERM, divergence detection.

Progress is one JSON object per logging step, printed on stdout (the Pod log) and appended to
the progress file, which the operator reads without any broad RBAC:

    {"event": "progress", "step": 40, "total_steps": 120, "percent": 33.3, "epoch": 1.0,
     "loss": 1.93, "eval_loss": 2.01, "best_eval_loss": 2.01, "learning_rate": 1.6e-05,
     "tokens_per_second": 5120.4, "eta_seconds": 96.0, "time": "2025-01-01T12:00:00Z"}

Evaluation reports the same way (`EvaluationProgress`), one line per generated batch, marked
`"stage": "evaluate"` so the operator keeps it apart from the training progress:

    {"event": "progress", "stage": "evaluate", "suite": "task", "model": "candidate",
     "suite_done": 16, "suite_total": 40, "prompts_done": 56, "prompts_total": 160,
     "percent": 35.0, "eta_seconds": 41.2, "time": "2025-01-01T12:05:00Z"}

Kubernetes stops a Pod (preemption, node drain, deletion) with SIGTERM and a grace period.
`GracefulStop` turns the signal into "save a checkpoint at the end of this step and stop",
so the next attempt resumes where this one stopped instead of from the last periodic save.
"""

from __future__ import annotations

import json
import math
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def _round(value: Any, digits: int = 6) -> Any:
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else value


class ProgressReporter(TrainerCallback):
    def __init__(self, progress_file: Path, emit, remote=None):
        self.progress_file = Path(progress_file)
        self.progress_file.parent.mkdir(parents=True, exist_ok=True)
        self.emit = emit
        # The operator's progress ConfigMap (reporting.ConfigMapReporter), when running in a Pod.
        self.remote = remote
        self.checkpoint: dict[str, Any] | None = None
        self.loss: float | None = None
        self.eval_loss: float | None = None
        self.diverged_at: int | None = None
        self._started = 0.0
        self._start_step = 0
        self._start_tokens = 0

    def write(self, event: dict[str, Any]) -> None:
        event = {k: _round(v) for k, v in event.items()}
        event.setdefault("time", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.emit(event)
        with self.progress_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n")
        if self.remote is not None:
            remote_event = {**event, "checkpoint": self.checkpoint} if self.checkpoint else event
            self.remote.report(remote_event, final=event.get("event") != "progress")

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.checkpoint = {
                "uri": str(Path(args.output_dir) / f"checkpoint-{state.global_step}"),
                "step": state.global_step,
                "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }

    def on_train_end(self, args, state, control, **kwargs):
        if self.remote is not None:
            self.remote.flush()

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.monotonic()
        self._start_step = state.global_step  # non-zero after a resume
        self._start_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.loss = logs["loss"]
            if not math.isfinite(self.loss) and self.diverged_at is None:
                self.diverged_at = state.global_step
                control.should_training_stop = True
        if "eval_loss" in logs:
            self.eval_loss = logs["eval_loss"]
        if "train_loss" in logs and "loss" not in logs:
            return  # the end-of-training summary; train.py reports it as "finished"
        elapsed = max(time.monotonic() - self._started, 1e-9)
        done = state.global_step - self._start_step
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0) - self._start_tokens
        total = state.max_steps or 0
        self.write(
            {
                "event": "progress",
                "step": state.global_step,
                "total_steps": total,
                "percent": round(100.0 * state.global_step / total, 2) if total else None,
                "epoch": state.epoch,
                "loss": self.loss,
                "eval_loss": self.eval_loss,
                "best_eval_loss": state.best_metric,
                "learning_rate": logs.get("learning_rate"),
                "tokens_per_second": round(tokens / elapsed, 2) if tokens > 0 else None,
                "eta_seconds": round(elapsed / done * (total - state.global_step), 1) if done > 0 and total else None,
            }
        )


class EvaluationProgress:
    """Progress of an evaluation: every suite's prompts, for every model evaluated (the base
    model and the candidate), as one count with an ETA from the prompts done so far."""

    def __init__(self, progress_file: Path, emit, suites: dict[str, int], models: int, remote=None, clock=time.monotonic,
                 reused: dict[str, int] | None = None, extra: int = 0):
        self.progress_file = Path(progress_file)
        self.progress_file.parent.mkdir(parents=True, exist_ok=True)
        self.emit = emit
        self.remote = remote
        self.clock = clock
        # Suites whose base generations come from the evaluation cache: not generated, not counted.
        self.reused = dict(reused or {})
        # extra: prompts outside the suites x models grid (the parent comparison's two runs).
        self.total = sum(suites.values()) * models - sum(self.reused.values()) + extra
        self.finished = 0  # prompts of the suites already done (all models)
        self._started: float | None = None

    def update(self, suite: str, model: str, done: int, total: int) -> dict[str, Any]:
        """`done` of the `total` prompts of `suite` are generated for `model`."""
        now = self.clock()
        if self._started is None:
            self._started = now
        prompts_done = min(self.finished + done, self.total)
        elapsed = now - self._started
        eta = elapsed / prompts_done * (self.total - prompts_done) if prompts_done and elapsed > 0 else None
        line = {
            "event": "progress",
            "stage": "evaluate",
            "suite": suite,
            "model": model,
            "suite_done": done,
            "suite_total": total,
            "prompts_done": prompts_done,
            "prompts_total": self.total,
            "percent": round(100.0 * prompts_done / self.total, 2) if self.total else None,
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if self.reused:
            line["base_reused"] = sorted(self.reused)
        if done >= total:
            self.finished += total
        self.emit(line)
        with self.progress_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, separators=(",", ":"), sort_keys=True) + "\n")
        if self.remote is not None:
            self.remote.report(line, final=prompts_done >= self.total)
        return line

    def close(self) -> None:
        if self.remote is not None:
            self.remote.flush()


class GracefulStop(TrainerCallback):
    """On SIGTERM: finish the current step, save a checkpoint, stop training."""

    def __init__(self):
        self.requested = False
        self.signal_step: int | None = None
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame):
        # Only a flag: saving from inside a signal handler could interrupt a half-done step.
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            if self.signal_step is None:
                self.signal_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
            # Reloading the best checkpoint at the end would spend the grace period on weights
            # this process is about to throw away.
            args.load_best_model_at_end = False
        return control

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)
