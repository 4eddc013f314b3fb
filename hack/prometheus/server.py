"""A real Prometheus process on loopback, for tests, the rollout demo and the benchmarks.

`PrometheusServer` runs the `prometheus` binary (Debian's package; `hack/prometheus/install.sh`
installs it) on a free 127.0.0.1 port with its own config file and TSDB directory, a short
scrape interval and `--web.enable-lifecycle`, and waits for `/-/ready`.

`start_serving_prometheus(kubeconfig, namespaces, workdir)` is the one-call version for the dev
cluster: the serving scrape job of `serving-scrape-config.yaml` (keep Pods labelled
`finetune.ai/serve=true`, scrape their `http` port at the Pod IP, add `namespace`, `pod`,
`rollout`, `model_version`, `track`), over `kubernetes_sd_configs` when the binary has them and
over the Pod-discovery bridge of `kubernetes_sd.py` when it does not (Debian builds it
without). A test harness, not the product.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from finetune_operator.analysis.prometheus import PrometheusProvider
from hack.prometheus import kubernetes_sd

SERVING_SCRAPE_CONFIG = Path(__file__).resolve().parent / "serving-scrape-config.yaml"
INSTALL_HINT = "Prometheus is not installed: run hack/prometheus/install.sh (Debian's prometheus package)"
START_TIMEOUT = 60
LOG_TAIL_LINES = 60
STATIC_JOB = "static"

T = TypeVar("T")


class PrometheusError(RuntimeError):
    """Prometheus did not start, or answered an API call with an error."""


class PrometheusExited(PrometheusError):
    """The process ended: waiting longer cannot help."""


def _wait(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = check()
        except PrometheusExited:
            raise
        except Exception as exc:  # noqa: BLE001 - a transient error is just "not yet"
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise PrometheusError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@functools.cache
def supports_kubernetes_sd() -> bool:
    """Whether this Prometheus build knows kubernetes_sd_configs (Debian's does not)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
        config = Path(tmp) / "prometheus.yml"
        config.write_text(yaml.safe_dump({"scrape_configs": [{
            "job_name": "probe",
            "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
        }]}))
        result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, timeout=60)
        return result.returncode == 0


def serving_scrape_job(kubeconfig: str, namespaces: list[str], scrape_interval: str = "1s") -> dict[str, Any]:
    """The serving scrape job for the dev cluster: the shipped one with kubeconfig and namespaces."""
    job = yaml.safe_load(SERVING_SCRAPE_CONFIG.read_text())
    job["scrape_interval"] = scrape_interval
    job["scrape_timeout"] = scrape_interval
    for sd in job["kubernetes_sd_configs"]:
        sd["kubeconfig_file"] = kubeconfig
        if namespaces:
            sd["namespaces"] = {"names": list(namespaces)}
    return job


class PrometheusServer:
    """One Prometheus process and what a test does with it."""

    def __init__(self, binary: str, workdir: Path, scrape_configs: list[dict], scrape_interval: str = "1s"):
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.data_dir = workdir / "data"
        self.log_path = workdir / "prometheus.log"
        self.targets_path = workdir / "targets.json"
        self.targets_path.write_text("[]")
        self.config = {
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": scrape_interval},
            "scrape_configs": scrape_configs,
        }
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.process: subprocess.Popen[bytes] | None = None

    # ---- lifecycle

    def start(self) -> PrometheusServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={self.data_dir}",
                    "--storage.tsdb.retention.time=1h",
                    "--web.enable-lifecycle",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise PrometheusExited(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            return self._get("/-/ready")[0] == 200

        try:
            _wait(ready, START_TIMEOUT, f"prometheus {self.url}/-/ready")
        except BaseException:
            print(self.log_tail())
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def reload(self) -> None:
        """Re-reads the config file (after `self.config` was changed and written)."""
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        status, body = self._request("/-/reload", method="POST")
        if status != 200:
            raise PrometheusError(f"prometheus reload -> {status}: {body}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- targets

    def set_targets(self, groups: list[dict[str, Any]]) -> None:
        """Rewrites the static job's file_sd file, e.g. [{"targets": ["127.0.3.1:8000"], "labels": {...}}]."""
        tmp = self.targets_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, self.targets_path)  # atomic: Prometheus never reads half a file

    def active_targets(self) -> list[dict[str, Any]]:
        return self.api("/api/v1/targets", {"state": "active"})["activeTargets"]

    # ---- queries

    def provider(self, timeout: float = 5.0) -> PrometheusProvider:
        return PrometheusProvider(self.url, timeout=timeout)

    def api(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = self._get(path + query)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        if status != 200 or payload.get("status") != "success":
            raise PrometheusError(f"GET {path}{query} -> {status}: {body[:500]}")
        return payload["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result list (vector samples)."""
        return self.api("/api/v1/query", {"query": promql})["result"]

    def wait_for_series(self, promql: str, timeout: float = 60, what: str | None = None) -> list[dict[str, Any]]:
        return _wait(lambda: self.query(promql), timeout, what or f"prometheus to return series for {promql}")

    def _get(self, path: str) -> tuple[int, str]:
        return self._request(path)

    def _request(self, path: str, method: str = "GET") -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local test URL
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)


class ServingPrometheus:
    """A Prometheus scraping the dev cluster's serving Pods, with the discovery bridge it needs."""

    def __init__(self, server: PrometheusServer, bridge: kubernetes_sd.KubernetesSDBridge | None):
        self.server, self.bridge = server, bridge

    @property
    def url(self) -> str:
        return self.server.url

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.server.query(promql)

    def stop(self) -> None:
        self.server.stop()
        if self.bridge is not None:
            self.bridge.stop()


def start_serving_prometheus(kubeconfig: str, namespaces: list[str], workdir: Path,
                             scrape_interval: str = "1s") -> ServingPrometheus:
    """Prometheus scraping the serving Pods of `namespaces` in the cluster `kubeconfig` names."""
    binary = prometheus_binary()
    if binary is None:
        raise PrometheusError(INSTALL_HINT)
    job = serving_scrape_job(kubeconfig, namespaces, scrape_interval)
    bridge = None
    if not supports_kubernetes_sd():
        bridge = kubernetes_sd.KubernetesSDBridge(kubernetes_sd.kubeconfig_pod_lister(kubeconfig)).start()
        job = kubernetes_sd.to_http_sd(job, bridge.url)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        server = PrometheusServer(binary, workdir, [job], scrape_interval).start()
    except BaseException:
        if bridge is not None:
            bridge.stop()
        raise
    return ServingPrometheus(server, bridge)
