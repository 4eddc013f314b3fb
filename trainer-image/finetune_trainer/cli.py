"""What every entry point shares: argument parsing, config loading, and turning failures into
exit codes plus a termination message.

An entry point is a function `(config) -> summary dict`. Known failures (`TrainerError`) end
with their exit code and a one-line message that says what to fix; out-of-memory becomes
OUT_OF_MEMORY; anything else is an INTERNAL_ERROR with the traceback on stderr. In every case
the operator finds a compact JSON status at the termination-message path.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

from . import exitcodes
from .artifacts import write_termination_message
from .config import ConfigFileError, TrainerConfig, load_config


def emit(event: dict[str, Any]) -> None:
    """One JSON line on stdout (the operator and humans read the Pod log)."""
    print(json.dumps(event, separators=(",", ":"), sort_keys=True, default=str), flush=True)


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is always in the image
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError) or isinstance(exc, MemoryError)


def run(stage: str, body: Callable[[TrainerConfig], dict[str, Any]], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m finetune_trainer.{stage}", description=(body.__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--config", required=True, help="trainer config file (YAML or JSON)")
    args = parser.parse_args(argv)

    config: TrainerConfig | None = None
    try:
        try:
            config = load_config(args.config)
        except ConfigFileError as exc:
            raise exitcodes.ConfigError(str(exc)) from None
        summary = body(config)
        write_termination_message(config.termination_message_path, summary)
        return exitcodes.OK
    except exitcodes.TrainerError as exc:
        code, reason, message, details = exc.exit_code, exc.reason, str(exc), exc.details
    except Exception as exc:  # noqa: BLE001 - the last line of defence must classify everything
        if _is_out_of_memory(exc):
            code = exitcodes.OUT_OF_MEMORY
            message = f"{stage}: out of memory ({exc}); lower hyperparameters.batch_size or max_seq_length, or enable gradient_checkpointing"
        else:
            code = exitcodes.INTERNAL_ERROR
            message = f"{stage}: unexpected {type(exc).__name__}: {exc}"
            traceback.print_exc()
        reason, details = exitcodes.NAMES[code], {}
    label = "stopped" if code == exitcodes.TERMINATED else "error"
    print(f"{label}: {message}", file=sys.stderr, flush=True)
    emit({"event": "terminated" if code == exitcodes.TERMINATED else "failed", "stage": stage, "reason": reason, "exit_code": code})
    write_termination_message(
        config.termination_message_path if config else None,
        {
            "status": "Terminated" if code == exitcodes.TERMINATED else "Failed",
            "stage": stage,
            "reason": reason,
            "exit_code": code,
            "message": message,
            **details,
        },
    )
    return code
