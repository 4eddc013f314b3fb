"""Kubernetes Pod discovery for a Prometheus built without it, over HTTP service discovery.

Debian's `prometheus` package is built without `kubernetes_sd_configs` (its Kubernetes client
is not packaged). Tests and the demo still need Prometheus to find serving Pods in the dev
cluster the way it does in a real cluster, with the same relabelling. This bridge lists the
Pods and answers Prometheus' `http_sd_configs` with the target groups that
`kubernetes_sd_configs: [{role: pod}]` would produce: one target per declared container port
(`__address__` = Pod IP and port), one per container without ports, Pods without an IP left
out, and the same `__meta_kubernetes_*` labels (names sanitised the same way, e.g.
`finetune.ai/model-version` -> `__meta_kubernetes_pod_label_finetune_ai_model_version`), so a
scrape job's `relabel_configs` work unchanged.

`to_http_sd(job, url)` turns a scrape job written for `kubernetes_sd_configs` into one that
queries the bridge: its `namespaces.names` and pod `selectors` (label and field) travel as
query parameters.

    python -m hack.prometheus.kubernetes_sd --kubeconfig KUBECONFIG --port 9095
    # then in a scrape job: http_sd_configs: [{url: "http://127.0.0.1:9095/pods?namespace=NS"}]

A test harness, not the product: the operator's Prometheus in a cluster uses
`kubernetes_sd_configs` itself.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

META = "__meta_kubernetes_"
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def sanitize(name: str) -> str:
    return _INVALID_LABEL_CHARS.sub("_", name)


def _join_host_port(host: str, port: int | str) -> str:
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _pod_ready(pod: dict) -> str:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status", "unknown")).lower()
    return "unknown"


def pod_target_group(pod: dict) -> dict[str, Any] | None:
    """The target group Prometheus' Kubernetes SD (role pod) builds for one Pod (a dict as the API returns)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    pod_ip = status.get("podIP")
    if not pod_ip:
        return None
    labels: dict[str, str] = {
        f"{META}namespace": meta.get("namespace", ""),
        f"{META}pod_name": meta.get("name", ""),
        f"{META}pod_ip": pod_ip,
        f"{META}pod_ready": _pod_ready(pod),
        f"{META}pod_phase": status.get("phase", ""),
        f"{META}pod_node_name": spec.get("nodeName", ""),
        f"{META}pod_host_ip": status.get("hostIP", ""),
        f"{META}pod_uid": meta.get("uid", ""),
    }
    for key, value in (meta.get("labels") or {}).items():
        labels[f"{META}pod_label_{sanitize(key)}"] = value
        labels[f"{META}pod_labelpresent_{sanitize(key)}"] = "true"
    for key, value in (meta.get("annotations") or {}).items():
        labels[f"{META}pod_annotation_{sanitize(key)}"] = value
        labels[f"{META}pod_annotationpresent_{sanitize(key)}"] = "true"
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller"):
            labels[f"{META}pod_controller_kind"] = owner.get("kind", "")
            labels[f"{META}pod_controller_name"] = owner.get("name", "")
    container_ids = {c.get("name"): c.get("containerID", "") for c in status.get("containerStatuses") or []}
    targets = []
    for init, containers in ((False, spec.get("containers") or []), (True, spec.get("initContainers") or [])):
        for container in containers:
            common = {
                f"{META}pod_container_name": container.get("name", ""),
                f"{META}pod_container_image": container.get("image", ""),
                f"{META}pod_container_id": container_ids.get(container.get("name"), ""),
                f"{META}pod_container_init": "true" if init else "false",
            }
            ports = container.get("ports") or []
            if not ports:
                if not init:
                    targets.append({"__address__": pod_ip, **common})
                continue
            for port in ports:
                number = port.get("containerPort")
                targets.append({
                    "__address__": _join_host_port(pod_ip, number),
                    **common,
                    f"{META}pod_container_port_name": port.get("name", ""),
                    f"{META}pod_container_port_number": str(number),
                    f"{META}pod_container_port_protocol": port.get("protocol", "TCP"),
                })
    # http_sd wants targets as strings per group: one group per target keeps the per-target labels.
    return {
        "source": f"pod/{meta.get('namespace', '')}/{meta.get('name', '')}",
        "groups": [{"targets": [t.pop("__address__")], "labels": {**labels, **t}} for t in targets],
    }


def target_groups(pods: Iterable[dict]) -> list[dict[str, Any]]:
    groups = []
    for pod in pods:
        group = pod_target_group(pod)
        if group is not None:
            groups.extend(group["groups"])
    return groups


PodLister = Callable[[list[str], str | None, str | None], list[dict]]


def kubeconfig_pod_lister(kubeconfig: str) -> PodLister:
    """Lists Pods as plain dicts with the Kubernetes client built from `kubeconfig`."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(kubeconfig))

    def list_pods(namespaces: list[str], label_selector: str | None, field_selector: str | None) -> list[dict]:
        kwargs = {k: v for k, v in (("label_selector", label_selector), ("field_selector", field_selector)) if v}
        pods: list[dict] = []
        calls = [lambda ns=ns: api.list_namespaced_pod(ns, **kwargs, _preload_content=False) for ns in namespaces]
        if not namespaces:
            calls = [lambda: api.list_pod_for_all_namespaces(**kwargs, _preload_content=False)]
        for call in calls:
            pods.extend(json.loads(call().data)["items"])
        return pods

    return list_pods


class KubernetesSDBridge:
    """The HTTP SD endpoint (`GET /pods?namespace=..&labelSelector=..&fieldSelector=..`) on a thread."""

    def __init__(self, list_pods: PodLister, host: str = "127.0.0.1", port: int = 0):
        bridge = self
        self.list_pods = list_pods
        self.last_error: str | None = None

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/pods":
                    self.send_error(404)
                    return
                query = urllib.parse.parse_qs(url.query)
                try:
                    pods = bridge.list_pods(
                        query.get("namespace", []),
                        (query.get("labelSelector") or [None])[0],
                        (query.get("fieldSelector") or [None])[0],
                    )
                    body = json.dumps(target_groups(pods)).encode()
                except Exception as exc:  # Prometheus keeps the last good targets on an error
                    bridge.last_error = f"{type(exc).__name__}: {exc}"
                    self.send_error(503, bridge.last_error[:200])
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="kubernetes-sd-bridge", daemon=True)

    def start(self) -> KubernetesSDBridge:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def to_http_sd(job: dict, bridge_url: str, refresh_interval: str = "1s") -> dict:
    """`job` with each `kubernetes_sd_configs` entry (role pod) replaced by an http_sd_config on the bridge."""
    job = copy.deepcopy(job)
    http_sd = []
    for sd in job.pop("kubernetes_sd_configs", []):
        if sd.get("role") != "pod":
            raise ValueError(f"the bridge discovers Pods only, not role {sd.get('role')!r}")
        params: list[tuple[str, str]] = [("namespace", ns) for ns in (sd.get("namespaces") or {}).get("names", [])]
        for selector in sd.get("selectors") or []:
            if selector.get("role") == "pod":
                if selector.get("label"):
                    params.append(("labelSelector", selector["label"]))
                if selector.get("field"):
                    params.append(("fieldSelector", selector["field"]))
        query = urllib.parse.urlencode(params)
        http_sd.append({"url": f"{bridge_url}/pods" + (f"?{query}" if query else ""),
                        "refresh_interval": refresh_interval})
    job["http_sd_configs"] = job.get("http_sd_configs", []) + http_sd
    return job


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    args = parser.parse_args(argv)
    bridge = KubernetesSDBridge(kubeconfig_pod_lister(args.kubeconfig), args.host, args.port)
    print(f"Kubernetes pod discovery for http_sd_configs on {bridge.url}/pods", flush=True)
    bridge.httpd.serve_forever()


if __name__ == "__main__":
    main()
