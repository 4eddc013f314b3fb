"""hf:// base models downloaded through the Hub file API, against the local Hub double.

Each resolution runs in its own process (as trainer Pods do): huggingface_hub reads HF_ENDPOINT,
HF_TOKEN, HF_HUB_CACHE and HF_HUB_OFFLINE once, at import.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster.hubserver import HubServer

REPO = "test-org/tiny"
TOKEN = "hf_right"

RESOLVE = """
import json, sys
from finetune_trainer.config import ModelSpec
from finetune_trainer.exitcodes import TrainerError
from finetune_trainer.models import hub_lineage, resolve_model_spec
spec = ModelSpec(uri=sys.argv[1], revision=sys.argv[2] or None, cache_dir=sys.argv[3])
try:
    path = resolve_model_spec(spec, "/unused")
except TrainerError as exc:
    print(json.dumps({"error": str(exc), "code": exc.exit_code}))
else:
    print(json.dumps({"path": str(path), **hub_lineage(spec)}))
"""


def resolve(tmp_path: Path, hub: HubServer | DeadHub | None, *, revision: str = "", token: str | None = TOKEN,
            offline: bool = False, token_ref: str = "hub-token/token", repo: str = REPO,
            extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {"HF_HUB_CACHE": str(tmp_path / "hub-cache"), "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    if token is not None:
        env |= {"HF_TOKEN": token, "FINETUNE_HF_TOKEN_REF": token_ref}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    env |= extra_env or {}
    return subprocess.Popen(
        [sys.executable, "-c", RESOLVE, f"hf://{repo}", revision, str(tmp_path / "models")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


class DeadHub:
    """An endpoint nothing listens on (the port of a server that was just closed)."""

    def __init__(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture()
def hub(tiny_model):
    with HubServer({REPO: tiny_model}, refs=("v1",), token=TOKEN) as server:
        yield server


def test_concurrent_jobs_download_each_file_once_then_reuse_the_cache(tmp_path, hub, tiny_model):
    files = {p.relative_to(tiny_model).as_posix() for p in tiny_model.rglob("*") if p.is_file()}
    first, second = resolve(tmp_path, hub, revision="v1"), resolve(tmp_path, hub, revision="v1")
    results = [result(first), result(second)]
    assert hub.file_gets(REPO) == {name: 1 for name in files}
    for got in results:
        assert got["base_model_commit"] == hub.commit(REPO)
        assert Path(got["path"]).name == hub.commit(REPO) and (Path(got["path"]) / "config.json").is_file()
    again = result(resolve(tmp_path, hub, revision=hub.commit(REPO)))
    assert again["base_model_from_cache"] is True and again["base_model_commit"] == hub.commit(REPO)
    assert hub.file_gets(REPO) == {name: 1 for name in files}
    # Offline, or with the Hub unreachable, the cache alone answers for the revision downloaded.
    offline = result(resolve(tmp_path, None, revision="v1", offline=True))
    assert offline["base_model_commit"] == hub.commit(REPO) and offline["base_model_from_cache"] is True
    unreachable = result(resolve(tmp_path, DeadHub(), revision="v1"))
    assert unreachable["base_model_commit"] == hub.commit(REPO) and unreachable["base_model_from_cache"] is True
    assert "cannot download" in result(resolve(tmp_path, DeadHub(), revision="v2"))["error"]


def test_wrong_token_is_a_config_error_naming_the_secret(tmp_path, hub):
    got = result(resolve(tmp_path, hub, token="hf_wrong", token_ref="hub-token/token"))
    assert got["code"] == 2, got
    assert "baseModel.tokenSecretRef hub-token/token" in got["error"] and "401" in got["error"]
    assert hub.file_gets(REPO) == {} and hub.unauthorized > 0
    anonymous = result(resolve(tmp_path, hub, token=None))
    assert anonymous["code"] == 2 and "set baseModel.tokenSecretRef" in anonymous["error"]


def test_unknown_revision_and_offline_miss_are_model_errors(tmp_path, hub):
    missing = result(resolve(tmp_path, hub, revision="no-such-branch"))
    assert missing["code"] == 4 and "no such revision" in missing["error"]
    offline = result(resolve(tmp_path, None, offline=True))
    assert offline["code"] == 4 and "not in the local Hugging Face cache" in offline["error"]


BOUND = """
import json, sys
from pathlib import Path
from finetune_trainer import modelcache
print(json.dumps(modelcache.enforce_bound(Path(sys.argv[1]), keep=sys.argv[2])))
"""


def test_a_bounded_cache_evicts_the_least_recently_used_model_never_the_jobs_own(tmp_path, tiny_model):
    import time

    from finetune_trainer import modelcache

    repos = {"test-org/old": tiny_model, "test-org/recent": tiny_model, REPO: tiny_model}
    cache = tmp_path / "hub-cache"
    with HubServer(repos, token=TOKEN) as server:
        for repo in ("test-org/old", "test-org/recent"):
            proc = resolve(tmp_path, server, repo=repo)
            assert "path" in result(proc)
        one_repo = sum(p.stat().st_size for p in (modelcache.repo_dir(cache, "test-org/old") / "blobs").iterdir())
        # "old" was used an hour ago, "recent" 20 minutes ago: both past the grace period.
        for repo, age in (("test-org/old", 3600), ("test-org/recent", 1200)):
            marker = modelcache.repo_dir(cache, repo) / modelcache.USED_MARKER
            stamp = time.time() - age
            os.utime(marker, (stamp, stamp))
            for path in modelcache.repo_dir(cache, repo).rglob("*"):
                os.utime(path, (stamp, stamp), follow_symlinks=False)
        # A bound that holds two models: the job's own download evicts the least recently used one.
        env_bound = {modelcache.CACHE_MAX_BYTES_ENV: str(int(one_repo * 2.5))}
        got = result(resolve(tmp_path, server, extra_env=env_bound))
        assert "path" in got
        assert not modelcache.repo_dir(cache, "test-org/old").exists()
        assert modelcache.repo_dir(cache, "test-org/recent").is_dir() and modelcache.repo_dir(cache, REPO).is_dir()
        # A bound smaller than one model: everything else past its grace goes, the job's own stays.
        assert json.loads(subprocess.run([sys.executable, "-c", BOUND, str(cache), REPO], capture_output=True, text=True,
                                         env={**os.environ, modelcache.CACHE_MAX_BYTES_ENV: "1",
                                              "PYTHONPATH": os.pathsep.join(sys.path)}).stdout) == ["test-org/recent"]
        assert modelcache.repo_dir(cache, REPO).is_dir()
        # Within the grace period nothing is evicted, however small the bound.
        assert modelcache.enforce_bound(cache, keep="someone/else", environ={modelcache.CACHE_MAX_BYTES_ENV: "1"}) == []
        # Without a bound nothing is evicted.
        assert modelcache.enforce_bound(cache, keep="someone/else", environ={}, now=time.time() + 86400) == []
