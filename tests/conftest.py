"""Shared fixtures: the dev cluster (once per session) and a namespace per test.

The dev cluster is real: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and the process node agent (see hack/devcluster).  It starts
only when a test asks for it.  Set FINETUNE_TEST_CLUSTER_DIR to the directory
of a running `make devcluster-up` cluster to reuse it while iterating.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
# Subprocesses (the operator, the node agent, the trainer) import the project from source too.
_SOURCE_DIRS = [str(ROOT / d) for d in ("operator", "trainer-image", "hack")] + [str(ROOT)]
os.environ["PYTHONPATH"] = os.pathsep.join(
    _SOURCE_DIRS + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in _SOURCE_DIRS]
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from devcluster import controlplane  # noqa: E402

from tests.helpers import WORKSPACE_CLAIM, wait_for  # noqa: E402

CRDS = ROOT / "crds"
IMAGE_MAP = ROOT / "hack" / "devcluster" / "images.yaml"


class Cluster:
    """A running dev cluster as tests see it."""

    def __init__(self, state: controlplane.ClusterState):
        self.state = state
        self.kubeconfig = str(state.kubeconfig)
        self.server = state.server
        self.dir = Path(state.dir)
        self.node_dir = self.dir / "node"
        self._api = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = controlplane.kubectl(self.state, *args, check=False, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        return json.loads(self.kubectl(*args).stdout)

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict]:
        args = ["get", kind, "-o", "json"] + (["-n", namespace] if namespace else ["-A"])
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args).stdout)["items"]

    def apply(self, manifest: str, namespace: str | None = None) -> subprocess.CompletedProcess:
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, input=manifest)

    def api_client(self):
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(self.kubeconfig)
        return self._api

    def wait_for_condition(self, resources: list[str], condition: str, namespace: str | None = None,
                           timeout: float = 60.0) -> None:
        """`kubectl wait --for=condition=...` that also waits out objects with no status yet."""
        controlplane.wait_for_condition(self.state, resources, condition, namespace=namespace, timeout=timeout)

    def create_namespace(self, name: str, *, pod_security: str = "restricted") -> str:
        """A namespace as tests get it: Pod Security labels (`pod_security` enforced, restricted
        warned and audited) and the claim WORKSPACE_CLAIM, in one request; returns once Pods can
        be created there."""
        namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": pod_security_labels(pod_security)}}
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": WORKSPACE_CLAIM, "namespace": name},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
        self.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [namespace, claim]}))
        # The ServiceAccount admission plugin rejects Pods until `default` exists.
        wait_for(
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
            60,
            f"the default ServiceAccount in {name}",
        )
        return name

    def claim_dir(self, namespace: str, claim: str = WORKSPACE_CLAIM) -> Path:
        """The directory on this machine holding a claim's files (the node agent's provisioner
        binds each claim to <cluster dir>/pvcs/<namespace>/<claim>)."""
        return self.dir / "pvcs" / namespace / claim

    def local_path(self, namespace: str, uri: str) -> Path:
        """Where a location a Pod in `namespace` uses lies on this machine: pvc://<claim>/<path>
        in the claim's directory; file:// and absolute paths where they are."""
        if uri.startswith("pvc://"):
            claim, _, path = uri.removeprefix("pvc://").partition("/")
            return self.claim_dir(namespace, claim) / path
        return Path(uri.removeprefix("file://"))

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        matches = sorted(self.node_dir.glob(f"pods/{namespace}_{pod}_*/logs/{container}.log"))
        return matches[-1].read_text(errors="replace") if matches else ""


def _install_crds(cluster: Cluster) -> None:
    files = sorted(CRDS.glob("*.yaml"))
    if not files:
        return
    for f in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    controlplane.wait_for_crds(cluster.state, files)
    for policy in sorted((ROOT / "config" / "admission").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(policy))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    reuse = os.environ.get("FINETUNE_TEST_CLUSTER_DIR")
    if reuse:
        state = controlplane.ClusterState.load(Path(reuse))
        c = Cluster(state)
        _install_crds(c)
        yield c
        return
    directory = tmp_path_factory.mktemp("devcluster")
    state = controlplane.start(directory, image_map=IMAGE_MAP)
    c = Cluster(state)
    try:
        _install_crds(c)
        yield c
    finally:
        controlplane.stop(directory)


# Pod Security admission labels of every test namespace. Every test namespace enforces
# "restricted" (the API server itself refuses any Pod below it), and warns and audits at that
# level. A test that genuinely needs less (a hostPath volume: a real trainer reading its inputs
# and writing its outputs on this machine) opts out with `pod_security(level, reason=...)`; the
# reason is required, so the list of exceptions says why each one exists.
POD_SECURITY_LABEL = "pod-security.kubernetes.io"
POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
DEFAULT_POD_SECURITY = "restricted"


def pod_security_labels(enforce: str = DEFAULT_POD_SECURITY) -> dict[str, str]:
    if enforce not in POD_SECURITY_LEVELS:
        raise ValueError(f"Pod Security level {enforce!r}: use one of {', '.join(POD_SECURITY_LEVELS)}")
    return {
        f"{POD_SECURITY_LABEL}/enforce": enforce,
        f"{POD_SECURITY_LABEL}/warn": "restricted",
        f"{POD_SECURITY_LABEL}/audit": "restricted",
    }


def pod_security_level(marker) -> str:
    """The level a `pod_security` marker asks for; anything below restricted must say why."""
    if marker is None:
        return DEFAULT_POD_SECURITY
    level = marker.args[0] if marker.args else marker.kwargs.get("level", DEFAULT_POD_SECURITY)
    if level != DEFAULT_POD_SECURITY and not str(marker.kwargs.get("reason") or "").strip():
        raise pytest.UsageError(
            f'pytest.mark.pod_security("{level}") needs reason="..." saying why the test cannot run under '
            f'"restricted" (the default of every test namespace)'
        )
    return level


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "pod_security(level, reason): the test namespace enforces this Pod Security level instead of "
        "restricted (the default); a reason is required",
    )


@pytest.fixture
def namespace(cluster: Cluster, request) -> str:
    """A fresh namespace named after the test, enforcing Pod Security "restricted" unless the
    test's `pod_security` marker says otherwise, with the claim WORKSPACE_CLAIM; deleted
    afterwards (without waiting)."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name, pod_security=pod_security_level(request.node.get_closest_marker("pod_security")))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
