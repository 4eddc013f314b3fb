"""The command-line entry points start from a plain shell: no PYTHONPATH set by the caller.

The operator's API models share their training settings with the trainer's schema
(`finetune_trainer.schema`), so every entry point that reads a manifest needs both source
directories on its path, as the operator image has them (/app/operator:/app/trainer-image).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def test_the_kubectl_plugin_runs_without_a_pythonpath():
    result = subprocess.run([str(ROOT / "bin" / "kubectl-finetune"), "--help"], env=_env(), cwd="/",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: kubectl finetune" in result.stdout


def test_the_scheduled_retrain_runs_with_the_images_path():
    path = os.pathsep.join(str(ROOT / p) for p in ("operator", "trainer-image"))
    result = subprocess.run([sys.executable, "-m", "finetune_operator.retrain", "--help"], env=_env(PYTHONPATH=path),
                            cwd="/", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--template" in result.stdout
