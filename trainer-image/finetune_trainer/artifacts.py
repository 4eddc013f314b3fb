"""Digests, atomic directories and the compact result the operator reads.

The operator learns how a run ended from the Pod's termination message, which Kubernetes caps
at 4 KiB, so the message is a compact JSON summary that is trimmed, field group by field group,
until it fits; the full results live next to the artifacts. Artifact digests are computed over
the sorted relative paths and contents of every file, so the same files always give the same
digest whatever the filesystem's order or timestamps.

`python -m finetune_trainer.artifacts verify PATH DIGEST` checks a directory (or file) against a
registered digest where the bytes are used — the serving Pods' init container runs it before any
server starts: exit 0 when they match; exit 3 with a termination message naming both digests
when they do not (or the artifact is missing), so other bytes are never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

TERMINATION_MESSAGE_LIMIT = 4096
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_files(root: Path, files: Iterable[Path] | None = None) -> str:
    """sha256 over (relative path, file sha256) of the files under root, in sorted order."""
    root = Path(root)
    chosen = sorted(files) if files is not None else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in chosen:
        rel = Path(path).relative_to(root).as_posix()
        digest.update(f"{rel}\0{sha256_file(Path(path))}\n".encode())
    return "sha256:" + digest.hexdigest()


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temp dir beside `final`; on success it replaces `final`, on error it vanishes.

    Readers never see half-written output: they see the old directory or the new one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


def write_json(path: Path, value: Any) -> None:
    """Write JSON via a temp file and rename, so a reader never sees a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    # JSON has no NaN/Infinity; a consumer in another language would reject the message.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def compact_json(summary: dict[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """Serialize `summary` in at most `limit` bytes, dropping optional groups if needed.

    Keys listed in summary["_optional"] (most expendable first) are removed one by one until
    the message fits; the essentials (status, reason, artifact, digest) are kept.
    """
    summary = _finite(dict(summary))
    optional = list(summary.pop("_optional", []))
    text = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    while len(text.encode()) > limit and optional:
        summary.pop(optional.pop(0), None)
        summary["truncated"] = True
        text = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > limit and "message" in summary:
        summary["message"] = str(summary["message"])[: limit // 2]
        text = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    return text


def write_termination_message(path: str | Path | None, summary: dict[str, Any]) -> str:
    """Write the compact summary for the operator; returns the text written.

    The default Kubernetes path is only written when it exists (inside a Pod), so running the
    trainer by hand never creates files under /dev.
    """
    text = compact_json(summary)
    # A runtime that cannot offer the configured path says where the file really is.
    target = Path(os.environ.get("TERMINATION_MESSAGE_PATH") or path or DEFAULT_TERMINATION_PATH)
    if str(target) == DEFAULT_TERMINATION_PATH and not target.exists():
        return text
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"warning: termination message {target}: not written ({exc.strerror})", file=sys.stderr)
    return text


EXIT_DIGEST_MISMATCH = 3


def digest_path(path: Path) -> str:
    """The digest of an artifact: a directory's files (as `digest_files`), or one file."""
    path = Path(path)
    if path.is_file():
        return digest_files(path.parent, [path])
    return digest_files(path)


def verify(path: str | Path, expected: str) -> str | None:
    """None when the artifact at `path` has digest `expected`; else why not, in words."""
    path = Path(path)
    if not path.exists():
        return f"artifact {path} does not exist; the ModelVersion's digest is {expected}"
    if path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
        return f"artifact {path} is empty; the ModelVersion's digest is {expected}"
    actual = digest_path(path)
    if actual != expected:
        return (f"artifact digest mismatch: {path} has {actual}, the ModelVersion says {expected}; "
                "refusing to serve other bytes than the registered ones")
    return None


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m finetune_trainer.artifacts")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="check an artifact against its registered sha256 digest")
    check.add_argument("path")
    check.add_argument("digest")
    args = parser.parse_args(argv)
    problem = verify(args.path, args.digest)
    if problem is None:
        print(f"artifact {args.path}: digest {args.digest} verified")
        return 0
    print(f"error: {problem}", file=sys.stderr)
    target = Path(os.environ.get("TERMINATION_MESSAGE_PATH") or DEFAULT_TERMINATION_PATH)
    if str(target) != DEFAULT_TERMINATION_PATH or target.exists():
        try:
            target.write_text(problem[:TERMINATION_MESSAGE_LIMIT], encoding="utf-8")
        except OSError:
            pass
    return EXIT_DIGEST_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
