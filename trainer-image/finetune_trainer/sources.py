"""Reading raw records from a dataset source, each with the place it came from.

A source is a file or a directory of JSONL, JSON (an array of objects) or Parquet files, on the
local disk, a mounted claim (pvc://) or object storage (s3://, through fsspec/s3fs with the
credentials of the environment), or a directory written by `datasets`' `save_to_disk`. Every
record keeps a location such as "/data/train.jsonl: line 17" so validation errors point at the
exact line to fix. Files of a directory are read in sorted order, so the order of records (and
with it dedup, balancing and the split) does not depend on the filesystem.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

from .config import TrainerConfig, uri_scheme
from .exitcodes import ConfigError, DataError, StorageError

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
# Files that mark a directory written by datasets' save_to_disk (Dataset or DatasetDict).
_SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class RawRecord:
    location: str  # "<file>: line N" (JSONL/JSON), "<file>: row N" (Parquet, saved datasets)
    value: Any  # the parsed JSON value; validated by formats.py


def _read_jsonl(name: str, data: bytes) -> Iterator[RawRecord]:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"dataset {name}: line {number} is not UTF-8 text; re-encode the file as UTF-8") from None
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"dataset {name}: line {number} is not JSON ({exc.msg} at column {exc.colno}); "
                "each line must be one JSON object (e.g. with instruction/output, messages, or "
                "prompt/chosen/rejected)"
            ) from None
        yield RawRecord(f"{name}: line {number}", value)


def _read_json(name: str, data: bytes) -> Iterator[RawRecord]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"dataset {name}: is not UTF-8 text; re-encode the file as UTF-8") from None
    decoder = json.JSONDecoder()

    def line_of(index: int) -> int:
        return text.count("\n", 0, index) + 1

    index = len(text) - len(text.lstrip())
    if not text.startswith("[", index):
        raise DataError(
            f"dataset {name}: line {line_of(index)} does not start a JSON array; a .json dataset "
            "is an array of record objects (use .jsonl for one object per line)"
        )
    index += 1
    while True:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if index < len(text) and text[index] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise DataError(f"dataset {name}: line {exc.lineno} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        yield RawRecord(f"{name}: line {line_of(index)}", value)
        index = end
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if index < len(text) and text[index] == ",":
            index += 1
        elif index < len(text) and text[index] == "]":
            return
        else:
            raise DataError(f"dataset {name}: line {line_of(index)} is not valid JSON (expected ',' or ']' between records)")


def _read_parquet(name: str, data: bytes) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"dataset {name}: is not a readable Parquet file ({exc}); rewrite it with pyarrow or pandas") from None
    for number, row in enumerate(table.to_pylist(), start=1):
        yield RawRecord(f"{name}: row {number}", row)


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}


def _read_saved_dataset(path: Path) -> Iterator[RawRecord]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"dataset {path}: not a readable save_to_disk directory ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        # Our own split replaces any the source had; read splits in a fixed, sensible order.
        order = sorted(loaded, key=lambda s: ({"train": 0, "validation": 1, "test": 2}.get(s, 3), s))
        parts = [(f"{path} [{split}]", loaded[split]) for split in order]
    else:
        parts = [(str(path), loaded)]
    for name, part in parts:
        for number, row in enumerate(part, start=1):
            yield RawRecord(f"{name}: row {number}", row)


# Where the operator mounts a FineTuneJob's spec.dataset.inline records (its ConfigMap, next to
# config.yaml): a source here is inline data, not a file the user put somewhere.
INLINE_DATASET_FILE = "/etc/finetune/dataset.jsonl"


def missing_source_message(source: str, path: Path, pvc_mount_root: str) -> str:
    """What a missing dataset is, named by the source it was read from, and what in the
    FineTuneJob's spec to change."""
    scheme = uri_scheme(source)
    if scheme == "pvc":
        claim = urlsplit(source).netloc
        inside = urlsplit(source).path.lstrip("/") or "/"
        return (
            f"dataset {source}: {inside} does not exist in PersistentVolumeClaim {claim} (mounted at "
            f"{pvc_mount_root}/{claim}); put the data there, or change spec.dataset.uri"
        )
    if str(path) == INLINE_DATASET_FILE:
        return (
            f"dataset: the inline records (spec.dataset.inline) are missing from {INLINE_DATASET_FILE}, "
            "the job's ConfigMap; re-apply the FineTuneJob with spec.dataset.inline set, or use spec.dataset.uri"
        )
    return (
        f"dataset {source}: no such file or directory in the trainer's filesystem (the image, or a node "
        "directory the operator allows and mounts); change spec.dataset.uri to a pvc://, s3:// or existing path"
    )


def _local_files(path: Path, source: str, pvc_mount_root: str) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
    raise DataError(missing_source_message(source, path, pvc_mount_root))


def read_source(config: TrainerConfig) -> Iterator[RawRecord]:
    """Every raw record of config.dataset.source, in a deterministic order."""
    source = config.dataset.source
    if source is None:
        raise ConfigError("dataset.source is not set: synthetic data is generated by prepare, not read (synthetic.py)")
    if uri_scheme(source) == "s3":
        yield from _read_s3(source)
        return
    path = config.path(source)
    if path.is_dir() and any((path / marker).exists() for marker in _SAVED_DATASET_MARKERS):
        yield from _read_saved_dataset(path)
        return
    files = _local_files(path, source, config.pvc_mount_root)
    if not files:
        raise DataError(
            f"dataset {path}: directory has no {', '.join(DATA_SUFFIXES)} files; put the data "
            "there or point dataset.source at a file"
        )
    for file in files:
        reader = _reader_for(str(file))
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise StorageError(f"dataset {file}: cannot be read ({exc.strerror})") from None
        yield from reader(str(file), data)


def _reader_for(name: str):
    for suffix, reader in _READERS.items():
        if name.endswith(suffix):
            return reader
    raise DataError(f"dataset {name}: unknown file type; use one of {', '.join(DATA_SUFFIXES)}")


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What listing or reading a bucket raises when access fails: OS errors, and botocore's own
    (missing credentials, endpoint errors), which are not OSErrors."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return (PermissionError, OSError)
    return (PermissionError, OSError, BotoCoreError, ClientError)


def _read_s3(uri: str) -> Iterator[RawRecord]:
    from .storage import filesystem

    try:
        fs, root = filesystem(uri, "dataset")
        if fs.isdir(root):
            names = sorted(n for n in fs.find(root) if n.endswith(DATA_SUFFIXES))
        elif fs.exists(root):
            names = [root]
        else:
            raise DataError(
                f"dataset {uri}: no object at this key or prefix; upload the data there, or change spec.dataset.uri"
            )
    except DataError:
        raise
    except _storage_errors() as exc:
        raise StorageError(
            f"dataset {uri}: cannot be listed ({exc}); give the trainer credentials and an endpoint for this "
            "bucket, or change spec.dataset.uri"
        ) from None
    if not names:
        raise DataError(f"dataset {uri}: no {', '.join(DATA_SUFFIXES)} objects under this prefix")
    for name in names:
        display = f"s3://{name}"
        reader = _reader_for(display)
        try:
            with fs.open(name, "rb") as handle:
                data = handle.read()
        except (PermissionError, OSError) as exc:
            raise StorageError(f"dataset {display}: cannot be read ({exc}); check the credentials and endpoint") from None
        yield from reader(display, data)
