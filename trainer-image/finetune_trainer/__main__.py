"""`python -m finetune_trainer <prepare|train|models|evaluate|serve> ...`: one entry point for the image."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("prepare", "train", "models", "evaluate", "serve")
    if not argv or argv[0] not in commands:
        print(f"usage: python -m finetune_trainer {{{'|'.join(commands)}}} [--config FILE | ...]", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "prepare":
        from .prepare import main as run
    elif command == "train":
        from .train import main as run
    elif command == "evaluate":
        from .evaluate import main as run
    elif command == "serve":
        from .serve import main as run
    else:
        from .models import main as run
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
