"""Load generator: OpenAI-style requests split between stable and canary the way an HTTPRoute says.

The dev cluster has no Gateway data plane and no kube-proxy (ClusterIPs never route), so this
plays the gateway: it reads the HTTPRoute's backendRefs (weights -> Service names), resolves
each Service to the Pods its selector matches and their container port (the Service port's
targetPort, by number or by name), and sends each request to a backend chosen by weight, to
one of its Pods' IPs round-robin. The weights are re-read every second, so a Rollout moving
traffic is followed while the load runs. It stops by itself after a number of requests or a
duration, and reports per backend how many requests went there and how they ended.

    python benchmarks/loadgen.py --kubeconfig KC --httproute NAMESPACE/NAME --requests 500
    python benchmarks/loadgen.py --backend stable=9:http://127.0.0.2:8000 \\
                                 --backend canary=1:http://127.0.0.3:8000 --duration 10
    python benchmarks/loadgen.py          # self-contained: two local fake servers, 90/10, ~3 s

Importable: `LoadGenerator(source).run(requests=..., duration=...) -> Report`, with
`HTTPRouteSource` (the cluster) or `StaticSource` (fixed backends) as the source.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

REPO_ROOT = Path(__file__).resolve().parents[1]

GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
REFRESH_SECONDS = 1.0
REQUEST_TIMEOUT = 30.0


# ---- pure: what the HTTPRoute and the Services say


@dataclasses.dataclass(frozen=True)
class BackendRef:
    service: str
    namespace: str
    port: int | None
    weight: int


@dataclasses.dataclass(frozen=True)
class Backend:
    """One weighted destination: the Service's name and the base URLs of its ready Pods."""

    name: str
    weight: int
    endpoints: tuple[str, ...]


def backend_refs(route: Mapping[str, Any]) -> list[BackendRef]:
    """The Service backendRefs of the route's first rule that has any (weight defaults to 1)."""
    namespace = (route.get("metadata") or {}).get("namespace", "default")
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = [
            BackendRef(
                service=ref["name"],
                namespace=ref.get("namespace") or namespace,
                port=ref.get("port"),
                weight=int(ref.get("weight", 1)),
            )
            for ref in rule.get("backendRefs") or []
            if ref.get("kind", "Service") == "Service" and ref.get("group", "") in ("", "core")
        ]
        if refs:
            return refs
    return []


def _selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _target_port(service: Mapping[str, Any], port: int | None) -> int | str:
    ports = (service.get("spec") or {}).get("ports") or []
    if not ports:
        raise ValueError(f"Service {service['metadata']['name']} has no ports")
    chosen = next((p for p in ports if port is None or p.get("port") == port), None)
    if chosen is None:
        raise ValueError(f"Service {service['metadata']['name']} has no port {port}")
    return chosen.get("targetPort", chosen["port"])


def _container_port(pod: Mapping[str, Any], target: int | str) -> int | None:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def service_endpoints(service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], port: int | None) -> list[str]:
    """Base URLs (http://podIP:containerPort) of the ready Pods the Service's selector matches."""
    selector = (service.get("spec") or {}).get("selector") or {}
    target = _target_port(service, port)
    urls = []
    for pod in pods:
        if not _selector_matches(selector, (pod.get("metadata") or {}).get("labels") or {}) or not _pod_ready(pod):
            continue
        container_port = _container_port(pod, target)
        if container_port is not None:
            urls.append(f"http://{pod['status']['podIP']}:{container_port}")
    return sorted(urls)


def pick(backends: Sequence[Backend], r: float) -> Backend | None:
    """The backend a uniform r in [0, 1) falls on, by weight; backends without Pods or weight are skipped."""
    live = [b for b in backends if b.weight > 0 and b.endpoints]
    total = sum(b.weight for b in live)
    if total == 0:
        return None
    point = r * total
    for backend in live:
        if point < backend.weight:
            return backend
        point -= backend.weight
    return live[-1]


# ---- sources of backends


class Source(Protocol):
    def backends(self) -> list[Backend]: ...


@dataclasses.dataclass
class StaticSource:
    fixed: list[Backend]

    def backends(self) -> list[Backend]:
        return list(self.fixed)


class HTTPRouteSource:
    """Backends from an HTTPRoute in a cluster (or any `get_route` returning one as a dict)."""

    def __init__(self, kubeconfig: str, namespace: str, name: str,
                 get_route: Callable[[], Mapping[str, Any]] | None = None):
        from kubernetes import client, config

        api_client = config.new_client_from_config(kubeconfig)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace, self.name = namespace, name
        self.get_route = get_route or self._read_route

    def _read_route(self) -> Mapping[str, Any]:
        return self.custom.get_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, HTTPROUTES, self.name)

    def _json(self, call, *args, **kwargs) -> dict:
        return json.loads(call(*args, **kwargs, _preload_content=False).data)

    def backends(self) -> list[Backend]:
        result = []
        for ref in backend_refs(self.get_route()):
            service = self._json(self.core.read_namespaced_service, ref.service, ref.namespace)
            selector = (service.get("spec") or {}).get("selector") or {}
            label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
            pods = self._json(self.core.list_namespaced_pod, ref.namespace, label_selector=label_selector)["items"] \
                if selector else []
            result.append(Backend(ref.service, ref.weight, tuple(service_endpoints(service, pods, ref.port))))
        return result


# ---- the load


@dataclasses.dataclass
class BackendStats:
    requests: int = 0
    ok: int = 0
    http_errors: int = 0  # answered with a status >= 400
    failures: int = 0  # no answer: refused, reset, timed out
    latencies: list[float] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def quantile(q: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4) if ordered else None

        return {"requests": self.requests, "ok": self.ok, "http_errors": self.http_errors,
                "failures": self.failures, "p50_s": quantile(0.5), "p95_s": quantile(0.95)}


@dataclasses.dataclass
class Report:
    backends: dict[str, BackendStats]
    unrouted: int  # requests not sent: no backend had weight and a ready Pod
    seconds: float
    refreshes: int
    weights_seen: list[dict[str, int]]
    refresh_errors: list[str]

    @property
    def sent(self) -> int:
        return sum(s.requests for s in self.backends.values())

    def counts(self) -> dict[str, int]:
        return {name: s.requests for name, s in self.backends.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "unrouted": self.unrouted, "seconds": round(self.seconds, 2),
            "requests_per_second": round(self.sent / self.seconds, 1) if self.seconds else None,
            "backends": {name: s.summary() for name, s in self.backends.items()},
            "weights_seen": self.weights_seen, "refreshes": self.refreshes,
            "refresh_errors": self.refresh_errors[-5:],
        }


class LoadGenerator:
    """Worker threads send requests; one thread re-reads the backends every `refresh` seconds."""

    def __init__(self, source: Source, *, concurrency: int = 4, path: str = "/v1/completions",
                 model: str | None = None, prompt: str = "Summarise: the printer is on fire.",
                 max_tokens: int = 16, refresh: float = REFRESH_SECONDS, timeout: float = REQUEST_TIMEOUT,
                 seed: int | None = None):
        self.source, self.concurrency, self.path = source, concurrency, path
        self.model, self.prompt, self.max_tokens = model, prompt, max_tokens
        self.refresh, self.timeout = refresh, timeout
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._backends: list[Backend] = []
        self._round_robin: dict[str, itertools.cycle] = {}
        self._models: dict[str, str] = {}

    def _set_backends(self, backends: list[Backend]) -> None:
        with self._lock:
            self._backends = backends
            self._round_robin = {b.name: itertools.cycle(b.endpoints) for b in backends if b.endpoints}

    def _choose(self) -> tuple[str, str] | None:
        with self._lock:
            backend = pick(self._backends, self._random.random())
            if backend is None:
                return None
            return backend.name, next(self._round_robin[backend.name])

    def _model_for(self, endpoint: str) -> str:
        if self.model:
            return self.model
        if endpoint not in self._models:
            try:
                with urllib.request.urlopen(f"{endpoint}/v1/models", timeout=self.timeout) as response:  # noqa: S310
                    self._models[endpoint] = json.loads(response.read())["data"][0]["id"]
            except (OSError, ValueError, KeyError, IndexError):
                self._models[endpoint] = "default"
        return self._models[endpoint]

    def _body(self, endpoint: str) -> bytes:
        model = self._model_for(endpoint)
        if self.path.endswith("/chat/completions"):
            body = {"model": model, "messages": [{"role": "user", "content": self.prompt}], "max_tokens": self.max_tokens}
        else:
            body = {"model": model, "prompt": self.prompt, "max_tokens": self.max_tokens}
        return json.dumps(body).encode()

    def _send(self, endpoint: str) -> tuple[str, float]:
        request = urllib.request.Request(f"{endpoint}{self.path}", data=self._body(endpoint), method="POST",
                                         headers={"Content-Type": "application/json"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - Pod URL
                response.read()
                outcome = "ok" if response.status < 400 else "http_error"
        except urllib.error.HTTPError as exc:
            exc.read()
            outcome = "http_error"
        except OSError:
            outcome = "failure"
        return outcome, time.monotonic() - started

    def run(self, requests: int | None = None, duration: float | None = None) -> Report:
        """Sends `requests` requests, or for `duration` seconds, whichever ends first; at least one bound."""
        if requests is None and duration is None:
            raise ValueError("give requests or duration: the load generator must stop by itself")
        stats: dict[str, BackendStats] = {}
        weights_seen: list[dict[str, int]] = []
        refresh_errors: list[str] = []
        counters = {"issued": 0, "unrouted": 0, "refreshes": 0}
        stop = threading.Event()
        started = time.monotonic()
        deadline = started + duration if duration is not None else None

        def refresh_once() -> None:
            try:
                backends = self.source.backends()
            except Exception as exc:  # keep the last known backends; report why
                refresh_errors.append(f"{type(exc).__name__}: {exc}")
                return
            self._set_backends(backends)
            weights = {b.name: b.weight for b in backends}
            with self._lock:
                counters["refreshes"] += 1
                if not weights_seen or weights_seen[-1] != weights:
                    weights_seen.append(weights)
                for b in backends:
                    stats.setdefault(b.name, BackendStats())

        def refresher() -> None:
            while not stop.wait(self.refresh):
                refresh_once()

        def take_ticket() -> bool:
            with self._lock:
                if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    return False
                if requests is not None and counters["issued"] >= requests:
                    return False
                counters["issued"] += 1
                return True

        def worker() -> None:
            while take_ticket():
                choice = self._choose()
                if choice is None:
                    with self._lock:
                        counters["unrouted"] += 1
                    time.sleep(0.05)  # nothing to send to yet; the refresher may find Pods
                    continue
                name, endpoint = choice
                outcome, seconds = self._send(endpoint)
                with self._lock:
                    s = stats.setdefault(name, BackendStats())
                    s.requests += 1
                    s.latencies.append(seconds)
                    if outcome == "ok":
                        s.ok += 1
                    elif outcome == "http_error":
                        s.http_errors += 1
                    else:
                        s.failures += 1

        refresh_once()
        threads = [threading.Thread(target=refresher, name="loadgen-refresh", daemon=True)]
        threads += [threading.Thread(target=worker, name=f"loadgen-{i}", daemon=True) for i in range(self.concurrency)]
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join()
        stop.set()
        threads[0].join()
        return Report(stats, counters["unrouted"], time.monotonic() - started, counters["refreshes"],
                      weights_seen, refresh_errors)


# ---- command line


def _parse_backend(text: str) -> Backend:
    # name=weight:url[,url...]
    try:
        name, rest = text.split("=", 1)
        weight, urls = rest.split(":", 1)
        return Backend(name, int(weight), tuple(u for u in urls.split(",") if u))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--backend {text!r}: expected name=weight:http://host:port[,url...]") from None


def _self_contained(args) -> Report:
    """Two fake model servers on their own loopback addresses, 90/10, a few seconds of load."""
    servers, backends = [], []
    for name, address, weight in (("stable", "127.0.9.1", 9), ("canary", "127.0.9.2", 1)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "hack.prometheus.fake_server", "--host", address, "--port", str(port),
             "--model-version", name, "--latency", "0.005"],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        servers.append(proc)
        backends.append(Backend(name, weight, (f"http://{address}:{port}",)))
    try:
        deadline = time.monotonic() + 20
        for backend in backends:
            while True:
                try:
                    urllib.request.urlopen(f"{backend.endpoints[0]}/health", timeout=1).read()  # noqa: S310
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"fake server {backend.endpoints[0]} did not start")
                    time.sleep(0.1)
        generator = LoadGenerator(StaticSource(backends), concurrency=args.concurrency, seed=1)
        return generator.run(requests=args.requests, duration=args.duration or 3.0)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="kubeconfig of the cluster holding the HTTPRoute")
    parser.add_argument("--httproute", help="NAMESPACE/NAME of the HTTPRoute whose weights split the load")
    parser.add_argument("--backend", action="append", type=_parse_backend, default=[],
                        help="fixed backend name=weight:url (repeatable) instead of an HTTPRoute")
    parser.add_argument("--requests", type=int, help="stop after this many requests")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--path", default="/v1/completions", help="/v1/completions or /v1/chat/completions")
    parser.add_argument("--model", help="model field of the requests (default: the first of GET /v1/models)")
    args = parser.parse_args(argv)

    if args.httproute:
        if not args.kubeconfig:
            parser.error("--httproute needs --kubeconfig")
        if args.requests is None and args.duration is None:
            parser.error("give --requests or --duration")
        namespace, _, name = args.httproute.partition("/")
        source: Source = HTTPRouteSource(args.kubeconfig, namespace, name)
    elif args.backend:
        if args.requests is None and args.duration is None:
            parser.error("give --requests or --duration")
        source = StaticSource(args.backend)
    else:
        print(json.dumps(_self_contained(args).as_dict(), indent=2))
        return
    report = LoadGenerator(source, concurrency=args.concurrency, path=args.path, model=args.model).run(
        requests=args.requests, duration=args.duration)
    print(json.dumps(report.as_dict(), indent=2))


if __name__ == "__main__":
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    main()
