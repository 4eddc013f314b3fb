"""The load generator: HTTPRoute weights -> Services -> ready Pod IPs, weighted picks, and a run
that follows weight changes and stops by itself (against an in-process fake model server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from benchmarks import loadgen
from benchmarks.loadgen import Backend, BackendRef
from hack.prometheus import fake_server


def route(*refs: dict, namespace: str = "prod") -> dict:
    return {"metadata": {"name": "r", "namespace": namespace}, "spec": {"rules": [{"backendRefs": list(refs)}]}}


@pytest.mark.parametrize(
    ("httproute", "expected"),
    [
        pytest.param(route({"name": "s", "port": 80, "weight": 90}, {"name": "c", "port": 80, "weight": 10}),
                     [BackendRef("s", "prod", 80, 90), BackendRef("c", "prod", 80, 10)], id="weights"),
        pytest.param(route({"name": "s"}), [BackendRef("s", "prod", None, 1)], id="weight-defaults-to-1"),
        pytest.param(route({"name": "s", "namespace": "other", "weight": 0}), [BackendRef("s", "other", None, 0)],
                     id="cross-namespace-and-zero"),
        pytest.param(route({"name": "x", "kind": "InferencePool", "group": "inference.networking.k8s.io"}), [],
                     id="non-service-refs-ignored"),
        pytest.param({"metadata": {"namespace": "p"}, "spec": {"rules": [{"matches": []}, {"backendRefs": [{"name": "a"}]}]}},
                     [BackendRef("a", "p", None, 1)], id="first-rule-with-backends"),
        pytest.param({"metadata": {}, "spec": {}}, [], id="no-rules"),
    ],
)
def test_backend_refs(httproute, expected):
    assert loadgen.backend_refs(httproute) == expected


def pod(name: str, ip: str | None, labels: dict, ready: bool = True, phase: str = "Running", deleting: bool = False):
    meta = {"name": name, "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8000}]}]},
        "status": {"phase": phase, **({"podIP": ip} if ip else {}),
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


SERVICE = {"metadata": {"name": "canary"},
           "spec": {"selector": {"app": "canary"}, "ports": [{"port": 80, "targetPort": "http"}]}}


@pytest.mark.parametrize(
    ("service", "pods", "port", "expected"),
    [
        pytest.param(SERVICE, [pod("a", "127.1.0.2", {"app": "canary"}), pod("b", "127.1.0.1", {"app": "canary"})],
                     80, ["http://127.1.0.1:8000", "http://127.1.0.2:8000"], id="named-target-port"),
        pytest.param({**SERVICE, "spec": {"selector": {"app": "canary"}, "ports": [{"port": 80, "targetPort": 9000}]}},
                     [pod("a", "127.1.0.2", {"app": "canary"})], None, ["http://127.1.0.2:9000"], id="numeric-target-port"),
        pytest.param({**SERVICE, "spec": {"selector": {"app": "canary"}, "ports": [{"port": 8000}]}},
                     [pod("a", "127.1.0.2", {"app": "canary"})], 8000, ["http://127.1.0.2:8000"], id="target-port-defaults-to-port"),
        pytest.param(SERVICE, [pod("a", "127.1.0.2", {"app": "stable"})], 80, [], id="selector-does-not-match"),
        pytest.param(SERVICE, [pod("a", "127.1.0.2", {"app": "canary"}, ready=False)], 80, [], id="not-ready"),
        pytest.param(SERVICE, [pod("a", None, {"app": "canary"}, phase="Pending")], 80, [], id="pending-no-ip"),
        pytest.param(SERVICE, [pod("a", "127.1.0.2", {"app": "canary"}, deleting=True)], 80, [], id="terminating"),
        pytest.param({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}},
                     [pod("a", "127.1.0.2", {"app": "canary"})], 80, [], id="service-without-selector"),
    ],
)
def test_service_endpoints(service, pods, port, expected):
    assert loadgen.service_endpoints(service, pods, port) == expected


def test_service_endpoints_unknown_port():
    with pytest.raises(ValueError, match="Service canary has no port 81"):
        loadgen.service_endpoints(SERVICE, [], 81)


S, C = Backend("stable", 9, ("http://s",)), Backend("canary", 1, ("http://c",))


@pytest.mark.parametrize(
    ("backends", "r", "expected"),
    [
        pytest.param([S, C], 0.0, "stable", id="low-end-stable"),
        pytest.param([S, C], 0.89, "stable", id="just-below-90-percent"),
        pytest.param([S, C], 0.9, "canary", id="at-90-percent-canary"),
        pytest.param([S, C], 0.999, "canary", id="top-end-canary"),
        pytest.param([S, Backend("canary", 1, ())], 0.95, "stable", id="backend-without-pods-skipped"),
        pytest.param([Backend("stable", 0, ("http://s",)), C], 0.0, "canary", id="zero-weight-skipped"),
        pytest.param([Backend("stable", 0, ("http://s",))], 0.5, None, id="nothing-routable"),
    ],
)
def test_pick(backends, r, expected):
    chosen = loadgen.pick(backends, r)
    assert (chosen.name if chosen else None) == expected


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    running, urls = [], {}
    for name, address in (("stable", "127.0.7.1"), ("canary", "127.0.7.2")):
        httpd = fake_server.serve(address, 0, fake_server.FakeModelServer("m", name, 0.0, 0.0))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        running.append(httpd)
        urls[name] = f"http://{address}:{httpd.server_address[1]}"
    yield urls
    for httpd in running:
        httpd.shutdown()
        httpd.server_close()


def test_run_stops_after_the_requests_and_splits_by_weight(servers):
    source = loadgen.StaticSource([Backend("stable", 3, (servers["stable"],)), Backend("canary", 1, (servers["canary"],))])
    report = loadgen.LoadGenerator(source, concurrency=3, seed=5).run(requests=400)
    assert report.sent == 400 and report.unrouted == 0
    assert 60 <= report.counts()["canary"] <= 140, report.as_dict()
    assert all(s.ok == s.requests for s in report.backends.values())


def test_run_follows_weight_changes_every_refresh(servers):
    class Shifting:
        """100% stable for the first reads, then 100% canary: like a rollout stepping."""

        calls = 0

        def backends(self):
            self.calls += 1
            canary = 0 if self.calls <= 2 else 100
            return [Backend("stable", 100 - canary, (servers["stable"],)), Backend("canary", canary, (servers["canary"],))]

    report = loadgen.LoadGenerator(Shifting(), concurrency=2, refresh=0.2, seed=1).run(duration=1.5)
    assert report.weights_seen == [{"stable": 100, "canary": 0}, {"stable": 0, "canary": 100}]
    assert report.counts()["stable"] > 0 and report.counts()["canary"] > 0


def test_run_counts_http_errors_and_unreachable_backends(servers):
    failing = fake_server.serve("127.0.7.3", 0, fake_server.FakeModelServer("m", "bad", 0.5, 0.0))
    threading.Thread(target=failing.serve_forever, daemon=True).start()
    try:
        source = loadgen.StaticSource([
            Backend("bad", 1, (f"http://127.0.7.3:{failing.server_address[1]}",)),
            Backend("gone", 1, ("http://127.0.7.4:9",)),
        ])
        report = loadgen.LoadGenerator(source, concurrency=2, seed=2, timeout=2).run(requests=40)
    finally:
        failing.shutdown()
        failing.server_close()
    bad, gone = report.backends["bad"], report.backends["gone"]
    assert bad.requests + gone.requests == 40
    assert bad.http_errors == bad.requests // 2 and bad.ok + bad.http_errors == bad.requests
    assert gone.failures == gone.requests


def test_run_needs_a_bound():
    with pytest.raises(ValueError, match="stop by itself"):
        loadgen.LoadGenerator(loadgen.StaticSource([])).run()
