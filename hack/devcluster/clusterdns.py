"""The dev cluster's cluster DNS: what CoreDNS answers in a real cluster, for the `cluster.local` zone.

The node agent serves it on a loopback address of its own (port 53, UDP and TCP) and writes each
Pod's `/etc/resolv.conf` the way a kubelet does for `dnsPolicy: ClusterFirst` -- that nameserver,
`search <ns>.svc.cluster.local svc.cluster.local cluster.local`, `options ndots:5` -- bind-mounted
in the Pod's own mount namespace (podmounts.py). So every name a Pod's process looks up goes
through the system resolver as in a container: names in env and args, in config files it reads,
and in other namespaces alike.

Answers (A records, read from the API server when asked, cached for a second):

* `<service>.<ns>.svc.cluster.local`: a headless Service's Pods (Ready ones, or all with an IP
  under publishNotReadyAddresses). A Service with a cluster IP gets the same answer, since no
  kube-proxy turns its virtual IP into a Pod here: a client reaches the Pods directly, at the
  Service's port, so on the dev cluster a Service's `port` must equal its `targetPort`.
  `kubernetes.default.svc.cluster.local` is the API server's loopback address.
* `<hostname>.<subdomain>.<ns>.svc.cluster.local`: the live Pod with that hostname (default its
  name) whose subdomain names an existing Service.
* `<a>-<b>-<c>-<d>.<ns>.pod.cluster.local`: that IPv4 address.

A name that exists has no AAAA record (an empty answer, so resolvers use the A record); any other
name in the zone is NXDOMAIN. Names outside `cluster.local` are NXDOMAIN too: the dev cluster
reaches nothing beyond this machine, so there is no upstream to forward them to (and a Pod's
lookup never leaves the machine for the host's nameserver).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("devcluster.clusterdns")

ZONE = "cluster.local"
PORT = 53
TTL_SECONDS = 5
CACHE_SECONDS = 1.0
A, AAAA = 1, 28
CLASS_IN = 1
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
_QR, _AA, _RD = 0x8000, 0x0400, 0x0100
_OPCODE = 0x7800


# --------------------------------------------------------------------------- what a name means


@dataclass(frozen=True)
class Name:
    """A name of the zone, parsed: a Service, a Pod behind a Service, or a Pod's dashed IP."""

    namespace: str
    service: str | None = None  # <service>.<ns>.svc, or the subdomain of <hostname>.<subdomain>.<ns>.svc
    hostname: str | None = None
    ip: str | None = None  # <a-b-c-d>.<ns>.pod


def parse_name(fqdn: str) -> Name | None:
    """What a fully qualified name stands for; None when no name of the zone has its shape."""
    name = fqdn.lower().rstrip(".")
    if not name.endswith("." + ZONE):
        return None
    labels = name[: -len(ZONE) - 1].split(".")
    if len(labels) == 3 and labels[2] == "pod":
        try:
            ip = ipaddress.IPv4Address(labels[0].replace("-", "."))
        except ValueError:
            return None
        return Name(namespace=labels[1], ip=str(ip))
    if len(labels) == 3 and labels[2] == "svc":
        return Name(namespace=labels[1], service=labels[0])
    if len(labels) == 4 and labels[3] == "svc":
        return Name(namespace=labels[2], service=labels[1], hostname=labels[0])
    return None


def live(pod: dict) -> bool:
    """A Pod a name can point at: it has an IP, is not being deleted and has not finished."""
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and not pod["metadata"].get("deletionTimestamp") \
        and status.get("phase") not in ("Succeeded", "Failed")


def _ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def endpoint_ips(service: dict, pods: list[dict]) -> list[str]:
    """The IPs of the Pods a Service selects: Ready ones, or every live one under
    publishNotReadyAddresses. A Service without a selector has none here."""
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    if not selector:
        return []
    return sorted(
        pod["status"]["podIP"]
        for pod in pods
        if live(pod)
        and selector.items() <= (pod["metadata"].get("labels") or {}).items()
        and (spec.get("publishNotReadyAddresses") or _ready(pod))
    )


def pod_ip(pods: list[dict], hostname: str, subdomain: str) -> str | None:
    """The IP of the live Pod whose hostname (default: its name) and subdomain are these."""
    for pod in pods:
        spec = pod.get("spec") or {}
        if (spec.get("hostname") or pod["metadata"]["name"], spec.get("subdomain")) == (hostname, subdomain) and live(pod):
            return pod["status"]["podIP"]
    return None


class Resolver:
    """Name -> addresses, reading Services and Pods through the callables given (the node
    agent's API client); each answer is cached for CACHE_SECONDS, since a resolver asks for a
    name's A and AAAA records at once and walks its search path."""

    def __init__(self, read_service: Callable[[str, str], dict | None], list_pods: Callable[[str], list[dict]],
                 api_server_ip: str = "127.0.0.1", clock: Callable[[], float] = time.monotonic):
        self.read_service = read_service
        self.list_pods = list_pods
        self.api_server_ip = api_server_ip
        self.clock = clock
        self._cache: dict[str, tuple[float, list[str] | None]] = {}
        self._lock = threading.Lock()

    def addresses(self, fqdn: str) -> list[str] | None:
        """The name's IPv4 addresses; [] for a name that exists with none now; None for no such name."""
        key = fqdn.lower().rstrip(".")
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        found = self._look_up(key)
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = (now + CACHE_SECONDS, found)
        return found

    def _look_up(self, fqdn: str) -> list[str] | None:
        name = parse_name(fqdn)
        if name is None:
            return None
        if name.ip is not None:
            return [name.ip]
        assert name.service is not None
        if (name.service, name.namespace, name.hostname) == ("kubernetes", "default", None):
            return [self.api_server_ip]
        service = self.read_service(name.namespace, name.service)
        if service is None:
            return None
        pods = self.list_pods(name.namespace)
        if name.hostname is None:
            if (service.get("spec") or {}).get("type") == "ExternalName":
                return []  # a CNAME in a real cluster; nothing outside this machine answers here
            return endpoint_ips(service, pods)
        ip = pod_ip(pods, name.hostname, name.service)
        return [ip] if ip else None


# --------------------------------------------------------------------------- the wire format


@dataclass(frozen=True)
class Question:
    id: int
    flags: int
    name: str
    qtype: int
    qclass: int
    raw: bytes  # the question section as it came, echoed in the answer


def parse_query(data: bytes) -> Question:
    """The first question of a DNS query (RFC 1035 4.1); ValueError when it is malformed."""
    if len(data) < 12:
        raise ValueError("shorter than a DNS header")
    ident, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & _QR or qdcount < 1:
        raise ValueError("not a query")
    labels, offset = [], 12
    while True:
        if offset >= len(data):
            raise ValueError("name runs past the message")
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(data[offset:offset + length].decode("ascii", errors="replace"))
        offset += length
    if offset + 4 > len(data):
        raise ValueError("question has no type and class")
    qtype, qclass = struct.unpack("!HH", data[offset:offset + 4])
    return Question(ident, flags, ".".join(labels), qtype, qclass, data[12:offset + 4])


def response(question: Question, rcode: int, addresses: list[str] = ()) -> bytes:
    """The answer to `question`: `addresses` as A records pointing back at its name."""
    flags = _QR | (question.flags & (_OPCODE | _RD)) | rcode
    if question.name.lower().rstrip(".").endswith(ZONE):
        flags |= _AA
    header = struct.pack("!HHHHHH", question.id, flags, 1, len(addresses), 0, 0)
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, A, CLASS_IN, TTL_SECONDS, 4) + socket.inet_aton(ip) for ip in addresses
    )
    return header + question.raw + answers


def answer(data: bytes, resolver: Resolver) -> bytes | None:
    """The response to one query message (None: not worth one, as for a malformed header)."""
    try:
        question = parse_query(data)
    except ValueError:
        if len(data) < 12:
            return None
        ident, flags = struct.unpack("!HH", data[:4])
        return struct.pack("!HHHHHH", ident, _QR | (flags & _RD) | FORMERR, 0, 0, 0, 0)
    if question.flags & _OPCODE or question.qclass != CLASS_IN:
        return response(question, NOTIMP)
    try:
        found = resolver.addresses(question.name)
    except Exception:  # the API server is briefly away: a resolver retries a SERVFAIL
        log.exception("cluster DNS: looking up %s", question.name)
        return response(question, 2)
    if found is None:
        return response(question, NXDOMAIN)
    return response(question, NOERROR, found if question.qtype == A else [])


# --------------------------------------------------------------------------- the server


class _Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = answer(data, self.server.resolver)  # type: ignore[attr-defined]
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _Tcp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while (head := self.rfile.read(2)) and len(head) == 2:
            data = self.rfile.read(struct.unpack("!H", head)[0])
            reply = answer(data, self.server.resolver)  # type: ignore[attr-defined]
            if reply is None:
                return
            self.wfile.write(struct.pack("!H", len(reply)) + reply)


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DnsServer:
    """Cluster DNS on `ip`:PORT, UDP and TCP (a resolver retries over TCP on a truncated answer)."""

    # With port 0 the UDP port is picked, and its TCP twin may be taken: pick again, this often.
    PICK_ATTEMPTS = 20

    def __init__(self, ip: str, resolver: Resolver, port: int = PORT):
        self.ip = ip
        for attempt in range(1 if port else self.PICK_ATTEMPTS):
            self.udp = _UdpServer((ip, port), _Udp)
            try:
                self.tcp = _TcpServer((ip, self.udp.server_address[1]), _Tcp)  # the same port number
                break
            except OSError:
                self.udp.server_close()
                if port or attempt == self.PICK_ATTEMPTS - 1:
                    raise
        for server in (self.udp, self.tcp):
            server.resolver = resolver  # type: ignore[attr-defined]

    @property
    def port(self) -> int:
        return self.udp.server_address[1]

    def start(self) -> "DnsServer":
        for server, kind in ((self.udp, "udp"), (self.tcp, "tcp")):
            threading.Thread(target=server.serve_forever, daemon=True, name=f"cluster-dns-{kind}").start()
        return self

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()


def resolv_conf(nameserver: str, namespace: str, dns_config: dict | None = None) -> str:
    """A Pod's /etc/resolv.conf under dnsPolicy ClusterFirst, as a kubelet writes it, with the
    Pod's spec.dnsConfig merged in (extra nameservers, searches and options)."""
    return _render([nameserver], [f"{namespace}.svc.{ZONE}", f"svc.{ZONE}", ZONE], {"ndots": "5"}, dns_config or {})


def resolv_conf_from(dns_config: dict) -> str:
    """A Pod's /etc/resolv.conf under dnsPolicy None: spec.dnsConfig alone."""
    return _render([], [], {}, dns_config)


def _render(nameservers: list[str], searches: list[str], options: dict[str, str | None], dns_config: dict) -> str:
    nameservers = [*nameservers, *(dns_config.get("nameservers") or [])][:3]  # a resolver reads three
    searches = searches + [s for s in dns_config.get("searches") or [] if s not in searches]
    options = dict(options)
    for option in dns_config.get("options") or []:
        options[option["name"]] = option.get("value")
    lines = [f"nameserver {ns}" for ns in nameservers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(k if v is None else f"{k}:{v}" for k, v in options.items()))
    return "\n".join(lines) + "\n"
