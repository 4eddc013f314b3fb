"""A bounded model cache: least-recently-used eviction of whole Hugging Face cache repos.

The operator's model cache (HF_HUB_CACHE on a shared claim or a node path) fills with every base
model any job downloaded. With a bound (FINETUNE_MODEL_CACHE_MAX_BYTES, from the operator's
modelCacheMaxSize), a Pod that just resolved an hf:// model marks that repo used and then evicts
other repos, least recently used first, until the cache fits:

- never the repo the job uses, and never one used or written within the grace period (10 minutes:
  a job that is downloading or has just resolved its model keeps it);
- whole repos only (a repo's blobs, snapshots and refs go together), under one cache-wide file
  lock so two evicting Pods never race each other;
- "used" is the mtime of a marker each resolution touches (`.finetune-last-used` in the repo's
  directory), falling back to the files' access times, which many mounts do not keep.

An evicted model is downloaded again by the next job that needs it: eviction costs time, never
correctness. Nothing is evicted without a bound, offline (the cache is mounted read-only) or
when the cache already fits.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

CACHE_MAX_BYTES_ENV = "FINETUNE_MODEL_CACHE_MAX_BYTES"
GRACE_ENV = "FINETUNE_MODEL_CACHE_GRACE_SECONDS"
DEFAULT_GRACE_SECONDS = 600.0
USED_MARKER = ".finetune-last-used"
LOCK_NAME = ".finetune-evict.lock"


def repo_dir(cache: Path, repo_id: str) -> Path:
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def mark_used(cache: Path, repo_id: str) -> None:
    """Record that a job uses `repo_id` now (best effort: a read-only cache keeps no marks)."""
    try:
        marker = repo_dir(cache, repo_id) / USED_MARKER
        marker.touch()
        os.utime(marker)
    except OSError:
        pass


def _bound(environ: dict[str, str] | None = None) -> tuple[int, float]:
    env = os.environ if environ is None else environ
    try:
        max_bytes = int(env.get(CACHE_MAX_BYTES_ENV) or 0)
    except ValueError:
        max_bytes = 0
    try:
        grace = float(env.get(GRACE_ENV) or DEFAULT_GRACE_SECONDS)
    except ValueError:
        grace = DEFAULT_GRACE_SECONDS
    return max_bytes, grace


def _last_used(repo) -> float:
    marker = Path(repo.repo_path) / USED_MARKER
    try:
        return marker.stat().st_mtime
    except OSError:
        return float(repo.last_accessed)


def enforce_bound(cache: Path, keep: str, environ: dict[str, str] | None = None,
                  now: float | None = None) -> list[str]:
    """Evict least recently used repos (never `keep`, never one used within the grace period)
    until the cache's size on disk is within the bound. Returns the evicted repo ids."""
    max_bytes, grace = _bound(environ)
    cache = Path(cache)
    if max_bytes <= 0 or not cache.is_dir():
        return []
    from filelock import FileLock
    from huggingface_hub import scan_cache_dir

    now = time.time() if now is None else now
    evicted: list[str] = []
    try:
        with FileLock(str(cache / LOCK_NAME), timeout=300):
            info = scan_cache_dir(cache)
            total = info.size_on_disk
            candidates = sorted(
                (r for r in info.repos if r.repo_type == "model" and r.repo_id != keep
                 and now - max(_last_used(r), float(r.last_modified)) >= grace),
                key=_last_used,
            )
            for repo in candidates:
                if total <= max_bytes:
                    break
                shutil.rmtree(repo.repo_path, ignore_errors=True)
                total -= repo.size_on_disk
                evicted.append(repo.repo_id)
    except OSError:
        return evicted  # a read-only or vanished cache: nothing (more) to evict
    return evicted
