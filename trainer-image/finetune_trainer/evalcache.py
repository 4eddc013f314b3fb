"""The evaluation cache: a base model's generations, reused by later jobs on the same base.

Every job evaluates its candidate beside the base model on the same prompts. The base's half
does not change from one job to the next while the model, the prompts and the decoding stay the
same, and it is as long as the candidate's: the cache keeps it. An entry is one suite's outputs
(with their token counts and timings), stored under a key that digests everything generation
depends on:

- the base model's files (`model_digest`: the blob names of a Hugging Face cache snapshot, which
  are content hashes, or the sha256 of each file of any other directory);
- the suite and the exact prompt texts, rendered with the chat template the job uses;
- the decoding settings (max new tokens, batch size, prompt truncation, pad/eos tokens: the same
  items in the same batches decode the same way);
- the dtype, the device type and the torch and transformers versions.

A key that differs in any of these misses, so a hit is what generating again would give. Scores
are always computed again from the outputs (scoring changes take effect at once). Entries are
written atomically (a temporary file renamed into place): concurrent jobs never read a half
entry, and two jobs that fill the same entry write the same content. A corrupt or unreadable
entry is a miss; a cache that cannot be written costs time, never the evaluation.

The cache is a directory (FINETUNE_EVALUATION_CACHE, the operator's evaluationCache setting
mounted into evaluation Pods); no directory, no cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CACHE_ENV = "FINETUNE_EVALUATION_CACHE"
FORMAT = 1  # bumped when an entry's content changes meaning
_CHUNK = 1 << 20


def cache_dir(environ: dict[str, str] | None = None) -> Path | None:
    value = (os.environ if environ is None else environ).get(CACHE_ENV, "").strip()
    return Path(value) if value else None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_digest(directory: Path) -> str:
    """A digest of a model directory's files: for a file linked into a Hugging Face cache's
    blobs the blob's name (its content hash, so nothing is read), else its content's sha256.
    Hidden files (markers, locks) are left out."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_symlink() and path.resolve().parent.name == "blobs":
            content = "blob:" + path.resolve().name
        else:
            content = "sha256:" + _file_digest(path)
        digest.update(f"{relative.as_posix()}\0{content}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Context:
    """What a suite's generations depend on, besides the suite's prompts."""

    model_digest: str
    max_new_tokens: int
    batch_size: int
    max_prompt_tokens: int
    pad_token_id: int | None
    eos_token_id: int | list[int] | None
    dtype: str
    device: str
    versions: dict[str, str]

    def key(self, suite: str, prompts: list[str]) -> str:
        prompt_digest = hashlib.sha256("\0".join(prompts).encode()).hexdigest()
        material = {
            "format": FORMAT,
            "suite": suite,
            "prompts": prompt_digest,
            "count": len(prompts),
            **{k: v for k, v in self.__dict__.items()},
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Entry:
    """One suite's generations of the base model."""

    outputs: list[str]
    tokens: list[int]
    latencies: list[float]
    shares: list[float]
    created: str = ""
    source: str = ""  # the run that generated them (its output location)

    def valid_for(self, count: int) -> bool:
        return all(len(values) == count for values in (self.outputs, self.tokens, self.latencies, self.shares))


def _path(directory: Path, key: str) -> Path:
    return Path(directory) / key[:2] / f"{key}.json"


def load(directory: Path | None, key: str, count: int) -> Entry | None:
    """The entry under `key` when it holds `count` generations; None on a miss or a bad entry."""
    if directory is None:
        return None
    try:
        raw = json.loads(_path(directory, key).read_text(encoding="utf-8"))
        entry = Entry(
            outputs=[str(o) for o in raw["outputs"]],
            tokens=[int(t) for t in raw["tokens"]],
            latencies=[float(x) for x in raw["latencies"]],
            shares=[float(x) for x in raw["shares"]],
            created=str(raw.get("created", "")),
            source=str(raw.get("source", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry if raw.get("key") == key and entry.valid_for(count) else None


def store(directory: Path | None, key: str, entry: Entry) -> bool:
    """Write `entry` under `key` atomically; False when the cache cannot be written."""
    if directory is None:
        return False
    path = _path(directory, key)
    body = {
        "key": key,
        "format": FORMAT,
        "created": entry.created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": entry.source,
        "outputs": entry.outputs,
        "tokens": entry.tokens,
        "latencies": entry.latencies,
        "shares": entry.shares,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".entry-", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(body, out, separators=(",", ":"))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        return False
    return True


def describe(reused: dict[str, Entry]) -> dict[str, Any]:
    """What evaluation.json records about the reused suites."""
    return {suite: {"created": e.created, "source": e.source, "items": len(e.outputs)} for suite, e in sorted(reused.items())}
