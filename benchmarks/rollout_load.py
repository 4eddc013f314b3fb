"""Do many Rollouts under analysis slow down the FineTuneJobs' reconciles?

    python benchmarks/rollout_load.py                       # 100 Rollouts, 50 FineTuneJobs per side
    python benchmarks/rollout_load.py --rollouts 100 --jobs 100 --prometheus hanging

It starts its own dev cluster (in a temporary directory) and operator, as
`operator_latency.py` does, and measures the same FineTuneJob workload twice in one run:

* baseline: `--jobs` FineTuneJobs on the no-op trainer, with no Rollout in the cluster;
* under load: `--rollouts` Rollouts, each with its stable version serving and a canary held at
  an analysis step that measures every `--interval` seconds and does not conclude during the run
  (`count` 1000, the most the API admits), then the same `--jobs` FineTuneJobs again.

Per side it prints the FineTuneJob reconcile duration p50/p99 (from the operator's own
`finetune_operator_reconcile_duration_seconds{kind="FineTuneJob"}` histogram, the increase over
the side, quantiles interpolated within buckets as Prometheus' histogram_quantile does), apply
-> prepare Job and apply -> train Job p50/p99 (watch arrival times), and what else the operator
did meanwhile: Rollout reconciles and analysis queries (Prometheus' own query counter). The
ratio under load / baseline is the answer; nothing here passes or fails.

`--prometheus real` (default) analyses against a real Prometheus scraping the serving Pods;
`--prometheus hanging` against an address that accepts connections and never answers, so every
analysis query waits for its timeout: a slow Prometheus must not hold up other objects either.

The serving Pods run the no-op server image (`ghcr.io/finetune-operator/server-noop`: answers
its readiness probe and scrapes, serves no model), so 2 x `--rollouts` Pods fit a laptop.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in ("hack", "operator", "trainer-image", ""):
    if str(REPO_ROOT / _path) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / _path))

from benchmarks.operator_latency import NOOP_IMAGE, Bench, Series, percentile  # noqa: E402
from devcluster import canary  # noqa: E402

GROUP, VERSION = "finetune.ai", "v1alpha1"
SERVER_IMAGE = "ghcr.io/finetune-operator/server-noop"
HISTOGRAM = "finetune_operator_reconcile_duration_seconds"
# Always data, never a failure: with count 1000 the analysis measures on for the whole run.
QUERY = '(sum(up{namespace="{{namespace}}"}) or vector(0)) * 0'


class Hanging:
    """A TCP server that accepts connections and never answers (a Prometheus that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def stop(self) -> None:
        self._stop.set()
        for conn in self.held:
            conn.close()
        self.sock.close()


def samples(metrics_url: str, name: str, **labels: str) -> list:
    """The samples called `name` with these labels on a Prometheus text endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return [
        s for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def histogram(metrics_url: str, kind: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of the reconcile histogram of `kind`."""
    return {float(s.labels["le"]): s.value for s in samples(metrics_url, f"{HISTOGRAM}_bucket", kind=kind)}


def counter(metrics_url: str, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(metrics_url, name, **labels))


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """histogram_quantile over the increase between two snapshots (linear within a bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: its lower bound, as Prometheus does
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


class LoadBench:
    def __init__(self, args) -> None:
        self.args = args
        self.bench = Bench(argparse.Namespace(image=NOOP_IMAGE, timeout=args.timeout, stall=60, steady=0, keep=args.keep))
        self.prometheus = None
        self.hanging: Hanging | None = None

    def start(self) -> None:
        self.bench.start_cluster()
        self.bench.start_operator()
        canary.install_httproute_crd(self.bench.state)
        from kubernetes import client

        self.custom = client.CustomObjectsApi(self.bench.api)

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.hanging is not None:
            self.hanging.stop()
        self.bench.stop()

    # ---- one side: the FineTuneJob workload, with the operator's histogram around it

    def side(self, label: str) -> dict:
        url = self.bench.metrics_url
        before = histogram(url, "FineTuneJob")
        rollouts_before = counter(url, "finetune_operator_reconcile_total", kind="Rollout")
        queries_before = self.query_count()
        started = time.monotonic()
        self.bench.rss_label = label
        prepare, train, requests = self.bench.operator_run(self.args.jobs)
        elapsed = time.monotonic() - started
        after = histogram(url, "FineTuneJob")
        reconciles = (after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0))
        queries = self.query_count()
        return {
            "label": label,
            "reconciles": reconciles,
            "p50": quantile(0.5, before, after),
            "p99": quantile(0.99, before, after),
            "prepare": prepare,
            "train": train,
            "finished": requests.finished,
            "seconds": elapsed,
            "rollout_reconciles": counter(url, "finetune_operator_reconcile_total", kind="Rollout") - rollouts_before,
            "queries": (queries - queries_before) if queries is not None and queries_before is not None else None,
        }

    def query_count(self) -> float | None:
        """Instant queries Prometheus answered so far (None without a real Prometheus)."""
        if self.prometheus is None:
            return None
        try:
            return counter(f"{self.prometheus.url}/metrics", "prometheus_http_requests_total", handler="/api/v1/query")
        except OSError:
            return None

    # ---- the Rollouts

    def rollouts(self) -> None:
        n = self.args.rollouts
        ns = self.bench.namespace("rollouts")
        if self.args.prometheus == "real":
            from hack.prometheus.server import start_serving_prometheus

            self.prometheus = start_serving_prometheus(str(self.bench.state.kubeconfig), [ns], self.bench.tmp / "prometheus")
            address = self.prometheus.url
        else:
            self.hanging = Hanging()
            address = self.hanging.url
        print(f"{n} Rollouts in {ns}, analysis against {self.args.prometheus} Prometheus {address} ...", flush=True)
        artifacts = {v: self.bench.tmp / "out" / "models" / v for v in ("v1", "v2")}
        for path in artifacts.values():
            path.mkdir(parents=True, exist_ok=True)
            (path / "adapter_config.json").write_text(json.dumps({"version": path.name}))  # the no-op server reads nothing
        from finetune_trainer.artifacts import digest_files

        digests = {v: digest_files(path) for v, path in artifacts.items()}
        names = [f"r{i:03d}" for i in range(n)]

        def create(kind: str, plural: str, body: dict) -> None:
            if kind == "HTTPRoute":
                self.custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, plural, body)
            else:
                self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)

        def register(version: str) -> None:
            # The operator checks each registered artifact against its digest: register the real one.
            bodies = [canary.model_version(f"m-{name}", version, artifacts[version], self.bench.tmp / "out" / "models",
                                           metrics={"formatCompliance": 1.0}, digest=digests[version]) for name in names]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda b: create("ModelVersion", "modelversions", b), bodies))

        register("v1")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: create("HTTPRoute", "httproutes", canary.httproute(name)), names))
            list(pool.map(lambda name: create("Rollout", "rollouts", self.rollout(name, address)), names))
        self.wait_rollouts(ns, lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "v1", "stable v1 serving")
        register("v2")
        self.wait_rollouts(
            ns, lambda s: s.get("candidateVersion") == "v2" and (s.get("analysis") or {}).get("metrics") is not None,
            "a canary of v2 under analysis",
        )

    def rollout(self, name: str, address: str) -> dict:
        manifest = canary.rollout(name, f"m-{name}", address, steps=[{"setWeight": 10}, {"analysis": {}}, {"setWeight": 100}],
                                  interval_s=self.args.interval, count=1000, failure_limit=0)
        manifest["spec"]["serving"] = {"type": "custom", "image": SERVER_IMAGE,
                                       "args": ["--version", "$(MODEL_VERSION)", "--port", "$(PORT)"],
                                       "resources": {"gpus": 0, "cpu": "10m", "memory": "64Mi"}}
        metric = manifest["spec"]["analysis"]["metrics"][0]
        metric.update({"query": QUERY, "thresholds": {"max": 1.0}})
        return manifest

    def wait_rollouts(self, ns: str, check, what: str) -> None:
        deadline = time.monotonic() + self.args.timeout + 5 * self.args.rollouts
        while True:
            items = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "rollouts")["items"]
            done = sum(1 for item in items if check(item.get("status") or {}))
            if done == len(items) == self.args.rollouts:
                print(f"  all {done} Rollouts: {what}", flush=True)
                return
            if time.monotonic() > deadline:
                stuck = next((item for item in items if not check(item.get("status") or {})), {})
                raise RuntimeError(f"{done}/{self.args.rollouts} Rollouts reached {what}; one that did not: "
                                   f"{json.dumps((stuck.get('status') or {}), default=str)[:600]}")
            time.sleep(2)


def _s(value: float | None) -> str:
    return "-" if value is None else (f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s")


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def print_table(base: dict, load: dict, args) -> None:
    rows = [
        ("FineTuneJob reconcile p50 (histogram)", base["p50"], load["p50"]),
        ("FineTuneJob reconcile p99 (histogram)", base["p99"], load["p99"]),
        ("apply -> prepare Job p50", percentile(base["prepare"].watched, 50), percentile(load["prepare"].watched, 50)),
        ("apply -> prepare Job p99", percentile(base["prepare"].watched, 99), percentile(load["prepare"].watched, 99)),
        ("apply -> train Job p50", percentile(base["train"].watched, 50), percentile(load["train"].watched, 50)),
        ("apply -> train Job p99", percentile(base["train"].watched, 99), percentile(load["train"].watched, 99)),
    ]
    print()
    print(f"{args.jobs} FineTuneJobs, without Rollouts / with {args.rollouts} Rollouts under analysis "
          f"(every {args.interval}s, {args.prometheus} Prometheus)")
    print(f"{'':42} {'baseline':>12} {'under load':>12} {'ratio':>8}")
    for label, a, b in rows:
        print(f"{label:42} {_s(a):>12} {_s(b):>12} {_ratio(b, a):>8}")
    for side in (base, load):
        queries = "-" if side["queries"] is None else f"{side['queries']:.0f}"
        print(f"{side['label']}: {side['reconciles']:.0f} FineTuneJob reconciles, {side['finished']}/{args.jobs} finished "
              f"in {side['seconds']:.0f} s; meanwhile {side['rollout_reconciles']:.0f} Rollout reconciles, "
              f"{queries} Prometheus queries")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=100, help="Rollouts under analysis (default 100)")
    parser.add_argument("--jobs", type=int, default=50, help="FineTuneJobs per side (default 50)")
    parser.add_argument("--interval", type=int, default=2, help="seconds between a Rollout's measurements (default 2)")
    parser.add_argument("--prometheus", choices=("real", "hanging"), default="real",
                        help="analyse against a real Prometheus, or one that never answers (default real)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait per stage, plus 5 per Rollout")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    bench = LoadBench(args)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        bench.start()
        base = bench.side("baseline")
        bench.rollouts()
        time.sleep(10)  # the analysis runs are under way on every Rollout
        load = bench.side("under load")
        print_table(base, load, args)
        peak = bench.bench.rss_peak
        print(f"operator peak RSS: baseline {peak.get('baseline', 0) / 2**20:.0f} MiB, "
              f"under load {peak.get('under load', 0) / 2**20:.0f} MiB")
    finally:
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
