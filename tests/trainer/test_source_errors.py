"""A missing dataset is named by the source it was read from, with the spec field to change.

Inline records, a claim and a path each say what they are; only a claim talks about a claim, and
inline data never sends the user to a volume mount.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_trainer.exitcodes import DataError
from finetune_trainer.sources import INLINE_DATASET_FILE, missing_source_message


@pytest.mark.parametrize(
    ("source", "says", "never"),
    [
        (
            INLINE_DATASET_FILE,
            ["inline records", "spec.dataset.inline", "spec.dataset.uri"],
            ["claim", "volume", "mount"],
        ),
        (
            "pvc://datasets/support/train.jsonl",
            ["pvc://datasets/support/train.jsonl", "support/train.jsonl does not exist in PersistentVolumeClaim datasets",
             "/mnt/pvc/datasets", "spec.dataset.uri"],
            ["inline"],
        ),
        (
            "/data/train.jsonl",
            ["/data/train.jsonl", "no such file or directory", "spec.dataset.uri"],
            ["inline", "PersistentVolumeClaim"],
        ),
    ],
    ids=["inline", "claim", "path"],
)
def test_missing_source_message_names_the_source_and_the_fix(source, says, never):
    path = Path(f"/mnt/pvc/{source[6:]}") if source.startswith("pvc://") else Path(source)
    message = missing_source_message(source, path, "/mnt/pvc")
    for words in says:
        assert words in message
    for words in never:
        assert words not in message


def test_prepare_of_a_missing_claim_file_fails_with_that_message(config_factory, tmp_path):
    from finetune_trainer.config import parse_config
    from finetune_trainer.prepare import prepare_dataset

    raw = config_factory(tmp_path / "absent.jsonl")
    raw["dataset"]["source"] = "pvc://datasets/absent.jsonl"
    raw["pvc_mount_root"] = str(tmp_path / "pvc")
    with pytest.raises(DataError, match=r"absent.jsonl does not exist in PersistentVolumeClaim datasets .*spec.dataset.uri"):
        prepare_dataset(parse_config(raw))


def test_s3_without_credentials_is_a_storage_error_naming_the_uri(monkeypatch):
    from finetune_trainer.exitcodes import StorageError
    from finetune_trainer.sources import _read_s3

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: never the network
    with pytest.raises(StorageError, match=r"dataset s3://contracts-data/clauses.jsonl: cannot be listed .*spec.dataset.uri"):
        list(_read_s3("s3://contracts-data/clauses.jsonl"))
