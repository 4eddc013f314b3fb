"""The trainer's object-store paths against a real S3 server (SeaweedFS on 127.0.0.1): an upload
returns the digest of the bytes sent, equal to the files' digest; the serving Pods' fetch
(`python -m finetune_trainer.storage fetch`) copies them back byte for byte; each location uses
its own credentials, and wrong ones are refused by the server."""

from __future__ import annotations

import os

import pytest

from finetune_trainer import storage
from finetune_trainer.artifacts import digest_files
from tests.s3 import s3_server  # noqa: F401 - the fixture


@pytest.fixture
def output_credentials(s3_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    monkeypatch.setenv("FINETUNE_OUTPUT_AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("FINETUNE_OUTPUT_AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    return monkeypatch


def test_upload_digest_and_fetch_round_trip(s3_server, output_credentials, tmp_path, capsys):  # noqa: F811
    src = tmp_path / "adapter"
    (src / "nested").mkdir(parents=True)
    (src / "adapter_config.json").write_text('{"r": 8}')
    (src / "nested" / "weights.bin").write_bytes(os.urandom(6 << 20))  # a multipart-sized object
    uri = f"s3://{s3_server.bucket}/runs/rt/adapter"

    assert storage.upload_directory(src, uri) == digest_files(src)

    dest = tmp_path / "fetched"
    assert storage.main(["fetch", uri, str(dest)]) == 0
    assert digest_files(dest) == digest_files(src)
    assert storage.main(["fetch", f"s3://{s3_server.bucket}/runs/none", str(tmp_path / "empty")]) == 1
    assert "no objects under this prefix" in capsys.readouterr().err


def test_each_location_uses_its_own_credentials(s3_server, output_credentials, tmp_path, capsys):  # noqa: F811
    (tmp_path / "a.txt").write_text("x")
    uri = f"s3://{s3_server.bucket}/runs/creds/adapter"
    storage.upload_directory(tmp_path, uri)
    # The dataset's variables hold other (wrong) credentials: reading as the dataset is refused,
    # though the output's credentials in the same process would be accepted.
    output_credentials.setenv("FINETUNE_DATASET_AWS_ACCESS_KEY_ID", s3_server.access_key)
    output_credentials.setenv("FINETUNE_DATASET_AWS_SECRET_ACCESS_KEY", "not-the-secret")
    fs, root = storage.filesystem(uri, "dataset")
    with pytest.raises(storage.storage_errors()):
        fs.ls(root)
    output_credentials.setenv("FINETUNE_OUTPUT_AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert storage.main(["fetch", uri, str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err
    assert "cannot be fetched" in err and "not-the-secret" not in err and s3_server.secret_key not in err


def test_remove_takes_the_scratch_and_leaves_the_adapter_and_siblings(s3_server, output_credentials, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    for rel in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "checkpoints/step-2/state.bin",
                "checkpoints-old/keep.bin", "data/train.jsonl", "progress.jsonl", "progress.jsonl.bak"):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(rel)
    base = f"s3://{s3_server.bucket}/runs/team/job-uid"
    storage.upload_directory(run, base)

    scratch = [f"{base}/checkpoints", f"{base}/data", f"{base}/progress.jsonl", f"{base}/never-written"]
    assert storage.main(["remove", *scratch]) == 0
    assert "removed 3 objects" in capsys.readouterr().out
    fs, root = storage.filesystem(base, "output")
    fs.invalidate_cache()
    left = sorted(name.removeprefix(root.rstrip("/") + "/") for name in fs.find(root))
    # The registered adapter stays, and so does what merely shares a scratch entry's prefix.
    assert left == ["adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                    "checkpoints-old/keep.bin", "progress.jsonl.bak"]
    assert storage.main(["remove", *scratch]) == 0  # already gone: nothing to do, no error


@pytest.mark.parametrize("uri", ["s3://bucket", "s3://bucket/", "s3://bucket/runs/../other", "s3://bucket/./"])
def test_remove_refuses_a_bucket_root_and_dot_segments(uri, capsys):
    assert storage.main(["remove", uri]) == 1
    assert "refused" in capsys.readouterr().err


def test_remove_with_wrong_credentials_fails_without_echoing_them(s3_server, output_credentials, tmp_path, capsys):  # noqa: F811
    (tmp_path / "a.txt").write_text("x")
    uri = f"s3://{s3_server.bucket}/runs/wrong/data"
    storage.upload_directory(tmp_path, uri)
    output_credentials.setenv("FINETUNE_OUTPUT_AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert storage.main(["remove", uri]) == 1
    err = capsys.readouterr().err
    assert "cannot be removed" in err and "not-the-secret" not in err
