"""Rollback speed: from a canary's first failing measurement to 100% of traffic on stable.

    python benchmarks/rollback_speed.py              # 5 bad canaries, 5 emergency aborts
    python benchmarks/rollback_speed.py --runs 9 --interval 2

It starts its own dev cluster (in a temporary directory) and operator, a real Prometheus
scraping the serving Pods, an HTTPRoute and a load generator sending requests through it, and a
Rollout tracking the latest Approved version of a tiny model (steps: 30% -> analysis -> 100%;
an error-rate metric with `failureLimit: 0`). Then, per run:

* automatic rollback: a new version whose server fails every request (the dev server's fault
  file) is registered; the Rollout canaries it, the analysis measures the errors and rolls it
  back. Timed: the failing measurement's own timestamp (written by the operator in
  `status.analysis`) -> the moment the HTTPRoute is seen with canary weight 0 (polled every
  25 ms). Also shown: canary weight up -> weight 0, the whole exposure of the bad version.
* baseline, in the same run on the same cluster: the emergency abort. A good version paused at
  30% is aborted with `kubectl finetune abort`; timed from the command's start to the route seen
  with canary weight 0. It is the human path, with no analysis in it; the ratio says what the
  automatic path costs on top of the operator's reaction to a request.

Medians (and min/max) only: nothing here passes or fails. Wall-clock timestamps come from the
same machine as the operator's, so the measurement-time -> route-change span is comparable.
"""

from __future__ import annotations

import argparse
import datetime
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in ("hack", "operator", "trainer-image", ""):
    if str(REPO_ROOT / _path) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / _path))

import yaml  # noqa: E402

from benchmarks.operator_latency import Bench  # noqa: E402
from devcluster import canary, controlplane  # noqa: E402

MODEL = "bench-model"
ROUTE = "bench"
POLL_S = 0.025
PASSING = {"taskAccuracy": 0.9, "formatCompliance": 1.0, "safetyPassRate": 1.0, "generalScore": 1.0}


@dataclass
class Timing:
    version: str
    exposed: float | None = None  # canary weight > 0 first seen (wall clock)
    first_failed: float | None = None  # the failing measurement's own time (operator's clock)
    stable_again: float | None = None  # canary weight 0 seen again (wall clock)

    @property
    def rollback(self) -> float | None:
        if self.first_failed is None or self.stable_again is None:
            return None
        return self.stable_again - self.first_failed

    @property
    def exposure(self) -> float | None:
        if self.exposed is None or self.stable_again is None:
            return None
        return self.stable_again - self.exposed


class RolloutBench:
    def __init__(self, args):
        self.args = args
        self.bench = Bench(args)
        self.tmp = Path(tempfile.mkdtemp(prefix="rollback-speed-"))
        self.prometheus = None
        self.traffic: canary.TrafficLoop | None = None
        self.namespace = ""
        self.versions = 0

    # ---- set-up

    def start(self) -> None:
        self.bench.start_cluster()
        self.bench.start_operator()
        state = self.bench.state
        canary.install_httproute_crd(state)
        self.namespace = self.bench.namespace("rollback")
        from kubernetes import client

        self.custom = client.CustomObjectsApi(self.bench.api)
        from finetune_trainer.testing import make_tiny_model
        from hack.prometheus.server import start_serving_prometheus

        self.base = make_tiny_model(self.tmp / "base")
        self.prometheus = start_serving_prometheus(str(state.kubeconfig), [self.namespace], self.tmp / "prometheus")
        print(f"Prometheus {self.prometheus.url}, namespace {self.namespace}", flush=True)
        self.apply(canary.httproute(ROUTE))

    def stop(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        if self.prometheus is not None:
            self.prometheus.stop()
        self.bench.stop()

    def apply(self, manifest: dict) -> None:
        controlplane.kubectl(self.bench.state, "apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(manifest))

    def rollout(self, pause: bool) -> dict:
        steps = [{"setWeight": 30}, *([{"pause": {}}] if pause else []), {"analysis": {}}, {"setWeight": 100}]
        return canary.rollout(ROUTE, MODEL, self.prometheus.url, steps=steps, interval_s=self.args.interval,
                              count=3, failure_limit=0)

    def register(self, faulty: bool) -> str:
        self.versions += 1
        version = f"v{self.versions}"
        path = canary.make_adapter(self.base, self.tmp / version, self.versions, faulty=faulty)
        self.apply(canary.model_version(MODEL, version, path, self.base, metrics=PASSING))
        return version

    # ---- observation

    def status(self) -> dict:
        obj = self.custom.get_namespaced_custom_object("finetune.ai", "v1alpha1", self.namespace, "rollouts", ROUTE)
        return obj.get("status") or {}

    def canary_weight(self) -> int:
        route = self.custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", self.namespace,
                                                         "httproutes", ROUTE)
        return canary.route_weights(route).get(f"{ROUTE}-canary", 0)

    def wait(self, check, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = check()
            except Exception:  # noqa: BLE001 - a transient API error is "not yet"
                result = None
            if result:
                return result
            time.sleep(POLL_S)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}; status: {self.status()}")

    def watch_exposure(self, timing: Timing, timeout: float) -> None:
        """Records when the canary weight goes up, then when it is back at 0."""
        self.wait(lambda: self.canary_weight() > 0, timeout, f"{timing.version}'s canary to get traffic")
        timing.exposed = time.time()
        self.wait(lambda: self.canary_weight() == 0, timeout, f"{timing.version}'s canary weight back to 0")
        timing.stable_again = time.time()

    # ---- the runs

    def first_version(self) -> None:
        version = self.register(faulty=False)
        self.apply(self.rollout(pause=False))
        self.wait(lambda: (s := self.status()).get("phase") == "Healthy" and s.get("stableVersion") == version, 300,
                  f"{version} to serve")
        self.traffic = canary.TrafficLoop(str(self.bench.state.kubeconfig), self.namespace, ROUTE, model=MODEL).start()

    def automatic_rollback(self) -> Timing:
        version = self.register(faulty=True)
        timing = Timing(version)
        watcher = threading.Thread(target=self.watch_exposure, args=(timing, 300), daemon=True)
        watcher.start()
        status = self.wait(lambda: (s := self.status()).get("phase") == "Degraded" and _rolled_back(s, version) and s, 300, f"{version} to be rolled back")
        watcher.join(timeout=60)
        timing.first_failed = _first_failed_time(status)
        return timing

    def abort(self) -> float:
        version = self.register(faulty=False)
        self.wait(lambda: (s := self.status()).get("phase") == "Paused" and s.get("candidateVersion") == version, 300,
                  f"{version} to pause at 30%")
        plugin = [str(REPO_ROOT / "bin" / "kubectl-finetune"), "--kubeconfig", str(self.bench.state.kubeconfig),
                  "-n", self.namespace, "abort", ROUTE, "--reason", "benchmark"]
        started = time.time()
        subprocess.run(plugin, check=True, capture_output=True)
        self.wait(lambda: self.canary_weight() == 0, 60, "the aborted canary's weight to drop to 0")
        return time.time() - started


def _rolled_back(status: dict, version: str) -> bool:
    history = status.get("history") or []
    return bool(history) and history[-1].get("action") == "rollback" and history[-1].get("from") == version


def _first_failed_time(status: dict) -> float | None:
    """The operator's timestamp of the first Failed measurement in the last analysis run."""
    times = []
    for metric in (status.get("analysis") or {}).get("metrics") or []:
        for measurement in metric.get("measurements") or []:
            if measurement.get("phase") == "Failed" and measurement.get("time"):
                stamp = datetime.datetime.fromisoformat(str(measurement["time"]).replace("Z", "+00:00"))
                times.append(stamp.timestamp())
    return min(times) if times else None


def _summary(values: list[float]) -> str:
    if not values:
        return f"{'-':>8} {'-':>8} {'-':>8}"
    return f"{statistics.median(values):8.2f} {min(values):8.2f} {max(values):8.2f}"


def print_table(timings: list[Timing], aborts: list[float], interval: int) -> None:
    rollback = [t.rollback for t in timings if t.rollback is not None]
    exposure = [t.exposure for t in timings if t.exposure is not None]
    print()
    print(f"{'seconds (median, min, max)':<52} {'median':>8} {'min':>8} {'max':>8}  runs")
    print(f"{'automatic: first failing measurement -> 100% stable':<52} {_summary(rollback)}  {len(rollback)}")
    print(f"{'automatic: canary weight up -> 100% stable':<52} {_summary(exposure)}  {len(exposure)}")
    print(f"{'baseline: kubectl finetune abort -> 100% stable':<52} {_summary(aborts)}  {len(aborts)}")
    if rollback and aborts:
        print(f"ratio automatic rollback / emergency abort (medians): "
              f"{statistics.median(rollback) / statistics.median(aborts):.2f}")
    print(f"analysis: error-rate every {interval}s, failureLimit 0; the bad version's exposure includes the "
          f"query window filling with its errors")
    for t in timings:
        print(f"  {t.version}: rollback {_fmt(t.rollback)} s, exposure {_fmt(t.exposure)} s")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="bad canaries and emergency aborts each (default 5)")
    parser.add_argument("--interval", type=int, default=2, help="analysis interval in seconds (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories (logs)")
    args = parser.parse_args(argv)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    run = RolloutBench(args)
    timings: list[Timing] = []
    aborts: list[float] = []
    try:
        run.start()
        run.first_version()
        for i in range(args.runs):
            timing = run.automatic_rollback()
            timings.append(timing)
            print(f"rollback {i + 1}/{args.runs}: {timing.version} first failed -> stable {_fmt(timing.rollback)} s",
                  flush=True)
        run.apply(run.rollout(pause=True))
        for i in range(args.runs):
            aborts.append(run.abort())
            print(f"abort {i + 1}/{args.runs}: {aborts[-1]:.2f} s", flush=True)
        print_table(timings, aborts, args.interval)
        return 0
    except KeyboardInterrupt:
        print_table(timings, aborts, args.interval)
        return 130
    finally:
        run.stop()


if __name__ == "__main__":
    sys.exit(main())
