"""The process node agent: a tiny kubelet that runs Pods as local processes.

A test harness, not the product.  It registers Nodes (with fake
`nvidia.com/gpu` capacity), keeps them Ready with node Leases and status
heartbeats, and for every Pod the scheduler binds to one of its Nodes:

* maps the container image to a local entrypoint (the image map file); an
  image that is not in the map leaves the container Waiting with ErrImagePull,
  as a real kubelet would for an image it cannot pull;
* lays out the Pod's volumes as local directories under the node directory:
  emptyDir, ConfigMap, Secret, downward API, projected service-account tokens
  (from the TokenRequest API, bound to the Pod) and PVCs (one directory per
  claim, kept across Pods so checkpoints survive a restart);
* runs init containers in order, then the containers, each as a process in its
  own session with command/args/env (valueFrom: fieldRef, resourceFieldRef,
  configMapKeyRef, secretKeyRef; envFrom), its output in a log file;
* reports Running, then exit code, reason and termination message into the
  Pod's status, restarting containers as the restartPolicy says;
* on deletion sends SIGTERM to the process group, SIGKILL after the grace
  period, then removes the Pod.

Each container's process runs in its own mount namespace (podmounts.py): every
volume is bind-mounted at its real mountPath (read-only where the mount says
so), the termination message file at its terminationMessagePath, the Pod gets
a private /tmp, and the dev cluster's own directory (other Pods' volumes, the
CA key) is hidden.  So a container sees exactly the paths its manifest names
and nothing is rewritten; in-cluster credentials are the projected
service-account volume at its usual path.  Each Pod gets its own
loopback address 127.x.y.z as its Pod IP (in env as POD_IP via the downward
API, as usual), allocated and reported before any of its containers start.

Cluster DNS is served by the agent itself (clusterdns.py) on a loopback
address of its own, port 53, and each Pod's /etc/resolv.conf names it as a
kubelet's does under dnsPolicy ClusterFirst (bind-mounted in the Pod's mount
namespace): a process resolves `<service>.<ns>.svc`, a Pod's
`<hostname>.<subdomain>` and the like through the system resolver, wherever it
read the name (env, args, a config file) and in any namespace.  No kube-proxy
turns a Service's cluster IP into a Pod here, so its name answers with the Pods
themselves.  Beside it, every dotted name in a container's env values and args
that cluster DNS would answer from the Pod's namespace is replaced by the IP it
would return, and the replacement waits for a peer that has no IP yet (the Pods
of an Indexed Job start together; a lookup would find nothing).  That is
`<hostname>.<subdomain>`, `….<ns>`, `….<ns>.svc` and `….svc.cluster.local` for
a Pod with spec.subdomain naming an existing Service (hostname defaults to the
Pod's name; the Indexed Job controller sets `<job>-<index>`), and
`<service>.<ns>[.svc[.cluster.local]]` for a headless Service (its first
ready, or publishNotReadyAddresses, Pod IP).  A peer Pod that has no IP yet is
waited for (up to DNS_WAIT_SECONDS), so `torchrun --master_addr=<job>-0.<job>`
reaches rank 0's own address.  Processes bind as they like; torch's TCPStore
listens on every address, so on one machine only one multi-node training at a
time can use a given rendezvous port (29500 for FineTuneJobs).  `python` and
`torchrun` as a command mean the project's Python.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import http.server
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from . import clusterdns, controlplane

log = logging.getLogger("nodeagent")

DEFAULT_NODES = [
    {
        "name": f"gpu-node-{i}",
        "cpu": "64",
        "memory": "512Gi",
        "gpus": 8,
        "pods": 1100,
        "labels": {
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.count": "8",
            "node.kubernetes.io/instance-type": "devcluster.gpu-8x",
        },
        "taints": [],
    }
    for i in range(2)
]

PROVISIONER = "devcluster.finetune.ai/local-path"
PODMOUNTS = Path(__file__).with_name("podmounts.py")
# The API server's client certificate's name (certs.APISERVER_KUBELET_CLIENT_CN): the one client
# the kubelet API serves.
APISERVER_KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
TERMINATION_MESSAGE_LIMIT = 4096
STATUS_RETRY_SECONDS = 120


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# --------------------------------------------------------------------------- images


@dataclass
class ImageEntry:
    """How one image runs here: its ENTRYPOINT, working dir and extra env."""

    entrypoint: list[str] = field(default_factory=list)
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)


class ImageMap:
    """Image name (without tag or digest, or exact with tag) -> ImageEntry."""

    def __init__(self, entries: dict[str, ImageEntry]):
        self.entries = entries

    @classmethod
    def load(cls, path: Path | None) -> "ImageMap":
        if path is None or not Path(path).exists():
            return cls({})
        raw = yaml.safe_load(Path(path).read_text()) or {}
        entries = {}
        for name, spec in (raw.get("images") or {}).items():
            spec = spec or {}
            entries[name] = ImageEntry(
                entrypoint=list(spec.get("entrypoint") or []),
                workdir=spec.get("workdir"),
                env={k: str(v) for k, v in (spec.get("env") or {}).items()},
            )
        return cls(entries)

    def lookup(self, image: str) -> ImageEntry | None:
        if image in self.entries:
            return self.entries[image]
        name = image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
        return self.entries.get(name)


# --------------------------------------------------------------------------- helpers


def quantity_to_float(value: str) -> float:
    suffixes = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
        "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3,
    }
    value = str(value)
    for suffix, factor in suffixes.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


MAX_IP_ATTEMPTS = 1000
# An address no Pod gets: a port bound there is bound on every address (a wildcard listener,
# such as torch's TCPStore), and no choice of Pod address gets away from it.
UNUSED_IP = "127.255.255.254"
# Commands that mean the project's Python (and its console scripts) rather than a PATH lookup.
LAUNCHERS = {
    "python": [sys.executable],
    "python3": [sys.executable],
    "torchrun": [sys.executable, "-m", "torch.distributed.run"],
}


def container_ports(pod: dict) -> list[int]:
    return [p["containerPort"] for c in pod["spec"].get("containers") or [] for p in c.get("ports") or []
            if p.get("containerPort")]


def cpu_threads(container: dict) -> int | None:
    """Threads a container's CPU limit allows (at least one), None without a limit."""
    limit = str(((container.get("resources") or {}).get("limits") or {}).get("cpu") or "")
    if not limit:
        return None
    try:
        cores = quantity_to_float(limit)
    except ValueError:
        return None
    return max(1, math.ceil(cores))


def _port_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def field_ref(pod: dict, path: str, pod_ip: str) -> str:
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "["):
            key = path[len(prefix) + 2 : -2]
            return str((meta.get(source) or {}).get(key, ""))
    raise ValueError(f"unsupported fieldRef {path}")


def resource_ref(container: dict, ref: dict) -> str:
    kind, name = ref["resource"].split(".", 1)
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None:
        return "0"
    divisor = quantity_to_float(ref.get("divisor", "1"))
    amount = quantity_to_float(value) / divisor
    return str(int(amount) if amount == int(amount) else amount)


class PodSetupError(Exception):
    """A Pod cannot start here; reason is a kubelet-style waiting reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


# --------------------------------------------------------------------------- cluster DNS stand-in

DNS_WAIT_SECONDS = 60.0
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
# A dotted name standing on its own (not the tail of a longer word or name).
_DNS_NAME = re.compile(rf"(?<![\w.-]){_DNS_LABEL}(?:\.{_DNS_LABEL})+(?![\w-])")


@dataclass(frozen=True)
class DnsTarget:
    """What a cluster DNS name points at: the Pod `hostname` behind headless Service `service`
    (its spec.hostname and spec.subdomain), or, with no hostname, the Service itself."""

    service: str
    hostname: str | None = None


def dns_targets(name: str, namespace: str) -> list[DnsTarget]:
    """What cluster DNS would try for `name`, asked from a Pod in `namespace`, in its order.

    `….svc` and `….svc.cluster.local` are qualified: `<svc>.<ns>` or `<host>.<sub>.<ns>`.
    Other names go through the Pod's search path (`<ns>.svc.cluster.local svc.cluster.local`):
    `<host>.<sub>` is a Pod of this namespace, then `<svc>.<ns>` and `<host>.<sub>.<ns>`.
    Names in other namespaces are not answered.
    """
    for suffix in (".svc.cluster.local", ".svc"):
        if name.endswith(suffix):
            labels, qualified = name[: -len(suffix)].split("."), True
            break
    else:
        labels, qualified = name.split("."), False
    targets = []
    if len(labels) == 2 and not qualified:
        targets.append(DnsTarget(service=labels[1], hostname=labels[0]))
    if labels[-1] == namespace and len(labels) == 2:
        targets.append(DnsTarget(service=labels[0]))
    if labels[-1] == namespace and len(labels) == 3:
        targets.append(DnsTarget(service=labels[1], hostname=labels[0]))
    return targets


def replace_dns_names(value: str, namespace: str, address) -> str:
    """Every cluster DNS name in `value` replaced by the first address `address(target)` has
    for one of its targets; names nothing answers stay as they are."""

    def one(match: re.Match) -> str:
        for target in dns_targets(match.group(0), namespace):
            ip = address(target)
            if ip:
                return ip
        return match.group(0)

    return _DNS_NAME.sub(one, value)


def pod_address(pods: list[dict], target: DnsTarget) -> str | None:
    """The IP of the live Pod whose hostname (default: its name) and subdomain `target` names."""
    return clusterdns.pod_ip(pods, target.hostname or "", target.service)


def service_addresses(service: dict, pods: list[dict]) -> list[str]:
    """What a headless Service's name stands for in env and args: its selected Pod IPs (Ready
    ones, unless publishNotReadyAddresses).  A cluster IP is left to cluster DNS (clusterdns.py),
    which answers with the same Pods."""
    if (service.get("spec") or {}).get("clusterIP") != "None":
        return []
    return clusterdns.endpoint_ips(service, pods)


# --------------------------------------------------------------------------- container logs


def _cri_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class ContainerRun:
    """One run of a container: its output, line by line, in the CRI log format a kubelet keeps
    (`<RFC3339Nano> stdout F <line>`, one file per restart: logs/<container>/<restart>.log), so
    `kubectl logs` gets --previous, --since and --timestamps; the plain log file gets the same
    lines as before."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        self.finished = threading.Event()

    def copy(self, pipe, plain_path: Path) -> None:
        with pipe, open(plain_path, "ab") as plain, open(self.path, "ab") as cri:
            for line in iter(pipe.readline, b""):
                plain.write(line)
                plain.flush()
                tag = b"F" if line.endswith(b"\n") else b"P"
                cri.write(f"{_cri_time(now_micro())} stdout ".encode() + tag + b" " + line.rstrip(b"\n") + b"\n")
                cri.flush()


def parse_cri_line(raw: bytes) -> tuple[datetime.datetime, bytes]:
    """(time, the line as the process wrote it) of one CRI log line."""
    parts = raw.rstrip(b"\n").split(b" ", 3)
    stamp, tag, text = parts[0], parts[2] if len(parts) > 2 else b"F", parts[3] if len(parts) > 3 else b""
    moment = datetime.datetime.strptime(stamp.decode()[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
    return moment, text + (b"\n" if tag == b"F" else b"")


def select_log_lines(lines: list[bytes], *, tail: int | None, since: datetime.datetime | None,
                     timestamps: bool) -> list[bytes]:
    """What `kubectl logs --tail/--since/--timestamps` shows of a run's CRI lines."""
    out = []
    for raw in lines:
        if not raw.strip():
            continue
        moment, text = parse_cri_line(raw)
        if since is not None and moment < since:
            continue
        out.append((raw.split(b" ", 1)[0] + b" " if timestamps else b"") + text)
    if tail is not None:
        out = out[-tail:] if tail > 0 else []
    return out


# --------------------------------------------------------------------------- pods


class PodRunner(threading.Thread):
    """Runs one Pod to completion (or until deleted) and reports its status."""

    def __init__(self, agent: "NodeAgent", pod: dict):
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.agent = agent
        self.pod = pod
        self.ns = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.dir = agent.node_dir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.pod_ip = agent.allocate_ip(container_ports(pod))
        self.deleting = threading.Event()
        self.grace = 30.0
        self.procs: dict[str, subprocess.Popen] = {}
        self.runs: dict[str, ContainerRun] = {}  # container name -> its latest run's log
        self.container_env: dict[str, dict[str, str]] = {}  # for kubectl exec (and __workdir__)
        self.lock = threading.Lock()
        self.statuses: dict[str, dict] = {}
        self.init_statuses: dict[str, dict] = {}
        self.start_time = now_iso()
        self.mounts: dict[str, str] = {}  # volume name -> local dir
        self.resolv_conf: Path | None = None  # the Pod's /etc/resolv.conf (None: the node's own)

    # ---- volumes

    def _volume_dirs(self) -> None:
        vols = self.dir / "volumes"
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            target = vols / name
            target.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in vol:
                pass
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                target = self.agent.node_dir.parent / "pvcs" / self.ns / claim
                target.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in vol:
                target = Path(vol["hostPath"]["path"])
                kind = vol["hostPath"].get("type") or ""
                if kind == "FileOrCreate" and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch()
                elif kind in ("", "DirectoryOrCreate") and not target.exists():
                    target.mkdir(parents=True)  # as the container runtime does for a missing path
                elif (kind == "Directory" and not target.is_dir()) or (kind == "File" and not target.is_file()):
                    raise PodSetupError(
                        "CreateContainerConfigError",
                        f"volume {name}: hostPath type check failed: {target} is not a {kind.lower()}",
                    )
            elif "configMap" in vol:
                self._write_config_map(vol["configMap"], target)
            elif "secret" in vol:
                self._write_secret(vol["secret"], target)
            elif "downwardAPI" in vol:
                self._write_downward(vol["downwardAPI"].get("items") or [], target)
            elif "projected" in vol:
                for source in vol["projected"].get("sources") or []:
                    if "serviceAccountToken" in source:
                        sat = source["serviceAccountToken"]
                        token = self._token(sat.get("expirationSeconds", 3600), sat.get("audience"))
                        (target / sat["path"]).write_text(token)
                    if "configMap" in source:
                        self._write_config_map(source["configMap"], target)
                    if "secret" in source:
                        self._write_secret(source["secret"], target)
                    if "downwardAPI" in source:
                        self._write_downward(source["downwardAPI"].get("items") or [], target)
            else:
                raise PodSetupError("CreateContainerConfigError", f"volume {name}: unsupported volume type")
            self.mounts[name] = str(target)

    def _items(self, data: dict[str, bytes], items, target: Path) -> None:
        chosen = items or [{"key": k, "path": k} for k in data]
        for item in chosen:
            if item["key"] not in data:
                continue
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[item["key"]])

    def _write_config_map(self, ref: dict, target: Path) -> None:
        try:
            cm = self.agent.core.read_namespaced_config_map(ref["name"], self.ns)
        except ApiException as e:
            if e.status == 404 and ref.get("optional"):
                return
            raise PodSetupError("CreateContainerConfigError", f'configmap "{ref["name"]}" not found')
        data = {k: v.encode() for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        self._items(data, ref.get("items"), target)

    def _write_secret(self, ref: dict, target: Path) -> None:
        name = ref.get("secretName") or ref.get("name")
        try:
            secret = self.agent.core.read_namespaced_secret(name, self.ns)
        except ApiException:
            if ref.get("optional"):
                return
            raise PodSetupError("CreateContainerConfigError", f'secret "{name}" not found')
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        self._items(data, ref.get("items"), target)

    def _write_downward(self, items, target: Path) -> None:
        for item in items:
            if "fieldRef" in item:
                (target / item["path"]).write_text(field_ref(self.pod, item["fieldRef"]["fieldPath"], self.pod_ip))

    def _token(self, expiration: int, audience: str | None) -> str:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[audience] if audience else [],
                expiration_seconds=max(int(expiration), 600),
                bound_object_ref=client.V1BoundObjectReference(
                    kind="Pod", api_version="v1", name=self.name, uid=self.uid
                ),
            )
        )
        result = self.agent.core.create_namespaced_service_account_token(sa, self.ns, body)
        return result.status.token

    def _in_cluster(self) -> dict[str, str]:
        """Where the API server is, as a kubelet tells every container (KUBERNETES_SERVICE_*):
        here its loopback address, since a ClusterIP routes nowhere without kube-proxy.  The
        credentials are the ServiceAccount admission plugin's projected volume, mounted at
        /var/run/secrets/kubernetes.io/serviceaccount like any other volume."""
        return {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.agent.port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.agent.port),
        }

    # ---- containers

    def _env(self, container: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        core = self.agent.core
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                try:
                    data = core.read_namespaced_config_map(ref["name"], self.ns).data or {}
                except ApiException:
                    if ref.get("optional"):
                        continue
                    raise PodSetupError("CreateContainerConfigError", f'configmap "{ref["name"]}" not found')
                env.update({prefix + k: v for k, v in data.items()})
            if "secretRef" in source:
                ref = source["secretRef"]
                try:
                    data = core.read_namespaced_secret(ref["name"], self.ns).data or {}
                except ApiException:
                    if ref.get("optional"):
                        continue
                    raise PodSetupError("CreateContainerConfigError", f'secret "{ref["name"]}" not found')
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in data.items()})
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = _expand(item.get("value") or "", env)
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                env[name] = field_ref(self.pod, source["fieldRef"]["fieldPath"], self.pod_ip)
            elif "resourceFieldRef" in source:
                env[name] = resource_ref(container, source["resourceFieldRef"])
            elif "secretKeyRef" in source or "configMapKeyRef" in source:
                is_secret = "secretKeyRef" in source
                ref = source["secretKeyRef" if is_secret else "configMapKeyRef"]
                kind = "secret" if is_secret else "configmap"
                try:
                    obj = (core.read_namespaced_secret if is_secret else core.read_namespaced_config_map)(ref["name"], self.ns)
                except ApiException:
                    if ref.get("optional"):
                        continue
                    raise PodSetupError("CreateContainerConfigError", f'{kind} "{ref["name"]}" not found')
                data = obj.data or {}
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise PodSetupError("CreateContainerConfigError", f'couldn\'t find key {ref["key"]} in {kind} {self.ns}/{ref["name"]}')
                value = data[ref["key"]]
                env[name] = base64.b64decode(value).decode() if is_secret else value
        return env

    def _dns(self):
        """A cluster DNS stand-in for one container start: DnsTarget -> IP, from this
        namespace's Services and Pods (each listed once, and only if some name needs them).

        A Pod name needs a Service named as its subdomain, as cluster DNS does; then it waits
        up to DNS_WAIT_SECONDS for that Pod's IP, since the Pods of an Indexed Job start together
        and the peer a Pod names may not have reached this agent yet.
        """
        listed: dict[str, list[dict]] = {}
        core = self.agent.core
        spec = self.pod["spec"]
        own = DnsTarget(service=spec.get("subdomain") or "", hostname=spec.get("hostname") or self.name)

        def items(kind: str) -> list[dict]:
            if kind not in listed:
                lister = core.list_namespaced_service if kind == "services" else core.list_namespaced_pod
                listed[kind] = json.loads(lister(self.ns, _preload_content=False).data)["items"]
            return listed[kind]

        def address(target: DnsTarget) -> str | None:
            service = next((s for s in items("services") if s["metadata"]["name"] == target.service), None)
            if service is None:
                return None
            if target.hostname is None:
                return next(iter(service_addresses(service, items("pods"))), None)
            if target == own:
                return self.pod_ip
            deadline = time.monotonic() + DNS_WAIT_SECONDS
            while (ip := pod_address(items("pods"), target)) is None and time.monotonic() < deadline:
                if self.deleting.wait(0.5):
                    break
                listed.pop("pods")
            return ip

        return address

    def _private_dir(self, name: str, mode: int) -> Path:
        path = self.dir / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return path

    def _resolv_conf(self) -> Path | None:
        """The Pod's /etc/resolv.conf as a kubelet writes it for its dnsPolicy: ClusterFirst (the
        default; ClusterFirstWithHostNet too) names cluster DNS, None takes spec.dnsConfig alone,
        Default (and ClusterFirst with hostNetwork) keeps the node's own file (None returned)."""
        spec = self.pod["spec"]
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        dns_config = spec.get("dnsConfig") or {}
        if policy == "None":
            text = clusterdns.resolv_conf_from(dns_config)
        elif policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not spec.get("hostNetwork")):
            if self.agent.dns is None:
                return None
            text = clusterdns.resolv_conf(self.agent.dns.ip, self.ns, dns_config)
        else:
            return None
        path = self.dir / "resolv.conf"
        path.write_text(text)
        return path

    def _mount_spec(self, container: dict, term_path: str, term_file: Path) -> list[dict]:
        """The container's volumeMounts (its termination message file and /etc/resolv.conf too)
        as bind mounts."""
        mounts = [{"source": str(term_file), "target": term_path}]
        if self.resolv_conf is not None and not any(
            os.path.normpath(m["mountPath"]) == "/etc/resolv.conf" for m in container.get("volumeMounts") or []
        ):
            mounts.append({"source": str(self.resolv_conf), "target": "/etc/resolv.conf", "readOnly": True, "late": True})
        for mount in container.get("volumeMounts") or []:
            local = self.mounts.get(mount["name"])
            if local is None:
                raise PodSetupError("CreateContainerConfigError", f'volumeMount "{mount["name"]}": no volume of that name')
            if mount.get("subPath"):
                local = str(Path(local) / mount["subPath"])
                if not Path(local).exists():
                    Path(local).mkdir(parents=True)  # as a kubelet does for a missing subPath
            mounts.append({"source": local, "target": mount["mountPath"], "readOnly": bool(mount.get("readOnly"))})
        return mounts

    def _run_container(self, container: dict, statuses: dict, restart_count: int) -> int | None:
        """Starts a container's process and waits; returns the exit code (None when deleted)."""
        cname = container["name"]
        entry = self.agent.images.lookup(container.get("image", ""))
        if entry is None:
            raise PodSetupError(
                "ErrImagePull",
                f'image "{container.get("image")}" is not in the node agent\'s image map',
            )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # The Pod's private /tmp: the host's home directory is not the container's.
            "HOME": "/tmp",
            "HOSTNAME": self.pod["spec"].get("hostname") or self.name,
            "POD_IP": self.pod_ip,
            "PYTHONUNBUFFERED": "1",
        }
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
            if var in os.environ:
                env[var] = os.environ[var]
        env.update(entry.env)
        env.update(self.in_cluster_env)
        threads = cpu_threads(container)
        if threads:
            # What a CPU limit means to a process: as many busy threads as it has cores.
            env["OMP_NUM_THREADS"] = str(threads)
        term_path = container.get("terminationMessagePath") or "/dev/termination-log"
        term_file = self.dir / "termination" / cname
        term_file.parent.mkdir(parents=True, exist_ok=True)
        term_file.write_text("")
        # The process runs in its own mount namespace (podmounts.py): every path in its env and
        # args means what it says, so only cluster DNS names are resolved here.
        dns = self._dns()
        for key, value in self._env(container).items():
            env[key] = replace_dns_names(value, self.ns, dns)
        command = container.get("command") or entry.entrypoint
        args = container.get("args") or ([] if container.get("command") else [])
        argv = [_expand(a, env) for a in list(command) + list(args)]
        argv = [replace_dns_names(a, self.ns, dns) for a in argv]
        if not argv:
            raise PodSetupError("CreateContainerError", f"container {cname}: no command and the image map has no entrypoint")
        argv = LAUNCHERS.get(argv[0], argv[:1]) + argv[1:]
        if "/" not in argv[0] and shutil.which(argv[0], path=env["PATH"]) is None:
            raise PodSetupError("StartError", f'container {cname}: exec: "{argv[0]}": executable file not found in $PATH')
        view = {
            "argv": argv,
            "env": env,
            "workdir": container.get("workingDir") or entry.workdir or "/",
            "tmp": str(self._private_dir("tmp", 0o1777)),
            "overlays": tempfile.mkdtemp(prefix=f"{cname}-", dir=self._private_dir("overlays", 0o700)),
            "hide": [str(self.agent.cluster_dir)],
            "image": self.agent.image_paths + [p for p in (entry.workdir,) if p],
            "mounts": self._mount_spec(container, term_path, term_file),
        }
        # Read once and removed by podmounts.py: the env may hold Secret values.
        fd, view_file = tempfile.mkstemp(prefix=f"{cname}-", suffix=".json", dir=self._private_dir("views", 0o700))
        with os.fdopen(fd, "w") as f:
            json.dump(view, f)
        launcher = [sys.executable, "-S", str(PODMOUNTS), str(view_file)]
        log_path = self.dir / "logs" / f"{cname}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = now_iso()
        with open(log_path, "ab") as out:
            out.write(f"# {started} {shlex.join(argv)}\n".encode())
        try:
            proc = subprocess.Popen(
                launcher, env={"PATH": env["PATH"]}, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as e:
            raise PodSetupError("StartError", f"container {cname}: {argv[0]}: {e.strerror}")
        run = ContainerRun(self.dir / "logs" / cname / f"{restart_count}.log")
        copier = threading.Thread(target=run.copy, args=(proc.stdout, log_path), daemon=True)
        copier.start()
        with self.lock:
            self.procs[cname] = proc
            self.runs[cname] = run
            self.container_env[cname] = {**env, "__workdir__": view["workdir"]}
        statuses[cname] = self._container_status(container, restart_count, running={"startedAt": started})
        # As a kubelet does: the running container's id, here its process (chaos tests signal it).
        statuses[cname]["containerID"] = f"devcluster://{proc.pid}"
        self.report()
        code = proc.wait()
        # A background child holding the output open must not hold the container's end.
        copier.join(timeout=5)
        run.finished.set()
        with self.lock:
            self.procs.pop(cname, None)
        message = term_file.read_text(errors="replace")[-TERMINATION_MESSAGE_LIMIT:] if term_file.exists() else ""
        if not message and container.get("terminationMessagePolicy") == "FallbackToLogsOnError" and code != 0:
            message = "\n".join(log_path.read_text(errors="replace").splitlines()[-80:])[-2048:]
        exit_code = code if code >= 0 else 128 - code
        reason = "Completed" if exit_code == 0 else "Error"
        if code == -signal.SIGKILL and not self.deleting.is_set():
            # Only the kernel's OOM killer SIGKILLs a process we did not stop ourselves.
            reason = "OOMKilled"
        statuses[cname] = self._container_status(
            container,
            restart_count,
            terminated={
                "exitCode": exit_code,
                "reason": reason,
                "message": message or None,
                "startedAt": started,
                "finishedAt": now_iso(),
                "containerID": f"devcluster://{proc.pid}",
            },
        )
        if message is None or message == "":
            statuses[cname]["state"]["terminated"].pop("message", None)
        return None if self.deleting.is_set() and code != 0 else exit_code

    def _container_status(self, container, restarts, running=None, terminated=None, waiting=None) -> dict:
        state = {}
        if running:
            state["running"] = running
        if terminated:
            state["terminated"] = terminated
        if waiting:
            state["waiting"] = waiting
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": f"devcluster://{container.get('image', '')}",
            "ready": bool(running) and self._probe_ready(container),
            "started": bool(running),
            "restartCount": restarts,
            "state": state,
            **({"containerID": terminated["containerID"]} if terminated else {}),
        }

    def _probe_ready(self, container: dict) -> bool:
        probe = container.get("readinessProbe")
        if not probe or not ("httpGet" in probe or "tcpSocket" in probe):
            return True
        action = probe.get("httpGet") or probe["tcpSocket"]
        port = action.get("port")
        if isinstance(port, str):
            port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port), None)
        if "tcpSocket" in probe:
            try:
                with socket.create_connection((self.pod_ip, port), timeout=2):
                    return True
            except (OSError, TypeError):
                return False
        try:
            url = f"http://{self.pod_ip}:{port}{action.get('path', '/')}"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return 200 <= resp.status < 400
        except Exception:
            return False

    # ---- status

    def phase_and_conditions(self) -> tuple[str, list[dict]]:
        containers = self.pod["spec"]["containers"]
        states = [self.statuses.get(c["name"], {}).get("state", {}) for c in containers]
        policy = self.pod["spec"].get("restartPolicy", "Always")
        terminated = [s.get("terminated") for s in states]
        init_failed = any(
            s.get("state", {}).get("terminated", {}).get("exitCode", 0) != 0
            for s in self.init_statuses.values()
            if "terminated" in s.get("state", {})
        ) and policy == "Never"
        if init_failed:
            phase = "Failed"
        elif all(terminated) and policy != "Always":
            if all(t["exitCode"] == 0 for t in terminated):
                phase = "Succeeded"
            elif policy == "Never":
                phase = "Failed"
            else:
                phase = "Running"
        elif any("running" in s for s in states) or any(terminated):
            phase = "Running"
        else:
            phase = "Pending"
        ready = phase == "Running" and all(self.statuses.get(c["name"], {}).get("ready") for c in containers)
        t = now_iso()
        initialized = all("terminated" in s.get("state", {}) for s in self.init_statuses.values()) if self.init_statuses else True
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True" if initialized else "False", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": t},
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": t},
        ]
        return phase, conditions

    def report(self, reason: str | None = None, message: str | None = None) -> None:
        phase, conditions = self.phase_and_conditions()
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": [
                self.statuses.get(c["name"]) or self._container_status(c, 0, waiting={"reason": "ContainerCreating"})
                for c in self.pod["spec"]["containers"]
            ],
        }
        if self.init_statuses:
            status["initContainerStatuses"] = list(self.init_statuses.values())
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        if self.agent.stopping.is_set():
            return  # a node going away reports nothing more; its successor finds the Pods lost
        # As a kubelet does, keep a status until the API server takes it: a final status lost to
        # an API server restart would leave the Pod Running forever.
        deadline = time.monotonic() + STATUS_RETRY_SECONDS
        while True:
            try:
                self.agent.core.patch_namespaced_pod_status(self.name, self.ns, {"status": status})
                return
            except ApiException as e:
                retry = e.status in (429, 500, 502, 503, 504)
                if not retry or time.monotonic() > deadline or self.agent.stopping.is_set():
                    if e.status != 404:
                        log.warning("pod %s/%s: status patch failed: %s %s", self.ns, self.name, e.reason, e.body)
                    return
            except (urllib3.exceptions.HTTPError, OSError) as e:
                if time.monotonic() > deadline or self.agent.stopping.is_set():
                    log.warning("pod %s/%s: status patch failed: %s", self.ns, self.name, e)
                    return
            time.sleep(0.5)

    # ---- lifecycle

    def run(self) -> None:
        try:
            self._run()
        except PodSetupError as e:
            log.info("pod %s/%s: %s: %s", self.ns, self.name, e.reason, e.message)
            for c in self.pod["spec"]["containers"]:
                self.statuses[c["name"]] = self._container_status(c, 0, waiting={"reason": e.reason, "message": e.message})
            self.report()
            self.deleting.wait()
        except Exception:
            log.exception("pod %s/%s: node agent error", self.ns, self.name)
        finally:
            if self.deleting.is_set():
                self.agent.finish_delete(self)
            self.agent.forget(self)

    def _retrying(self, step, what: str, timeout: float = 120.0):
        """`step()`, retried while the API server is away (restarted, overloaded), as a kubelet
        retries a Pod's volume setup; any other error, or one that lasts, goes to the caller."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return step()
            except ApiException as e:
                if e.status not in (429, 500, 502, 503, 504):
                    raise
                problem: object = f"{e.status} {e.reason}"
            except (urllib3.exceptions.HTTPError, ConnectionError) as e:
                problem = e
            if time.monotonic() > deadline or self.deleting.is_set() or self.agent.stopping.is_set():
                raise RuntimeError(f"{what}: the API server did not answer for {timeout:.0f}s ({problem})")
            log.warning("pod %s/%s: %s: %s; retrying", self.ns, self.name, what, problem)
            time.sleep(1)

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.report()
        self._retrying(self._volume_dirs, "volume setup")
        self.resolv_conf = self._resolv_conf()
        self.in_cluster_env = self._retrying(self._in_cluster, "in-cluster environment")
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for container in self.pod["spec"].get("initContainers") or []:
            while True:
                code = self._run_container(container, self.init_statuses, 0)
                if self.deleting.is_set() or code is None:
                    return
                self.report()
                if code == 0:
                    break
                if policy == "Never":
                    return
                time.sleep(1)
        threads = [
            threading.Thread(target=self._container_loop, args=(c, policy), daemon=True)
            for c in self.pod["spec"]["containers"]
        ]
        for t in threads:
            t.start()
        readiness = threading.Thread(target=self._readiness_loop, daemon=True)
        readiness.start()
        for t in threads:
            t.join()

    def _container_loop(self, container: dict, policy: str) -> None:
        restarts = 0
        while not self.deleting.is_set():
            try:
                code = self._run_container(container, self.statuses, restarts)
            except PodSetupError as e:
                log.info("pod %s/%s: %s: %s", self.ns, self.name, e.reason, e.message)
                self.statuses[container["name"]] = self._container_status(
                    container, restarts, waiting={"reason": e.reason, "message": e.message}
                )
                self.report()
                self.deleting.wait()
                return
            self.report()
            if self.deleting.is_set() or code is None:
                return
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                return
            restarts += 1
            backoff = min(10 * 2 ** (restarts - 1), 60) if restarts > 1 else 1
            if self.deleting.wait(backoff):
                return

    def _readiness_loop(self) -> None:
        """Re-reports while a readiness probe has not passed yet, then stops."""
        probed = [c for c in self.pod["spec"]["containers"] if c.get("readinessProbe")]
        if not probed:
            return
        last = None
        while not self.deleting.is_set() and any(c["name"] in self.procs or c["name"] not in self.statuses for c in probed):
            ready = tuple(self._probe_ready(c) for c in probed if c["name"] in self.procs)
            if ready != last:
                for c in probed:
                    status = self.statuses.get(c["name"])
                    if status and "running" in status["state"]:
                        status["ready"] = self._probe_ready(c)
                self.report()
                last = ready
            period = (probed[0]["readinessProbe"].get("periodSeconds") or 10)
            self.deleting.wait(min(period, 2))

    def terminate(self, grace: float) -> None:
        """SIGTERM now, SIGKILL after the grace period (in the background)."""
        if self.deleting.is_set():
            return
        self.grace = grace
        self.deleting.set()
        if not self.is_alive():
            # Finished earlier (or never started): only the Pod object is left.
            self.agent.finish_delete(self)
            self.agent.forget(self)
            return
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)

        def killer():
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                with self.lock:
                    if not any(p.poll() is None for p in self.procs.values()):
                        return
                time.sleep(0.1)
            with self.lock:
                for proc in self.procs.values():
                    _signal_group(proc, signal.SIGKILL)

        threading.Thread(target=killer, daemon=True).start()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion; $$(VAR) escapes."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$(", i):
            out.append("$(")
            i += 3
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            name = value[i + 2 : end]
            out.append(env.get(name, value[i : end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


# --------------------------------------------------------------------------- kubelet API


class KubeletAPI(http.server.ThreadingHTTPServer):
    """The part of the kubelet API that `kubectl logs` uses, over TLS (a serving certificate
    from the cluster CA), for one client only: the API server, by its client certificate.

    GET /containerLogs/<ns>/<pod>/<container>?follow&previous&tailLines&sinceSeconds&sinceTime
    &timestamps&limitBytes, as a kubelet answers it: the current (or previous) run's lines,
    and with follow the lines as they come until that run ends.  Exec, attach and port-forward
    are refused with 501: the agent does not speak their streaming protocol.
    """

    daemon_threads = True

    def __init__(self, agent: "NodeAgent", pki_dir: Path):
        super().__init__(("127.0.0.1", 0), _KubeletHandler)
        self.agent = agent
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki_dir / "kubelet.crt", pki_dir / "kubelet.key")
        context.load_verify_locations(pki_dir / "ca.crt")
        context.verify_mode = ssl.CERT_REQUIRED
        self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return self.server_address[1]


class _KubeletHandler(http.server.BaseHTTPRequestHandler):
    server: KubeletAPI

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.debug("kubelet API: " + format, *args)

    def _client_allowed(self) -> bool:
        cert = self.connection.getpeercert() or {}
        names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
        return names == [APISERVER_KUBELET_CLIENT_CN]

    def _error(self, code: int, message: str) -> None:
        body = (message + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's name
        if not self._client_allowed():
            return self._error(403, "Forbidden: only the API server may call this kubelet API")
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if parts[0] == "exec" and len(parts) == 4:
            return self._exec(*parts[1:], urllib.parse.parse_qs(url.query))
        if parts[0] in ("exec", "attach", "portForward", "run"):
            return self._error(501, f"{parts[0]} is not supported by the dev cluster's node agent")
        if parts[0] != "containerLogs" or len(parts) != 4:
            return self._error(404, f"no such kubelet API path: {url.path}")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            self._logs(*parts[1:], query)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client went away (kubectl logs -f interrupted)

    do_POST = do_GET

    def _exec(self, namespace: str, pod: str, container: str, query: dict[str, list[str]]) -> None:
        """`kubectl exec`: the command runs in the container's mount namespace with its env, over
        the v5.channel.k8s.io WebSocket protocol (the API server proxies it through, since the
        Node declares ExtendWebSocketsToKubelet).  No TTY: a terminal request gets pipes."""
        protocols = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if self.headers.get("Upgrade", "").lower() != "websocket" or EXEC_PROTOCOL not in protocols:
            return self._error(400, f"exec needs a WebSocket upgrade with the {EXEC_PROTOCOL} protocol")
        command = query.get("command") or []
        runner = self.server.agent.find_runner(namespace, pod)
        with (runner.lock if runner else threading.Lock()):
            proc = runner.procs.get(container) if runner else None
            env = dict(runner.container_env.get(container) or {}) if runner else {}
        if proc is None or proc.poll() is not None:
            return self._error(400, f'container "{container}" in pod "{pod}" is not running')
        if not command:
            return self._error(400, "exec: no command")
        argv = LAUNCHERS.get(command[0], command[:1]) + command[1:]
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", EXEC_PROTOCOL)
        self.end_headers()
        self.wfile.flush()
        ws = _WebSocket(self.rfile, self.wfile)
        # The API server names the streams as a kubelet expects: input/output/error/tty.
        stdin = (query.get("input") or query.get("stdin") or ["false"])[-1] in ("true", "1")
        try:
            child = subprocess.Popen(
                ["nsenter", "-t", str(proc.pid), "-m", f"--wd={env.pop('__workdir__', '/')}", "--", *argv],
                env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as e:
            ws.send(3, json.dumps({"metadata": {}, "status": "Failure", "message": str(e)}).encode())
            return ws.close()

        def pump(pipe, channel):
            for chunk in iter(lambda: pipe.read1(65536), b""):
                ws.send(channel, chunk)

        pumps = [threading.Thread(target=pump, args=(child.stdout, 1), daemon=True),
                 threading.Thread(target=pump, args=(child.stderr, 2), daemon=True)]
        for t in pumps:
            t.start()
        if stdin:
            threading.Thread(target=ws.feed_stdin, args=(child.stdin,), daemon=True).start()
        code = child.wait()
        for t in pumps:
            t.join(timeout=5)
        if code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {
                "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        ws.send(3, json.dumps(status).encode())
        ws.close()

    def _logs(self, namespace: str, pod: str, container: str, query: dict[str, str]) -> None:
        runner = self.server.agent.find_runner(namespace, pod)
        if runner is None:
            return self._error(404, f'pod "{pod}" in namespace "{namespace}" is not on this node')
        run_dir = runner.dir / "logs" / container
        runs = sorted(int(p.stem) for p in run_dir.glob("*.log")) if run_dir.is_dir() else []
        if not runs:
            return self._error(400, f'container "{container}" in pod "{pod}" is waiting to start')
        previous = query.get("previous") == "true"
        if previous and len(runs) < 2:
            return self._error(400, f'previous terminated container "{container}" in pod "{pod}" not found')
        number = runs[-2] if previous else runs[-1]
        path = run_dir / f"{number}.log"
        since = None
        if query.get("sinceSeconds"):
            since = now_micro() - datetime.timedelta(seconds=int(query["sinceSeconds"]))
        elif query.get("sinceTime"):
            since = datetime.datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00"))
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        timestamps = query.get("timestamps") == "true"
        limit = int(query["limitBytes"]) if query.get("limitBytes") else None
        with runner.lock:
            run = runner.runs.get(container)
        follow = query.get("follow") == "true" and not previous and run is not None and run.path == path
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        sent = 0
        with open(path, "rb") as f:
            lines = f.readlines()
            complete = [line for line in lines if line.endswith(b"\n")]
            f.seek(sum(len(line) for line in complete))
            for text in select_log_lines(complete, tail=tail, since=since, timestamps=timestamps):
                if limit is not None and sent + len(text) > limit:
                    return self.wfile.write(text[: limit - sent])
                self.wfile.write(text)
                sent += len(text)
            self.wfile.flush()
            while follow:
                done = run.finished.is_set()
                line = f.readline()
                if line.endswith(b"\n"):
                    for text in select_log_lines([line], tail=None, since=since, timestamps=timestamps):
                        self.wfile.write(text)
                        self.wfile.flush()
                    continue
                f.seek(-len(line), os.SEEK_CUR)
                if done or self.server.agent.stopping.is_set():
                    return
                time.sleep(0.2)


EXEC_PROTOCOL = "v5.channel.k8s.io"
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _WebSocket:
    """Just enough RFC 6455 for a kubelet's exec stream: binary messages whose first byte is the
    channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5: 255 closes a channel)."""

    def __init__(self, rfile, wfile):
        self.rfile, self.wfile = rfile, wfile
        self.lock = threading.Lock()

    def _frame(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            header = bytes([0x80 | opcode, size])
        elif size < 1 << 16:
            header = bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 127]) + size.to_bytes(8, "big")
        with self.lock:
            self.wfile.write(header + payload)
            self.wfile.flush()

    def send(self, channel: int, data: bytes) -> None:
        self._frame(0x2, bytes([channel]) + data)

    def close(self) -> None:
        try:
            self._frame(0x8, (1000).to_bytes(2, "big"))
        except OSError:
            pass

    def receive(self) -> tuple[int, bytes] | None:
        """The next message (opcode, payload); None when the peer closed."""
        message, opcode = b"", None
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return None
            fin, frame_opcode, size = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                size = int.from_bytes(self.rfile.read(2), "big")
            elif size == 127:
                size = int.from_bytes(self.rfile.read(8), "big")
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            if frame_opcode == 0x8:
                return None
            if frame_opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if frame_opcode in (0x1, 0x2):
                opcode = frame_opcode
            message += payload
            if fin and opcode is not None:
                return opcode, message

    def feed_stdin(self, stdin) -> None:
        try:
            while (message := self.receive()) is not None:
                data = message[1]
                if data[:1] == b"\x00":
                    stdin.write(data[1:])
                    stdin.flush()
                elif data[:2] == b"\xff\x00":
                    break
        except (OSError, ValueError):
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass


# --------------------------------------------------------------------------- agent


def image_paths() -> list[str]:
    """The host paths every container's "image" is made of: the Python environment that runs
    it, the project's code on PYTHONPATH, the Hugging Face home.  They are the host's and stay
    visible in each Pod even where the Pod's private /tmp or a hidden directory covers them
    (a cache root made with mktemp under /tmp)."""
    paths = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix),
             os.path.realpath(Path(__file__).resolve().parents[2])}
    for entry in (os.environ.get("PYTHONPATH") or "").split(os.pathsep):
        if entry:
            paths.add(os.path.realpath(entry))
    if os.environ.get("HF_HOME"):
        paths.add(os.path.realpath(os.environ["HF_HOME"]))
    # Only the outermost of nested paths: binding a parent brings its children along.
    kept = sorted(p for p in paths if p != "/")
    return [p for p in kept if not any(o != p and (p + "/").startswith(o.rstrip("/") + "/") for o in kept)]


class NodeAgent:
    def __init__(self, cluster_dir: Path, nodes: list[dict], images: ImageMap):
        self.cluster_dir = cluster_dir
        self.node_dir = cluster_dir / "node"
        self.node_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = nodes
        self.node_names = {n["name"] for n in nodes}
        self.images = images
        kubeconfig = cluster_dir / "kubeconfig"
        api = controlplane.api_client(kubeconfig, 128)  # a thread per running Pod reports its status
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.server = api.configuration.host
        self.port = int(self.server.rsplit(":", 1)[1])
        self.ca_file = cluster_dir / "pki" / "ca.crt"
        self.runners: dict[str, PodRunner] = {}
        self.lock = threading.Lock()
        # A random start: two dev clusters on one machine (a demo and a test run) rarely meet.
        self.next_ip = int.from_bytes(os.urandom(2), "big") << 4
        self.stopping = threading.Event()
        self.kubelet_api: KubeletAPI | None = None
        self.dns: clusterdns.DnsServer | None = None
        self.image_paths = image_paths()

    def serve_kubelet_api(self) -> None:
        """Starts the kubelet API (kubectl logs) before the Nodes say where it is."""
        pki = self.cluster_dir / "pki"
        if not (pki / "kubelet.crt").exists():
            log.warning("no kubelet serving certificate in %s: kubectl logs will not work", pki)
            return
        self.kubelet_api = KubeletAPI(self, pki)
        threading.Thread(target=self.kubelet_api.serve_forever, daemon=True, name="kubelet-api").start()

    def serve_cluster_dns(self) -> None:
        """Starts cluster DNS (clusterdns.py) on a loopback address of this cluster's own, port 53:
        every Pod's /etc/resolv.conf names it."""

        def read_service(namespace: str, name: str) -> dict | None:
            try:
                return json.loads(self.core.read_namespaced_service(name, namespace, _preload_content=False).data)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise

        def list_pods(namespace: str) -> list[dict]:
            return json.loads(self.core.list_namespaced_pod(namespace, _preload_content=False).data)["items"]

        resolver = clusterdns.Resolver(read_service, list_pods, api_server_ip=urllib.parse.urlsplit(self.server).hostname)
        for _ in range(MAX_IP_ATTEMPTS):
            ip = self.allocate_ip([clusterdns.PORT])
            try:
                self.dns = clusterdns.DnsServer(ip, resolver).start()
            except OSError as e:  # the address's UDP port is taken (another dev cluster's DNS)
                log.info("cluster DNS: %s:%d: %s; trying another address", ip, clusterdns.PORT, e)
                continue
            log.info("cluster DNS on %s:%d", ip, clusterdns.PORT)
            return
        raise RuntimeError(f"no loopback address with port {clusterdns.PORT} free for cluster DNS")

    def find_runner(self, namespace: str, name: str) -> "PodRunner | None":
        with self.lock:
            found = [r for r in self.runners.values() if (r.ns, r.name) == (namespace, name)]
        return found[-1] if found else None

    def allocate_ip(self, ports: list[int] = ()) -> str:
        """Each Pod its own loopback address in 127.1.0.1-127.254.255.255, routed on lo.

        An address where one of the Pod's ports is already bound (a Pod of another dev cluster
        on this machine) is skipped; a port taken on every address is not looked at.
        """
        ports = [port for port in ports if _port_free(UNUSED_IP, port)]
        for _ in range(MAX_IP_ATTEMPTS):
            with self.lock:
                self.next_ip += 1
                n = self.next_ip
            ip = f"127.{1 + (n >> 16) % 254}.{(n >> 8) & 255}.{n & 255 or 1}"
            if all(_port_free(ip, port) for port in ports):
                return ip
        raise RuntimeError(f"no free loopback address for ports {ports} after {MAX_IP_ATTEMPTS} tries")

    # ---- nodes

    def register(self) -> None:
        for spec in self.nodes:
            name = spec["name"]
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "devcluster.finetune.ai/agent": "process",
                **(spec.get("labels") or {}),
            }
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": labels},
                "spec": {"taints": spec.get("taints") or []},
            }
            try:
                self.core.create_node(body)
            except ApiException as e:
                if e.status != 409:
                    raise
                self.core.patch_node(name, {"metadata": {"labels": labels}})
            self.heartbeat(spec)

    def _node_status(self, spec: dict) -> dict:
        capacity = {
            "cpu": str(spec.get("cpu", "64")),
            "memory": str(spec.get("memory", "512Gi")),
            "pods": str(spec.get("pods", 1100)),
            "ephemeral-storage": "1Ti",
        }
        if spec.get("gpus"):
            capacity["nvidia.com/gpu"] = str(spec["gpus"])
        t = now_iso()
        conditions = [
            {"type": kind, "status": "False", "reason": f"KubeletHas{good}", "message": "devcluster node agent",
             "lastHeartbeatTime": t, "lastTransitionTime": t}
            for kind, good in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"), ("PIDPressure", "SufficientPID"))
        ] + [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "process node agent is posting ready status",
             "lastHeartbeatTime": t, "lastTransitionTime": t}
        ]
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": spec["name"]}],
            # The API server proxies exec's WebSocket straight here instead of translating it to SPDY.
            "declaredFeatures": ["ExtendWebSocketsToKubelet"],
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux", "osImage": "devcluster process node",
                "kernelVersion": os.uname().release, "containerRuntimeVersion": "devcluster://0.1",
                "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "bootID": "", "machineID": "", "systemUUID": spec["name"],
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_api.port if self.kubelet_api else 0}},
        }

    def heartbeat(self, spec: dict) -> None:
        name = spec["name"]
        self.core.patch_node_status(name, {"status": self._node_status(spec)})
        node = self.core.read_node(name)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": "kube-node-lease",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid}],
            },
            "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()},
        }
        try:
            self.coordination.patch_namespaced_lease(name, "kube-node-lease", {"spec": lease["spec"]})
        except ApiException as e:
            if e.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", lease)

    def heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            for spec in self.nodes:
                try:
                    self.heartbeat(spec)
                except Exception as e:  # the next beat retries
                    log.warning("heartbeat %s failed: %s", spec["name"], e)

    # ---- pods

    def handle(self, pod: dict) -> None:
        spec = pod.get("spec") or {}
        if spec.get("nodeName") not in self.node_names:
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            runner = self.runners.get(uid)
        if meta.get("deletionTimestamp"):
            grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            if runner:
                runner.terminate(grace)
            else:
                self._delete_now(meta["namespace"], meta["name"], uid)
            return
        phase = (pod.get("status") or {}).get("phase")
        if runner or phase in ("Succeeded", "Failed"):
            return
        if phase == "Running" and uid not in self.runners:
            # Running here before this agent started: its processes are gone.
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"],
                {"status": {"phase": "Failed", "reason": "NodeAgentRestarted", "message": "the node agent restarted"}},
            )
            return
        runner = PodRunner(self, pod)
        with self.lock:
            self.runners[uid] = runner
        runner.start()

    def _delete_now(self, ns: str, name: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(
                name, ns, grace_period_seconds=0, body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid))
            )
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("delete %s/%s: %s", ns, name, e.reason)

    def finish_delete(self, runner: PodRunner) -> None:
        runner.report()
        self._delete_now(runner.ns, runner.name, runner.uid)

    def forget(self, runner: PodRunner) -> None:
        if runner.deleting.is_set():
            with self.lock:
                self.runners.pop(runner.uid, None)

    def watch_pods(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(_preload_content=False)
                data = json.loads(listing.data)
                for pod in data["items"]:
                    self.handle(pod)
                self._reap_gone({p["metadata"]["uid"] for p in data["items"]})
                rv = data["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=rv,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                    _preload_content=False,
                )
                for event in stream:
                    if self.stopping.is_set():
                        return
                    obj = event["raw_object"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.handle(obj)
                    elif event["type"] == "DELETED":
                        self._gone(obj["metadata"]["uid"])
                    elif event["type"] == "ERROR":
                        break
            except Exception as e:
                if not self.stopping.is_set():
                    log.warning("pod watch restarting: %s", e)
                    time.sleep(1)

    # ---- volumes: a tiny local-path provisioner

    def provision_loop(self) -> None:
        """Binds every pending PVC to a new hostPath PV under the cluster directory.

        The scheduler will not place a Pod whose claim is unbound, so the dev
        cluster needs a provisioner; directories outlive Pods like real volumes.
        """
        self._ensure_storage_class()
        while not self.stopping.wait(1):
            try:
                for pvc in self.core.list_persistent_volume_claim_for_all_namespaces().items:
                    if pvc.status.phase == "Pending" and not pvc.spec.volume_name:
                        self._provision(pvc)
            except Exception as e:
                log.warning("provisioner: %s", e)

    def _ensure_storage_class(self) -> None:
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "Immediate",
        }
        try:
            client.StorageV1Api(self.api).create_storage_class(body)
        except ApiException as e:
            if e.status != 409:
                raise

    def _provision(self, pvc) -> None:
        ns, name = pvc.metadata.namespace, pvc.metadata.name
        path = self.cluster_dir / "pvcs" / ns / name
        path.mkdir(parents=True, exist_ok=True)
        storage = (pvc.spec.resources.requests or {}).get("storage", "1Gi")
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"pv-{pvc.metadata.uid}", "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": pvc.spec.access_modes or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": pvc.spec.storage_class_name or "",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": ns, "name": name, "uid": pvc.metadata.uid},
            },
        }
        try:
            self.core.create_persistent_volume(pv)
        except ApiException as e:
            if e.status != 409:
                raise

    def _gone(self, uid: str) -> None:
        with self.lock:
            runner = self.runners.pop(uid, None)
        if runner:
            runner.terminate(0)

    def _reap_gone(self, present: set[str]) -> None:
        with self.lock:
            gone = [uid for uid in self.runners if uid not in present]
        for uid in gone:
            self._gone(uid)

    def shutdown(self, *_):
        self.stopping.set()
        with self.lock:
            runners = list(self.runners.values())
        for runner in runners:
            with runner.lock:
                for proc in runner.procs.values():
                    _signal_group(proc, signal.SIGKILL)
        sys.exit(0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="devcluster.nodeagent", description=__doc__.split("\n")[0])
    parser.add_argument("--cluster-dir", required=True, type=Path)
    parser.add_argument("--nodes", type=Path, help="YAML list of nodes: name, cpu, memory, gpus, pods, labels, taints")
    parser.add_argument("--image-map", type=Path, help="YAML: images: {name: {entrypoint: [...], workdir, env}}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    nodes = yaml.safe_load(args.nodes.read_text()) if args.nodes else DEFAULT_NODES
    if isinstance(nodes, dict):
        nodes = nodes.get("nodes", [])
    agent = NodeAgent(args.cluster_dir.resolve(), nodes, ImageMap.load(args.image_map))
    signal.signal(signal.SIGTERM, agent.shutdown)
    signal.signal(signal.SIGINT, agent.shutdown)
    agent.serve_kubelet_api()
    agent.serve_cluster_dns()
    agent.register()
    threading.Thread(target=agent.heartbeat_loop, daemon=True).start()
    threading.Thread(target=agent.provision_loop, daemon=True).start()
    log.info("registered nodes %s; watching pods", sorted(agent.node_names))
    agent.watch_pods()


if __name__ == "__main__":
    main()
