"""Start and stop a real Kubernetes control plane on loopback.

etcd -> kube-apiserver -> kube-controller-manager + kube-scheduler, plus the
process node agent (`devcluster.nodeagent`).  Every process is started in its
own session so it outlives the command that started it (`make devcluster-up`)
and is stopped by process group from `pids.json` (`make devcluster-down`).

Everything lives in one cluster directory:

    pki/            CA, serving and client certificates, service-account keys
    kubeconfig      admin kubeconfig: `kubectl --kubeconfig <dir>/kubeconfig`
    logs/<name>.log each component's output
    etcd/           etcd data
    node/           the node agent's pods, volumes and logs
    cluster.json    ports, pids and paths of the running cluster

Ports are picked free each time so several clusters (parallel test runs) never
clash.  Only 127.0.0.1 is ever bound or dialled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import certs

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "controlplane" / "build.sh"
THIRDPARTY_CRDS_SCRIPT = REPO_ROOT / "hack" / "thirdparty" / "crds.sh"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ClusterError(RuntimeError):
    """The control plane did not come up; the message carries the log tail."""


def cache_root() -> Path:
    """The project's cache root, read exactly as the install scripts read it.

    `FINETUNE_CACHE` when set, else `$XDG_CACHE_HOME/finetune-operator`, else
    `~/.cache/finetune-operator`: the venv, the control plane binaries, the third-party CRDs
    and the demo's model all live under it, keyed by version.
    """
    explicit = os.environ.get("FINETUNE_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "finetune-operator"


def thirdparty_crds_dir() -> Path:
    """The directory of the third-party router CRDs that `make thirdparty-crds` fetched.

    Fetches nothing: a missing fetch is an install step that did not run, reported with the
    command that runs it (`hack/thirdparty/crds.sh --installed`).
    """
    out = subprocess.run(["bash", str(THIRDPARTY_CRDS_SCRIPT), "--installed"], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise ClusterError(out.stderr.strip() or f"{THIRDPARTY_CRDS_SCRIPT} --installed exited {out.returncode}")
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary_dir() -> Path:
    """Builds (or reuses) the control plane binaries and returns their directory."""
    explicit = os.environ.get("DEVCLUSTER_BIN_DIR")
    if explicit:
        return Path(explicit)
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "all"], check=False, stdout=subprocess.PIPE, text=True
    )
    if out.returncode != 0:
        raise ClusterError(f"building the control plane binaries failed (see above); {BUILD_SCRIPT}")
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class ClusterState:
    dir: str
    bin_dir: str
    etcd_port: int = 0
    etcd_peer_port: int = 0
    apiserver_port: int = 0
    controller_manager_port: int = 0
    scheduler_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def kubeconfig(self) -> Path:
        return self.path / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def save(self) -> None:
        (self.path / "cluster.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> "ClusterState":
        return cls(**json.loads((directory / "cluster.json").read_text()))


def write_kubeconfig(path: Path, server: str, pki: certs.Pki, who: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "devcluster", "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)}}
        ],
        "users": [
            {
                "name": who,
                "user": {
                    "client-certificate": str(pki.client_cert(who)),
                    "client-key": str(pki.client_key(who)),
                },
            }
        ],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": who}}],
        "current-context": "devcluster",
    }
    # JSON is valid YAML; no YAML library needed here.
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def log_tail(state: ClusterState, name: str, lines: int = 40) -> str:
    log = state.path / "logs" / f"{name}.log"
    if not log.exists():
        return f"(no log at {log})"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _spawn(state: ClusterState, name: str, argv: list[str], env: dict | None = None) -> None:
    logs = state.path / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=state.dir,
        )
    state.pids[name] = proc.pid
    state.save()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as dead.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _https_ok(url: str, pki: certs.Pki | None) -> bool:
    ctx = ssl.create_default_context()
    if pki is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.client_cert("admin")), str(pki.client_key("admin")))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return resp.status == 200
    except Exception:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except Exception:
        return False


def _wait(state: ClusterState, name: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        pid = state.pids.get(name)
        if pid and not _alive(pid):
            raise ClusterError(f"{name} exited during start-up; last log lines:\n{log_tail(state, name)}")
        time.sleep(0.5)
    raise ClusterError(f"{name} was not ready after {timeout:.0f}s; last log lines:\n{log_tail(state, name)}")


def kubectl_binary(bin_dir: Path) -> str:
    built = bin_dir / "kubectl"
    return str(built) if built.exists() else "kubectl"


def start(
    directory: Path,
    *,
    nodes_config: Path | None = None,
    image_map: Path | None = None,
    timeout: float = 120,
) -> ClusterState:
    """Starts the whole cluster in `directory` and waits until it is usable."""
    directory = directory.resolve()
    if (directory / "cluster.json").exists():
        old = ClusterState.load(directory)
        if any(_alive(p) for p in old.pids.values()):
            raise ClusterError(f"a cluster is already running in {directory}; stop it first (make devcluster-down)")
    directory.mkdir(parents=True, exist_ok=True)
    bins = binary_dir()
    state = ClusterState(dir=str(directory), bin_dir=str(bins))
    pki = certs.generate(directory / "pki")
    state.etcd_port, state.etcd_peer_port = free_port(), free_port()
    state.apiserver_port = free_port()
    state.controller_manager_port, state.scheduler_port = free_port(), free_port()
    state.save()
    try:
        _start_etcd(state, bins)
        _start_apiserver(state, bins, pki)
        for who in ("admin", "controller-manager", "scheduler"):
            name = "kubeconfig" if who == "admin" else f"{who}.kubeconfig"
            write_kubeconfig(directory / name, state.server, pki, who)
        _start_controller_manager(state, bins, pki)
        _start_scheduler(state, bins)
        _start_node_agent(state, nodes_config, image_map)
        _wait_usable(state, timeout)
    except Exception:
        stop(directory)
        raise
    return state


def _start_etcd(state: ClusterState, bins: Path) -> None:
    peer = f"http://127.0.0.1:{state.etcd_peer_port}"
    client = f"http://127.0.0.1:{state.etcd_port}"
    _spawn(
        state,
        "etcd",
        [
            str(bins / "etcd"),
            "--name=devcluster",
            f"--data-dir={state.path / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devcluster={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ],
    )
    _wait(state, "etcd", lambda: _http_ok(f"{client}/health"), 60)


# Every request but the control plane's own, at Metadata level (who, verb, resource, user agent):
# tests read <cluster dir>/audit.log to see which API calls the operator made (RBAC from usage).
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: [system:kube-controller-manager, system:kube-scheduler]
  - level: None
    userGroups: [system:nodes]
  - level: Metadata
"""


def _start_apiserver(state: ClusterState, bins: Path, pki: certs.Pki) -> None:
    audit_policy = state.path / "audit-policy.yaml"
    audit_policy.write_text(AUDIT_POLICY)
    _spawn(
        state,
        "kube-apiserver",
        [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{state.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--secure-port={state.apiserver_port}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={certs.SERVICE_CIDR}",
            # kubectl logs/exec: the API server calls the node agent's kubelet API at the Node's
            # InternalIP (127.0.0.1, no name lookup), checks its certificate against the cluster
            # CA and presents its own client certificate, the only one the agent accepts.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            f"--kubelet-client-certificate={pki.client_cert(certs.APISERVER_KUBELET_CLIENT)}",
            f"--kubelet-client-key={pki.client_key(certs.APISERVER_KUBELET_CLIENT)}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={state.path / 'audit.log'}",
            "--audit-log-maxsize=500",
            "--audit-log-maxbackup=1",
            "--v=1",
        ],
    )
    _wait(state, "kube-apiserver", lambda: _https_ok(f"{state.server}/readyz", pki), 90)


def _start_controller_manager(state: ClusterState, bins: Path, pki: certs.Pki) -> None:
    kubeconfig = state.path / "controller-manager.kubeconfig"
    _spawn(
        state,
        "kube-controller-manager",
        [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.dir / 'ca.key'}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--controllers=*",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.controller_manager_port}",
            "--node-monitor-grace-period=50s",
            "--concurrent-job-syncs=20",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ],
    )
    _wait(
        state,
        "kube-controller-manager",
        lambda: _https_ok(f"https://127.0.0.1:{state.controller_manager_port}/healthz", None),
        60,
    )


def _start_scheduler(state: ClusterState, bins: Path) -> None:
    kubeconfig = state.path / "scheduler.kubeconfig"
    _spawn(
        state,
        "kube-scheduler",
        [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.scheduler_port}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ],
    )
    _wait(
        state,
        "kube-scheduler",
        lambda: _https_ok(f"https://127.0.0.1:{state.scheduler_port}/healthz", None),
        60,
    )


def _start_node_agent(state: ClusterState, nodes_config: Path | None, image_map: Path | None) -> None:
    argv = [sys.executable, "-m", "devcluster.nodeagent", "--cluster-dir", state.dir]
    if nodes_config:
        argv += ["--nodes", str(Path(nodes_config).resolve())]
    if image_map:
        argv += ["--image-map", str(Path(image_map).resolve())]
    pythonpath = os.pathsep.join(
        [str(REPO_ROOT / "hack"), str(REPO_ROOT / "operator"), str(REPO_ROOT / "trainer-image")]
        + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    )
    _spawn(state, "node-agent", argv, env={"PYTHONPATH": pythonpath})


def kubectl(state: ClusterState, *args: str, check: bool = True, input: str | None = None):
    return subprocess.run(
        [kubectl_binary(Path(state.bin_dir)), f"--kubeconfig={state.kubeconfig}", *args],
        check=check,
        capture_output=True,
        text=True,
        input=input,
    )


def _describe_conditions(obj: dict | None) -> str:
    if obj is None:
        return "the object does not exist yet"
    status = obj.get("status") or {}
    conditions = status.get("conditions")
    if not conditions:
        return "its status has no conditions yet" if status else "its status is not written yet"
    return "conditions " + ", ".join(
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']}: {c.get('message', '')})" if c.get("reason") else "")
        for c in conditions
    )


def wait_for_condition(
    state: ClusterState,
    resources: list[str],
    condition: str,
    *,
    namespace: str | None = None,
    timeout: float = 60.0,
    expected: str = "True",
    interval: float = 0.25,
) -> None:
    """Waits until each `kind/name` in `resources` has `condition` == `expected`.

    Unlike `kubectl wait --for=condition=...`, an object that is not created yet, or whose
    status (or conditions list) nobody has written yet, is "not yet" rather than an error:
    right after a CRD is created its status is empty for a moment, and kubectl gives up on it
    (`.status.conditions accessor error`). On the deadline the error names the object, the
    condition and what it last saw.
    """
    deadline = time.monotonic() + timeout
    scope = ["-n", namespace] if namespace else []
    for resource in resources:
        last = "nothing read yet"
        while True:
            out = kubectl(state, "get", resource, *scope, "-o", "json", check=False)
            if out.returncode == 0:
                obj = json.loads(out.stdout)
                conditions = (obj.get("status") or {}).get("conditions") or []
                if any(c.get("type") == condition and c.get("status") == expected for c in conditions):
                    break
                last = _describe_conditions(obj)
            elif "NotFound" in out.stderr or "not found" in out.stderr:
                last = _describe_conditions(None)
            else:
                last = f"kubectl get {resource} failed: {out.stderr.strip()}"
            if time.monotonic() >= deadline:
                where = f" in namespace {namespace}" if namespace else ""
                raise ClusterError(
                    f"timed out after {timeout:.0f}s waiting for {resource}{where} to be {condition}={expected}; "
                    f"last seen: {last}"
                )
            time.sleep(interval)


def crd_resources(files) -> list[str]:
    """`customresourcedefinition/<name>` for every CRD defined in the YAML `files`."""
    import yaml

    names = []
    for path in files:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(f"customresourcedefinition/{doc['metadata']['name']}")
    return names


def api_client(kubeconfig: Path | str, pool_size: int):  # -> kubernetes.client.ApiClient
    """A Kubernetes API client for `kubeconfig` that keeps up to `pool_size` connections open.

    The size must be in the configuration before the client exists: the client makes its
    connection pool once, from the configuration of that moment (a later change does nothing,
    and every request beyond the default 5 per CPU at once opens and drops a TLS connection).
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def wait_for_crds(state: ClusterState, files, timeout: float = 60.0) -> None:
    """Waits until every CRD in the YAML `files` is Established (see `wait_for_condition`)."""
    wait_for_condition(state, crd_resources(files), "Established", timeout=timeout)


def _wait_usable(state: ClusterState, timeout: float) -> None:
    """Usable = the default ServiceAccount exists and every node is Ready and untainted."""

    def default_sa() -> bool:
        return kubectl(state, "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0

    def nodes_ready() -> bool:
        out = kubectl(state, "get", "nodes", "-o", "json", check=False)
        if out.returncode != 0:
            return False
        items = json.loads(out.stdout)["items"]
        if not items:
            return False
        for node in items:
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            taints = [t["key"] for t in node.get("spec", {}).get("taints", []) or []]
            if conditions.get("Ready") != "True" or "node.kubernetes.io/not-ready" in taints:
                return False
        return True

    _wait(state, "kube-controller-manager", default_sa, timeout)
    _wait(state, "node-agent", nodes_ready, timeout)


def stop(directory: Path, grace: float = 10) -> None:
    """Stops every process of the cluster in `directory` (agent first, etcd last)."""
    directory = directory.resolve()
    if not (directory / "cluster.json").exists():
        return
    state = ClusterState.load(directory)
    order = ["node-agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
    # Whatever else was started against the cluster (the demo's operator) goes first, while the
    # API server is still there for it to shut down cleanly.
    for name in [n for n in state.pids if n not in order] + order:
        pid = state.pids.get(name)
        if not pid or not _alive(pid):
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    state.pids = {}
    state.save()
