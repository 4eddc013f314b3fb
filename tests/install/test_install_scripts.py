"""The install scripts that `make test` and `make demo` run first, on their cold and warm paths.

A new user's first run is the cold path: an empty cache root (`FINETUNE_CACHE`). A script that
only ever ran warm once failed on every fresh machine while passing everywhere else, so each
script's cold path runs here into an empty directory where that is cheap, and its warm path
(a second run finds everything and only reports it) always:

- `hack/thirdparty/crds.sh`: cold for real, into an empty cache root, from the warm Go module
  cache with the module proxy switched off (nothing is downloaded at test time).
- `hack/venv.sh`: cold for real (a new virtual environment) on a copy of the script with tiny
  requirement files and no package index; a failed install leaves nothing marked complete.
- `hack/controlplane/build.sh`: warm against the binaries `make test` built; cold for etcd
  alone (the Go build cache makes that a link) into an empty cache root, proxy off.
- `hack/prometheus/install.sh`: warm against the installed package; cold with the package
  manager replaced by a recording stand-in on PATH (installing a Debian package for real is
  what `make prometheus` did before the suite), so the script's own steps and exit status are
  what is checked.
- `hack/chromium/install.sh`: the same, for Debian's chromium (the report test's browser).
- `hack/seaweedfs/install.sh`: warm against the binary `make test` built; cold into an empty
  cache root with the module proxy off (the Go build cache makes that a link).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack"
CRDS_SCRIPT = HACK / "thirdparty" / "crds.sh"
VENV_SCRIPT = HACK / "venv.sh"
BUILD_SCRIPT = HACK / "controlplane" / "build.sh"
PROMETHEUS_SCRIPT = HACK / "prometheus" / "install.sh"
CHROMIUM_SCRIPT = HACK / "chromium" / "install.sh"
SEAWEEDFS_SCRIPT = HACK / "seaweedfs" / "install.sh"

THIRDPARTY_FILES = {
    "gateway-api/gateway.networking.k8s.io_httproutes.yaml",
    "gateway-api/gateway.networking.k8s.io_gateways.yaml",
    "gateway-api/gateway.networking.k8s.io_gatewayclasses.yaml",
    "gateway-api/gateway.networking.k8s.io_referencegrants.yaml",
    "istio/networking.istio.io_virtualservices.yaml",
    "istio/networking.istio.io_destinationrules.yaml",
    "kserve/serving.kserve.io_inferenceservices.yaml",
    "prometheus-operator/monitoring.coreos.com_servicemonitors.yaml",
    "prometheus-operator/monitoring.coreos.com_podmonitors.yaml",
    "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml",
}


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def offline_go(cache_root: Path) -> dict[str, str]:
    """A cache root of our own, and Go that reads only its (warm) module cache."""
    return {"FINETUNE_CACHE": str(cache_root), "GOPROXY": "off", "GOFLAGS": "-mod=mod"}


# --------------------------------------------------------------------------- third-party CRDs


def test_thirdparty_crds_cold_run_into_an_empty_cache_root_exits_zero_and_leaves_no_staging(tmp_path):
    cache = tmp_path / "cache"
    cold = run(["bash", str(CRDS_SCRIPT)], env=offline_go(cache))
    assert cold.returncode == 0, f"cold run exited {cold.returncode}:\n{cold.stderr}"
    out_dir = Path(cold.stdout.strip().splitlines()[-1])
    assert out_dir.parent == cache / "thirdparty-crds"
    files = {str(p.relative_to(out_dir)) for p in out_dir.glob("*/*.yaml")}
    assert files == THIRDPARTY_FILES
    assert (out_dir / ".complete").is_file()
    assert "go mod download sigs.k8s.io/gateway-api@" in cold.stderr
    assert [p.name for p in (cache / "thirdparty-crds").iterdir()] == [out_dir.name], "staging left behind"
    # The Istio CRDs are split out of one generated file: each holds exactly its own CRD.
    vs = (out_dir / "istio" / "networking.istio.io_virtualservices.yaml").read_text()
    assert "name: virtualservices.networking.istio.io" in vs and "destinationrules" not in vs

    warm = run(["bash", str(CRDS_SCRIPT)], env=offline_go(cache))
    assert (warm.returncode, warm.stdout.strip(), warm.stderr) == (0, str(out_dir), "")

    installed = run(["bash", str(CRDS_SCRIPT), "--installed"], env=offline_go(cache))
    assert (installed.returncode, installed.stdout.strip()) == (0, str(out_dir))


def test_thirdparty_crds_installed_check_on_an_empty_cache_says_how_to_fetch(tmp_path):
    result = run(["bash", str(CRDS_SCRIPT), "--installed"], env=offline_go(tmp_path / "empty"))
    assert result.returncode == 3
    assert result.stdout == ""
    assert "make thirdparty-crds" in result.stderr
    assert not (tmp_path / "empty").exists(), "--installed must fetch and create nothing"


def test_thirdparty_crds_failure_names_the_module_and_marks_nothing_complete(tmp_path):
    script_dir = tmp_path / "thirdparty"
    script_dir.mkdir()
    shutil.copy(CRDS_SCRIPT, script_dir / "crds.sh")
    versions = (CRDS_SCRIPT.parent / "versions.env").read_text()
    (script_dir / "versions.env").write_text(versions.replace("KSERVE_VERSION=", "KSERVE_VERSION=v0.0.0-nonexistent#"))
    cache = tmp_path / "cache"
    result = run(["bash", str(script_dir / "crds.sh")], env=offline_go(cache))
    assert result.returncode != 0
    assert "FAILED: go mod download github.com/kserve/kserve@v0.0.0-nonexistent" in result.stderr
    assert not list(cache.rglob(".complete"))
    assert [p.name for p in (cache / "thirdparty-crds").iterdir()] == [], "staging left behind after a failure"


# --------------------------------------------------------------------------- venv


def venv_tree(tmp_path: Path, requirement: str = "") -> Path:
    """A copy of hack/venv.sh in a tree of its own, with tiny requirement files."""
    root = tmp_path / "repo"
    (root / "hack").mkdir(parents=True)
    shutil.copy(VENV_SCRIPT, root / "hack" / "venv.sh")
    reqs = root / "requirements"
    reqs.mkdir()
    for name in ("operator", "trainer", "dev", "model", "constraints"):
        (reqs / f"{name}.txt").write_text("# nothing\n")
    if requirement:
        (reqs / "operator.txt").write_text(requirement + "\n")
    return root


def venv_env(cache: Path) -> dict[str, str]:
    # No index: the cold path must work with what is at hand, and never reach a registry here.
    return {"FINETUNE_CACHE": str(cache), "PIP_NO_INDEX": "1", "PYTHON": sys.executable}


def test_venv_cold_creates_links_and_marks_complete_then_warm_reuses(tmp_path):
    root, cache = venv_tree(tmp_path), tmp_path / "cache"
    cold = run(["bash", str(root / "hack" / "venv.sh")], env=venv_env(cache))
    assert cold.returncode == 0, f"cold run exited {cold.returncode}:\n{cold.stderr}"
    assert "venv: creating" in cold.stderr
    link = root / ".venv"
    assert link.is_symlink()
    venv = link.resolve()
    assert venv.parent == (cache / "venv").resolve()
    assert (venv / ".complete").is_file()
    assert run([str(link / "bin" / "python"), "-c", "import os, sys; print(os.path.realpath(sys.prefix))"]).stdout.strip() == str(venv)

    started = time.monotonic()
    warm = run(["bash", str(root / "hack" / "venv.sh")], env=venv_env(cache))
    assert (warm.returncode, warm.stderr) == (0, "")
    assert link.resolve() == venv
    assert time.monotonic() - started < 10, "the warm path should only hash and link"


def test_venv_failed_install_is_not_marked_complete_and_the_next_run_retries(tmp_path):
    cache = tmp_path / "cache"
    broken = venv_tree(tmp_path, requirement="finetune-operator-no-such-package==1.0")
    result = run(["bash", str(broken / "hack" / "venv.sh")], env=venv_env(cache))
    assert result.returncode != 0
    assert "finetune-operator-no-such-package" in result.stderr
    assert not list((cache / "venv").glob("*/.complete"))
    assert not (broken / ".venv").exists()
    # Fixing the requirement (a new key) and running again walks the cold path to the end.
    (broken / "requirements" / "operator.txt").write_text("# fixed\n")
    again = run(["bash", str(broken / "hack" / "venv.sh")], env=venv_env(cache))
    assert again.returncode == 0, again.stderr
    assert (broken / ".venv" / ".complete").is_file()


def test_venv_is_keyed_by_the_cache_root(tmp_path):
    """Pointing FINETUNE_CACHE elsewhere relinks .venv to an environment under the new root."""
    root = venv_tree(tmp_path)
    first, second = tmp_path / "one", tmp_path / "two"
    assert run(["bash", str(root / "hack" / "venv.sh")], env=venv_env(first)).returncode == 0
    assert run(["bash", str(root / "hack" / "venv.sh")], env=venv_env(second)).returncode == 0
    assert (root / ".venv").resolve().parent == (second / "venv").resolve()


# --------------------------------------------------------------------------- control plane


def test_controlplane_warm_path_builds_nothing_and_prints_the_bin_dir():
    started = time.monotonic()
    result = run(["bash", str(BUILD_SCRIPT), "all"])
    assert result.returncode == 0, result.stderr
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm"):
        assert os.access(bin_dir / binary, os.X_OK), binary
    assert "building" not in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_controlplane_cold_etcd_build_into_an_empty_cache_root(tmp_path):
    cache = tmp_path / "cache"
    result = run(["bash", str(BUILD_SCRIPT), "etcd"], env=offline_go(cache), timeout=900)
    assert result.returncode == 0, result.stderr
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    assert bin_dir.is_relative_to(cache)
    assert "building go.etcd.io/etcd/server/v3@" in result.stderr
    version = run([str(bin_dir / "etcd"), "--version"])
    assert version.returncode == 0 and "etcd Version: 3." in version.stdout
    assert not (bin_dir / "etcd.tmp").exists()
    again = run(["bash", str(BUILD_SCRIPT), "etcd"], env=offline_go(cache))
    assert (again.returncode, again.stderr) == (0, "")


def test_controlplane_unknown_target_fails_naming_the_choices(tmp_path):
    result = run(["bash", str(BUILD_SCRIPT), "etcdd"], env={"FINETUNE_CACHE": str(tmp_path)})
    assert result.returncode != 0
    assert "unknown target etcdd (all|etcd|kubernetes|helm|bindir)" in result.stderr


# --------------------------------------------------------------------------- SeaweedFS (S3)


def test_seaweedfs_warm_path_builds_nothing_and_prints_the_bin_dir():
    started = time.monotonic()
    result = run(["bash", str(SEAWEEDFS_SCRIPT)])
    assert result.returncode == 0, result.stderr
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    assert os.access(bin_dir / "weed", os.X_OK)
    assert result.stderr == ""
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_seaweedfs_cold_build_into_an_empty_cache_root(tmp_path):
    cache = tmp_path / "cache"
    result = run(["bash", str(SEAWEEDFS_SCRIPT)], env=offline_go(cache), timeout=900)
    assert result.returncode == 0, result.stderr
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    assert bin_dir.is_relative_to(cache)
    assert "seaweedfs: building github.com/seaweedfs/seaweedfs/weed@" in result.stderr
    version = run([str(bin_dir / "weed"), "version"])
    assert version.returncode == 0 and "version" in version.stdout.lower()
    assert not (bin_dir / "weed.tmp").exists()
    again = run(["bash", str(SEAWEEDFS_SCRIPT)], env=offline_go(cache))
    assert (again.returncode, again.stderr, again.stdout.strip()) == (0, "", str(bin_dir))


def test_seaweedfs_without_go_fails_naming_the_module(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "env", "mkdir", "rm", "printf", "mv", "tail", "cat"):
        found = shutil.which(tool)
        if found:
            (bare / tool).symlink_to(found)
    result = run([shutil.which("bash"), str(SEAWEEDFS_SCRIPT)], env={"FINETUNE_CACHE": str(tmp_path / "cache"), "PATH": str(bare)})
    assert result.returncode != 0
    assert "no 'go' on PATH (needed to build github.com/seaweedfs/seaweedfs@" in result.stderr
    assert list((tmp_path / "cache").rglob("weed")) == [], "nothing half-built is left to look complete"


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_warm_path_does_nothing():
    result = run(["bash", str(PROMETHEUS_SCRIPT)])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _shim_path(tmp_path: Path, apt_get: str) -> tuple[dict[str, str], Path]:
    """PATH with the tools the script needs, minus Prometheus, and a recording apt-get."""
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("bash", "sh", "id", "tee", "chmod", "rm", "head", "cat", "env"):
        found = shutil.which(tool)
        assert found, tool
        (shims / tool).symlink_to(found)
    record = tmp_path / "apt-get.calls"
    (shims / "apt-get").write_text(apt_get.format(record=record, shims=shims))
    (shims / "apt-get").chmod(0o755)
    return {"PATH": str(shims)}, record


FAKE_APT_INSTALLS = """#!/bin/bash
echo "$*" >> {record}
if [ "$1" = install ]; then
  for b in prometheus promtool; do
    printf '#!/bin/bash\\necho "%s, version 2.42.0+ds (stand-in)"\\n' "$b" > {shims}/$b
    chmod 755 {shims}/$b
  done
fi
"""

FAKE_APT_FAILS = """#!/bin/bash
echo "$*" >> {record}
if [ "$1" = install ]; then echo "E: Unable to locate package prometheus" >&2; exit 100; fi
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the cold path installs a Debian package: root only")
def test_prometheus_cold_path_installs_the_package_and_reports_versions(tmp_path):
    policy = Path("/usr/sbin/policy-rc.d")
    had_policy = policy.exists()
    env, record = _shim_path(tmp_path, FAKE_APT_INSTALLS)
    result = run(["bash", str(PROMETHEUS_SCRIPT)], env=env)
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines() == ["update", "install -y --no-install-recommends prometheus"]
    assert result.stdout.splitlines() == ["prometheus, version 2.42.0+ds (stand-in)",
                                          "promtool, version 2.42.0+ds (stand-in)"]
    assert policy.exists() == had_policy, "the temporary policy-rc.d must go again"


@pytest.mark.skipif(os.geteuid() != 0, reason="the cold path installs a Debian package: root only")
def test_prometheus_cold_path_fails_when_the_package_cannot_be_installed(tmp_path):
    policy = Path("/usr/sbin/policy-rc.d")
    had_policy = policy.exists()
    env, record = _shim_path(tmp_path, FAKE_APT_FAILS)
    result = run(["bash", str(PROMETHEUS_SCRIPT)], env=env)
    assert result.returncode != 0
    assert "Unable to locate package prometheus" in result.stderr
    assert policy.exists() == had_policy


# --------------------------------------------------------------------------- Chromium


def test_chromium_warm_path_does_nothing():
    result = run(["bash", str(CHROMIUM_SCRIPT)], env={"CHROMIUM": "chromium"})
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


FAKE_APT_INSTALLS_CHROMIUM = """#!/bin/bash
echo "$*" >> {record}
if [ "$1" = install ]; then
  printf '#!/bin/bash\\necho "Chromium 156.0.0.0 (stand-in)"\\n' > {shims}/chromium
  chmod 755 {shims}/chromium
fi
"""

FAKE_APT_FAILS_CHROMIUM = """#!/bin/bash
echo "$*" >> {record}
if [ "$1" = install ]; then echo "E: Unable to locate package chromium" >&2; exit 100; fi
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the cold path installs a Debian package: root only")
def test_chromium_cold_path_installs_the_package_and_reports_its_version(tmp_path):
    env, record = _shim_path(tmp_path, FAKE_APT_INSTALLS_CHROMIUM)
    result = run(["bash", str(CHROMIUM_SCRIPT)], env={**env, "CHROMIUM": "chromium"})
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines() == ["update", "install -y --no-install-recommends chromium fonts-dejavu-core"]
    assert result.stdout.splitlines() == ["Chromium 156.0.0.0 (stand-in)"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the cold path installs a Debian package: root only")
def test_chromium_cold_path_fails_when_the_package_cannot_be_installed(tmp_path):
    env, record = _shim_path(tmp_path, FAKE_APT_FAILS_CHROMIUM)
    result = run(["bash", str(CHROMIUM_SCRIPT)], env={**env, "CHROMIUM": "chromium"})
    assert result.returncode != 0
    assert "Unable to locate package chromium" in result.stderr
    assert not (tmp_path / "bin" / "chromium").exists()


def test_every_install_script_is_executable_by_bash_and_strict():
    for script in (CRDS_SCRIPT, VENV_SCRIPT, BUILD_SCRIPT, PROMETHEUS_SCRIPT, CHROMIUM_SCRIPT, SEAWEEDFS_SCRIPT):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash"), script
        assert "set -euo pipefail" in text, f"{script} must stop at the first failing step"
        assert run(["bash", "-n", str(script)]).returncode == 0, script
        assert script.stat().st_mode & stat.S_IRUSR
