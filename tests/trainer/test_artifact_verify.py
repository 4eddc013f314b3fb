"""The artifact digest is checked where bytes are used: the serving Pods' init container and the server."""

from __future__ import annotations

import pytest

from finetune_trainer import artifacts, serve


def adapter(tmp_path):
    root = tmp_path / "adapter"
    root.mkdir()
    (root / "adapter_config.json").write_text('{"r": 4}')
    (root / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    return root


@pytest.mark.parametrize(
    ("tamper", "ok"),
    [
        pytest.param(None, True, id="registered-bytes-pass"),
        pytest.param("change", False, id="changed-file-fails"),
        pytest.param("add", False, id="added-file-fails"),
        pytest.param("remove", False, id="missing-file-fails"),
        pytest.param("empty", False, id="empty-directory-fails"),
        pytest.param("gone", False, id="missing-directory-fails"),
    ],
)
def test_verify_cli(tmp_path, monkeypatch, tamper, ok):
    root = adapter(tmp_path)
    digest = artifacts.digest_files(root)
    if tamper == "change":
        (root / "adapter_model.safetensors").write_bytes(b"\x01" * 64)
    elif tamper == "add":
        (root / "finetune-serve-faults.json").write_text("{}")
    elif tamper == "remove":
        (root / "adapter_config.json").unlink()
    elif tamper == "empty":
        for p in root.iterdir():
            p.unlink()
    elif tamper == "gone":
        root = tmp_path / "nowhere"
    message = tmp_path / "termination-log"
    monkeypatch.setenv("TERMINATION_MESSAGE_PATH", str(message))
    code = artifacts.main(["verify", str(root), digest])
    assert code == (0 if ok else artifacts.EXIT_DIGEST_MISMATCH)
    if not ok:
        assert digest in message.read_text() and str(root) in message.read_text()


def test_server_refuses_other_bytes_before_loading(tmp_path, capsys):
    root = adapter(tmp_path)
    wrong = "sha256:" + "0" * 64
    code = serve.main(["--model", str(tmp_path / "base-not-needed"), "--adapter", f"m={root}", "--artifact-digest", wrong,
                       "--port", "0"])
    assert code == artifacts.EXIT_DIGEST_MISMATCH
    assert "digest mismatch" in capsys.readouterr().err


def test_server_checks_the_registered_digest(tmp_path):
    root = adapter(tmp_path)
    config = serve.parse_args(["--model", "base", "--adapter", f"m={root}", "--artifact-digest", artifacts.digest_files(root)])
    assert serve.verify_artifact(config) is None
