"""The dev cluster's cluster DNS (hack/devcluster/clusterdns.py): what a name means, the answers
on the wire, and a real server answering over UDP and TCP on the loopback."""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from devcluster import clusterdns  # noqa: E402
from devcluster.clusterdns import Name, Resolver, parse_name  # noqa: E402


def pod(name: str, ip: str | None, labels: dict | None = None, *, ready: bool = True, hostname: str | None = None,
        subdomain: str | None = None, phase: str = "Running") -> dict:
    spec = {k: v for k, v in (("hostname", hostname), ("subdomain", subdomain)) if v}
    status = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec, "status": status}


SERVICES = {
    ("models", "teacher"): {"spec": {"clusterIP": "10.96.0.20", "selector": {"app": "teacher"}}},
    ("train", "peers"): {"spec": {"clusterIP": "None", "selector": {"app": "peers"}, "publishNotReadyAddresses": True}},
    ("train", "manual"): {"spec": {"clusterIP": "10.96.0.21"}},
    ("train", "outside"): {"spec": {"type": "ExternalName", "externalName": "example.org"}},
}
PODS = {
    "models": [pod("teacher-a", "127.5.0.1", {"app": "teacher"}), pod("teacher-b", "127.5.0.2", {"app": "teacher"}, ready=False),
               pod("teacher-c", "127.5.0.3", {"app": "teacher"}, phase="Succeeded")],
    "train": [pod("peers-0-x", "127.6.0.1", {"app": "peers"}, ready=False, hostname="peers-0", subdomain="peers"),
              pod("peers-1-x", None, {"app": "peers"}, hostname="peers-1", subdomain="peers")],
}


@pytest.fixture
def resolver() -> Resolver:
    reads = []

    def read_service(namespace, name):
        reads.append((namespace, name))
        return SERVICES.get((namespace, name))

    r = Resolver(read_service, lambda namespace: PODS.get(namespace, []), api_server_ip="127.0.0.1")
    r.reads = reads  # type: ignore[attr-defined]
    return r


@pytest.mark.parametrize(
    ("fqdn", "parsed"),
    [
        ("teacher.models.svc.cluster.local", Name(namespace="models", service="teacher")),
        ("Teacher.Models.SVC.cluster.local.", Name(namespace="models", service="teacher")),
        ("peers-0.peers.train.svc.cluster.local", Name(namespace="train", service="peers", hostname="peers-0")),
        ("127-5-0-1.models.pod.cluster.local", Name(namespace="models", ip="127.5.0.1")),
        ("999-5-0-1.models.pod.cluster.local", None),
        ("teacher.models.svc", None),  # not fully qualified: the Pod's resolver adds the search path
        ("huggingface.co", None),
        ("models.svc.cluster.local", None),
        ("a.b.c.d.svc.cluster.local", None),
    ],
)
def test_names_of_the_zone(fqdn, parsed):
    assert parse_name(fqdn) == parsed


@pytest.mark.parametrize(
    ("fqdn", "addresses"),
    [
        # A Service with a cluster IP answers with its Ready Pods (no kube-proxy here), not finished ones.
        ("teacher.models.svc.cluster.local", ["127.5.0.1"]),
        # A headless one publishing not-ready addresses: every live Pod with an IP.
        ("peers.train.svc.cluster.local", ["127.6.0.1"]),
        ("peers-0.peers.train.svc.cluster.local", ["127.6.0.1"]),
        # The peer without an IP yet has no name yet.
        ("peers-1.peers.train.svc.cluster.local", None),
        ("manual.train.svc.cluster.local", []),  # no selector: exists, no addresses
        ("outside.train.svc.cluster.local", []),
        ("kubernetes.default.svc.cluster.local", ["127.0.0.1"]),
        ("127-9-8-7.train.pod.cluster.local", ["127.9.8.7"]),
        ("missing.models.svc.cluster.local", None),
        ("teacher.other.svc.cluster.local", None),  # a Service lives in its own namespace only
        ("teacher-a.teacher.models.svc.cluster.local", None),  # teacher-a has no subdomain
        ("huggingface.co", None),
    ],
)
def test_what_each_name_answers(resolver, fqdn, addresses):
    assert resolver.addresses(fqdn) == addresses


def test_answers_are_cached_for_a_second(resolver):
    now = [100.0]
    resolver.clock = lambda: now[0]
    for _ in range(3):
        resolver.addresses("teacher.models.svc.cluster.local")
    assert resolver.reads == [("models", "teacher")]
    now[0] += clusterdns.CACHE_SECONDS + 0.01
    resolver.addresses("teacher.models.svc.cluster.local.")
    assert len(resolver.reads) == 2


def query(name: str, qtype: int = clusterdns.A, ident: int = 0x1234, qclass: int = clusterdns.CLASS_IN) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, qclass)


def decode(reply: bytes) -> tuple[int, int, bool, list[str]]:
    """(id, rcode, authoritative, A addresses) of a response."""
    ident, flags, qd, an, _, _ = struct.unpack("!HHHHHH", reply[:12])
    assert flags & 0x8000 and qd == 1
    offset = 12
    while reply[offset]:
        offset += 1 + reply[offset]
    offset += 5
    addresses = []
    for _ in range(an):
        pointer, rtype, rclass, ttl, length = struct.unpack("!HHHIH", reply[offset:offset + 12])
        assert (pointer, rtype, rclass, length) == (0xC00C, clusterdns.A, clusterdns.CLASS_IN, 4) and ttl > 0
        addresses.append(socket.inet_ntoa(reply[offset + 12:offset + 16]))
        offset += 16
    assert offset == len(reply)
    return ident, flags & 0xF, bool(flags & 0x0400), addresses


@pytest.mark.parametrize(
    ("name", "qtype", "expected"),
    [
        ("teacher.models.svc.cluster.local", clusterdns.A, (clusterdns.NOERROR, True, ["127.5.0.1"])),
        # An existing name has no IPv6 address: an empty answer, so the resolver uses the A record.
        ("teacher.models.svc.cluster.local", clusterdns.AAAA, (clusterdns.NOERROR, True, [])),
        ("teacher.models.svc.models.svc.cluster.local", clusterdns.A, (clusterdns.NXDOMAIN, True, [])),
        ("huggingface.co", clusterdns.A, (clusterdns.NXDOMAIN, False, [])),
    ],
)
def test_answers_on_the_wire(resolver, name, qtype, expected):
    ident, *rest = decode(clusterdns.answer(query(name, qtype), resolver))
    assert ident == 0x1234 and tuple(rest) == expected


def test_malformed_and_unsupported_queries_get_an_error_not_silence(resolver):
    truncated = clusterdns.answer(query("x.cluster.local")[:-3], resolver)
    ident, flags, *counts = struct.unpack("!HHHHHH", truncated)
    assert (ident, flags & 0x8000, flags & 0xF, counts) == (0x1234, 0x8000, clusterdns.FORMERR, [0, 0, 0, 0])
    assert decode(clusterdns.answer(query("x.cluster.local", qclass=3), resolver))[1] == clusterdns.NOTIMP
    assert clusterdns.answer(b"\x00\x01", resolver) is None


def test_an_api_server_away_is_a_server_failure_the_resolver_retries():
    def broken(namespace, name):
        raise ConnectionError("API server restarting")

    reply = clusterdns.answer(query("teacher.models.svc.cluster.local"), Resolver(broken, lambda ns: []))
    assert decode(reply)[1] == 2  # SERVFAIL


def test_a_real_server_answers_over_udp_and_tcp(resolver):
    server = clusterdns.DnsServer("127.0.0.1", resolver, port=0).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            udp.sendto(query("teacher.models.svc.cluster.local", ident=7), ("127.0.0.1", server.port))
            assert decode(udp.recv(512)) == (7, clusterdns.NOERROR, True, ["127.5.0.1"])
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as tcp:
            message = query("peers-0.peers.train.svc.cluster.local", ident=8)
            tcp.sendall(struct.pack("!H", len(message)) + message)
            length = struct.unpack("!H", tcp.recv(2))[0]
            data = b""
            while len(data) < length:
                data += tcp.recv(length - len(data))
            assert decode(data) == (8, clusterdns.NOERROR, True, ["127.6.0.1"])
    finally:
        server.stop()


def test_resolv_conf_as_a_kubelet_writes_it():
    assert clusterdns.resolv_conf("127.3.2.1", "team-a") == (
        "nameserver 127.3.2.1\nsearch team-a.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    )
    merged = clusterdns.resolv_conf("127.3.2.1", "team-a", {"searches": ["corp.example"], "options": [
        {"name": "ndots", "value": "2"}, {"name": "edns0"}]})
    assert merged.splitlines()[1:] == ["search team-a.svc.cluster.local svc.cluster.local cluster.local corp.example",
                                       "options ndots:2 edns0"]
    assert clusterdns.resolv_conf_from({"nameservers": ["127.0.0.9"]}) == "nameserver 127.0.0.9\n"


def test_a_picked_port_whose_tcp_twin_is_taken_is_picked_again(resolver, monkeypatch):
    # Port 0: the UDP port is the system's pick; when TCP already has that number, pick again.
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    picks = iter([taken.getsockname()[1], 0])
    original = clusterdns._UdpServer.__init__

    def udp_on_a_taken_port_first(self, address, handler):
        original(self, (address[0], next(picks, 0)), handler)

    monkeypatch.setattr(clusterdns._UdpServer, "__init__", udp_on_a_taken_port_first)
    try:
        server = clusterdns.DnsServer("127.0.0.1", resolver, port=0)
        assert server.port != taken.getsockname()[1]
        server.udp.server_close()
        server.tcp.server_close()
    finally:
        taken.close()
