"""Prometheus metrics of the operator itself (not of the models it trains or serves).

What a platform team wants on a dashboard: how often reconciles run and how they end, how long
they take, how many FineTuneJobs sit in each phase, and which build is running. The metrics
live in prometheus-client's default registry (so the process and platform collectors come
along) and are served on `/metrics` by prometheus-client's own HTTP server.

Phase counts are derived, not counted up and down: a small in-memory table maps each
FineTuneJob to its last decided phase (every reconcile updates it, a deletion removes it), and
the gauge is recomputed from the table, so it can never drift below zero or double-count.
"""

from __future__ import annotations

import importlib.metadata
import platform
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram, Info

from finetune_operator import __version__

NAMESPACE = "finetune_operator"

RECONCILES = Counter(
    "reconcile",
    "Reconciles of custom resources, by kind and result (success, error).",
    ["kind", "result"],
    namespace=NAMESPACE,
)
RECONCILE_DURATION = Histogram(
    "reconcile_duration_seconds",
    "Wall time of one reconcile (parse, observe, decide, act), by kind.",
    ["kind"],
    namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FINETUNEJOBS = Gauge(
    "finetunejobs",
    "FineTuneJobs known to this operator, by status.phase ('' until a phase is written).",
    ["phase"],
    namespace=NAMESPACE,
)
BUILD = Info("build", "Version of the running operator.", namespace=NAMESPACE)

# Phases shown as 0 rather than missing, so dashboards and alerts see every series from the start.
FINETUNEJOB_PHASES = (
    "Pending", "Preparing", "Training", "Evaluating", "Succeeded", "Failed", "Suspended",
)


class PhaseTable:
    """Last seen phase of each object; publishes the count per phase to a gauge."""

    def __init__(self, gauge: Gauge, phases: Iterable[str]) -> None:
        self._gauge = gauge
        self._phases = tuple(phases)
        self._by_object: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._publish()

    def observe(self, namespace: str, name: str, phase: str | None) -> None:
        with self._lock:
            self._by_object[(namespace, name)] = phase or ""
            self._publish()

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._by_object.pop((namespace, name), None)
            self._publish()

    def _publish(self) -> None:
        counts = dict.fromkeys(self._phases, 0)
        for phase in self._by_object.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self._gauge.labels(phase=phase).set(count)
        # Phases nobody is in any more (and that are not well-known) are dropped, not kept at 0.
        for (label,) in list(self._gauge._metrics):  # noqa: SLF001 - prometheus-client has no public listing
            if label not in counts:
                self._gauge.remove(label)


finetunejob_phases = PhaseTable(FINETUNEJOBS, FINETUNEJOB_PHASES)


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    """Time one reconcile of `kind` and count it as success or error (the exception propagates)."""
    started = time.perf_counter()
    result = "error"
    try:
        yield
        result = "success"
    finally:
        RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - started)
        RECONCILES.labels(kind=kind, result=result).inc()


def publish_build_info() -> None:
    try:
        kopf_version = importlib.metadata.version("kopf")
    except importlib.metadata.PackageNotFoundError:
        kopf_version = "unknown"
    BUILD.info(
        {
            "version": __version__,
            "kopf_version": kopf_version,
            "python_version": platform.python_version(),
        }
    )


def serve(host: str, port: int) -> None:
    """Serve /metrics on host:port in a daemon thread; port 0 disables the server."""
    if not port:
        return
    prometheus_client.start_http_server(port, addr=host)
