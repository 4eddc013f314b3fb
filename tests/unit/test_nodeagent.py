"""Pure parts of the dev cluster's node agent: image lookup, $(VAR) expansion, quantities, DNS names."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from devcluster import nodeagent  # noqa: E402
from devcluster.nodeagent import ImageEntry, ImageMap, _expand, quantity_to_float, resource_ref  # noqa: E402

IMAGES = ImageMap(
    {
        "busybox": ImageEntry(),
        "ghcr.io/finetune-operator/trainer": ImageEntry(entrypoint=["python", "-m", "finetune_trainer"]),
        "ghcr.io/x/pinned:1.0": ImageEntry(entrypoint=["pinned"]),
    }
)


@pytest.mark.parametrize(
    "image, entrypoint",
    [
        ("busybox", []),
        ("busybox:1.36", []),
        ("ghcr.io/finetune-operator/trainer:0.1.0", ["python", "-m", "finetune_trainer"]),
        ("ghcr.io/finetune-operator/trainer@sha256:abc", ["python", "-m", "finetune_trainer"]),
        ("ghcr.io/x/pinned:1.0", ["pinned"]),
        ("localhost:5000/busybox:1", None),
        ("ghcr.io/x/pinned:2.0", None),
        ("unknown/image", None),
    ],
)
def test_image_lookup(image, entrypoint):
    entry = IMAGES.lookup(image)
    assert (entry.entrypoint if entry else None) == entrypoint


@pytest.mark.parametrize(
    "value, expected",
    [
        ("$(A)-$(B)", "1-2"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("no vars", "no vars"),
        ("$(A", "$(A"),
    ],
)
def test_kubernetes_variable_expansion(value, expected):
    assert _expand(value, {"A": "1", "B": "2"}) == expected


@pytest.mark.parametrize(
    "quantity, value",
    [("1", 1.0), ("500m", 0.5), ("1Gi", 2**30), ("512Mi", 512 * 2**20), ("2k", 2000.0)],
)
def test_quantities(quantity, value):
    assert quantity_to_float(quantity) == pytest.approx(value)


def test_resource_field_ref_with_divisor():
    container = {"resources": {"limits": {"memory": "1Gi", "cpu": "2"}}}
    assert resource_ref(container, {"resource": "limits.memory", "divisor": "1Mi"}) == "1024"
    assert resource_ref(container, {"resource": "limits.cpu"}) == "2"
    assert resource_ref(container, {"resource": "requests.cpu"}) == "0"


@pytest.mark.parametrize(
    ("limits", "threads"),
    [({}, None), ({"cpu": "2"}, 2), ({"cpu": "1500m"}, 2), ({"cpu": "100m"}, 1), ({"cpu": "0.5"}, 1),
     ({"memory": "1Gi"}, None)],
)
def test_a_cpu_limit_sets_the_thread_count(limits, threads):
    assert nodeagent.cpu_threads({"resources": {"limits": limits}}) == threads


def test_pod_addresses_skip_ones_whose_ports_are_taken():
    import socket

    agent = nodeagent.NodeAgent.__new__(nodeagent.NodeAgent)
    agent.lock, agent.next_ip = threading.Lock(), 0
    taken = socket.socket()
    taken.bind(("127.1.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        assert agent.allocate_ip([port]) == "127.1.0.2"
        assert agent.allocate_ip([port]) == "127.1.0.3"
    finally:
        taken.close()


def test_a_port_taken_on_every_address_does_not_block_allocation():
    import socket

    agent = nodeagent.NodeAgent.__new__(nodeagent.NodeAgent)
    agent.lock, agent.next_ip = threading.Lock(), 0
    wildcard = socket.socket()
    wildcard.bind(("0.0.0.0", 0))  # as torch's TCPStore binds its port
    wildcard.listen()
    try:
        assert agent.allocate_ip([wildcard.getsockname()[1]]) == "127.1.0.1"
    finally:
        wildcard.close()


Pod = nodeagent.DnsTarget  # (service, hostname): a Pod behind a headless Service


def Service(name):  # noqa: N802 - reads like the constructor it stands for
    return nodeagent.DnsTarget(service=name)


@pytest.mark.parametrize(
    ("name", "targets"),
    [
        ("job-0.job", [Pod("job", "job-0")]),
        ("job-0.job.ns", [Pod("job", "job-0")]),
        ("job-0.job.ns.svc", [Pod("job", "job-0")]),
        ("job-0.job.ns.svc.cluster.local", [Pod("job", "job-0")]),
        ("job-0.job.other", []),
        ("job-0.job.other.svc.cluster.local", []),
        ("job-0.job.svc", []),
        # Through the search path a two-label name is first a Pod here, then a Service.
        ("api.ns", [Pod("ns", "api"), Service("api")]),
        ("api.ns.svc", [Service("api")]),
        ("api.ns.svc.cluster.local", [Service("api")]),
        ("api.other.svc", []),
        ("config.yaml", [Pod("yaml", "config")]),
        ("127.0.0.1", []),
        ("a.b.c.d", []),
    ],
)
def test_dns_names_are_tried_as_cluster_dns_would(name, targets):
    assert nodeagent.dns_targets(name, "ns") == targets


ADDRESSES = {Pod("job", "job-0"): "127.9.0.1", Service("api"): "127.9.0.2"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("job-0.job", "127.9.0.1"),
        ("--master_addr=job-0.job.ns.svc.cluster.local", "--master_addr=127.9.0.1"),
        ("http://api.ns.svc:8080/v1", "http://127.9.0.2:8080/v1"),
        ("job-0.job:29500,job-0.job", "127.9.0.1:29500,127.9.0.1"),
        # Not a name nothing answers, nor a name inside a longer one.
        ("job-1.job", "job-1.job"),
        ("/data/config.yaml", "/data/config.yaml"),
        ("x.job-0.job", "x.job-0.job"),
        ("job-0.jobs", "job-0.jobs"),
        ("no names here", "no names here"),
    ],
)
def test_dns_names_in_a_value_are_replaced_by_addresses(value, expected):
    assert nodeagent.replace_dns_names(value, "ns", ADDRESSES.get) == expected


def pod(name, ip, *, hostname=None, subdomain="job", phase="Running", ready=True, labels=None, deleting=False):
    return {
        "metadata": {"name": name, "labels": labels or {"app": "x"}, **({"deletionTimestamp": "t"} if deleting else {})},
        "spec": {"subdomain": subdomain, **({"hostname": hostname} if hostname else {})},
        "status": {"phase": phase, "podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}]},
    }


@pytest.mark.parametrize(
    ("pods", "ip"),
    [
        ([pod("job-0-abcde", "127.9.0.1", hostname="job-0")], "127.9.0.1"),
        ([pod("job-0", "127.9.0.1")], "127.9.0.1"),  # hostname defaults to the Pod's name
        ([pod("job-0-abcde", "127.9.0.1", hostname="job-0", subdomain="other")], None),
        ([pod("job-0-abcde", None, hostname="job-0")], None),  # no IP yet
        # A failed attempt's Pod is not an answer; its replacement is.
        ([pod("job-0-old", "127.9.0.1", hostname="job-0", phase="Failed"),
          pod("job-0-new", "127.9.0.3", hostname="job-0")], "127.9.0.3"),
        ([pod("job-0-abcde", "127.9.0.1", hostname="job-0", deleting=True)], None),
    ],
)
def test_pod_address_by_hostname_and_subdomain(pods, ip):
    assert nodeagent.pod_address(pods, Pod("job", "job-0")) == ip


def test_a_headless_service_answers_with_its_ready_pods():
    service = {"spec": {"clusterIP": "None", "selector": {"app": "x"}}}
    pods = [
        pod("b", "127.9.0.2"),
        pod("a", "127.9.0.1"),
        pod("starting", "127.9.0.3", ready=False),
        pod("done", "127.9.0.4", phase="Succeeded"),
        pod("stranger", "127.9.0.5", labels={"app": "y"}),
    ]
    assert nodeagent.service_addresses(service, pods) == ["127.9.0.1", "127.9.0.2"]
    service["spec"]["publishNotReadyAddresses"] = True
    assert nodeagent.service_addresses(service, pods) == ["127.9.0.1", "127.9.0.2", "127.9.0.3"]
    # A ClusterIP would need kube-proxy, which the dev cluster does not have.
    assert nodeagent.service_addresses({"spec": {"clusterIP": "10.0.0.1", "selector": {"app": "x"}}}, pods) == []


class _Agent:
    stopping = threading.Event()


class _Runner:
    """What PodRunner._retrying reads of its Pod runner: its name, agent and deletion flag."""

    ns, name, agent, deleting = "team", "job-prepare-x", _Agent(), threading.Event()
    _retrying = nodeagent.PodRunner._retrying


def _runner() -> _Runner:
    return _Runner()


def test_a_pod_setup_step_is_retried_while_the_api_server_is_away(monkeypatch):
    """An API server restarted while a Pod starts (its ServiceAccount token, its ConfigMaps) must
    not leave the Pod unstarted forever: the step is retried, as a kubelet retries volume setup."""
    monkeypatch.setattr(nodeagent.time, "sleep", lambda seconds: None)
    from kubernetes.client.rest import ApiException

    failures = [ConnectionResetError("Remote end closed connection"), ApiException(status=503, reason="Unavailable")]

    def flaky():
        if failures:
            raise failures.pop(0)
        return "mounted"

    assert _runner()._retrying(flaky, "volume setup") == "mounted" and not failures


def test_a_refusal_is_not_retried_and_a_lasting_outage_gives_up():
    from kubernetes.client.rest import ApiException

    def forbidden():
        raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException):
        _runner()._retrying(forbidden, "volume setup")

    def down():
        raise ConnectionRefusedError("refused")

    with pytest.raises(RuntimeError, match="volume setup: the API server did not answer for 0s"):
        _runner()._retrying(down, "volume setup", timeout=0)
