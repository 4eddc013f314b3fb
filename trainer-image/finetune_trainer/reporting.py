"""Progress to the operator through one ConfigMap: the narrowest channel that works.

The operator creates `<job>-progress` and a Role that lets this Pod's ServiceAccount `get` and
`patch` that one ConfigMap by name — nothing else. The trainer merge-patches
`data.progress` with its latest progress line (at most every `min_interval` seconds, and
always the last one); the operator watches the ConfigMap and copies the numbers into the
FineTuneJob's status.

Enabled by the env the operator sets: FINETUNE_PROGRESS_CONFIGMAP (the name) and
POD_NAMESPACE. Credentials come from the Pod's service-account token (in-cluster: the
standard token path and KUBERNETES_SERVICE_HOST/PORT) or, where the runtime provides one, a
kubeconfig with a token file in KUBECONFIG. Only the standard library is used: the trainer
image needs no Kubernetes client for one PATCH. A failed report is logged and never stops
training.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class _Endpoint:
    def __init__(self, server: str, token_file: Path, ca_file: Path | None):
        self.server = server.rstrip("/")
        self.token_file = token_file
        self.ca_file = ca_file


def _endpoint() -> _Endpoint | None:
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig and Path(kubeconfig).is_file():
        import yaml  # kubeconfigs are YAML (JSON is YAML too)

        config = yaml.safe_load(Path(kubeconfig).read_text())
        context_name = config.get("current-context")
        context = next((c["context"] for c in config.get("contexts", []) if c["name"] == context_name), None)
        if context:
            cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
            user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
            if user.get("tokenFile"):
                ca = cluster.get("certificate-authority")
                return _Endpoint(cluster["server"], Path(user["tokenFile"]), Path(ca) if ca else None)
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token = SERVICE_ACCOUNT_DIR / "token"
    if host and port and token.is_file():
        host = f"[{host}]" if ":" in host else host
        return _Endpoint(f"https://{host}:{port}", token, SERVICE_ACCOUNT_DIR / "ca.crt")
    return None


class ConfigMapReporter:
    """Patches data.progress of one ConfigMap; throttled; never raises."""

    def __init__(self, namespace: str, name: str, endpoint: _Endpoint, min_interval: float = 2.0):
        self.url = f"{endpoint.server}/api/v1/namespaces/{namespace}/configmaps/{name}"
        self.endpoint = endpoint
        self.min_interval = min_interval
        self._last_sent = 0.0
        self._pending: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._warned = False
        context = ssl.create_default_context()
        if endpoint.ca_file and endpoint.ca_file.is_file():
            context.load_verify_locations(str(endpoint.ca_file))
        self._context = context

    @classmethod
    def from_env(cls) -> ConfigMapReporter | None:
        name = os.environ.get("FINETUNE_PROGRESS_CONFIGMAP")
        namespace = os.environ.get("POD_NAMESPACE")
        if not name or not namespace:
            return None
        endpoint = _endpoint()
        if endpoint is None:
            print("warning: FINETUNE_PROGRESS_CONFIGMAP is set but no API credentials were found; progress stays in the log", file=sys.stderr)
            return None
        return cls(namespace, name, endpoint)

    def report(self, line: dict[str, Any], *, final: bool = False) -> None:
        with self._lock:
            self._pending = line
            if not final and time.monotonic() - self._last_sent < self.min_interval:
                return
            self._send(self._pending)
            self._pending = None
            self._last_sent = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            if self._pending is not None:
                self._send(self._pending)
                self._pending = None

    def _send(self, line: dict[str, Any]) -> None:
        body = json.dumps({"data": {"progress": json.dumps(line, separators=(",", ":"), sort_keys=True, default=str)}}).encode()
        request = urllib.request.Request(self.url, data=body, method="PATCH")
        request.add_header("Content-Type", "application/merge-patch+json")
        try:
            token = self.endpoint.token_file.read_text().strip()
            request.add_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(request, context=self._context, timeout=10) as response:
                response.read()
        except Exception as exc:  # noqa: BLE001 - progress is best effort; training goes on
            if not self._warned:
                print(f"warning: progress report to {self.url} failed: {exc}", file=sys.stderr)
                self._warned = True
