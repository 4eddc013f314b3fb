"""Operator latency: how long from `kubectl apply` of FineTuneJobs until their Jobs exist.

    python benchmarks/operator_latency.py                  # sizes 1 and 100
    python benchmarks/operator_latency.py --sizes 1,100,1000
    python benchmarks/operator_latency.py --sizes 300 --until prepare --steady 0   # reaction time only

For each size N it creates N FineTuneJobs at once (in a fresh namespace) that use the no-op
trainer image (`ghcr.io/finetune-operator/trainer-noop`: the trainer's CLI and results, no ML,
so the Pods cost almost nothing), and measures per FineTuneJob

* FineTuneJob -> `<name>-prepare` Job: the operator's own reaction time;
* FineTuneJob -> `<name>-train` Job: the above plus the prepare Pod's whole life (scheduling,
  start, exit, the Job controller marking the Job complete) plus the operator's second reaction.

Baseline, measured in the same run on the same cluster just before: N plain `batch/v1` Jobs
created directly, each -> its Pod, which is the Kubernetes Job controller's reaction time. The
ratio of the operator's latency to it says how much the operator adds on top of Kubernetes.

Then, per size, it waits until every FineTuneJob has finished (Succeeded or Failed) and every
ModelVersion they registered has its artifact check's verdict (which runs after the job
finished), and reads the operator's own request counter (`finetune_operator_api_requests_total`
on its /metrics, kopf's requests included): API requests per FineTuneJob lifecycle (from the
first create to the last version checked, divided by N), and, with all N finished and nothing
else going on, the
operator's steady-state API requests per second over `--steady` seconds (default 60), with the
verbs and resources that make them.

Times are when each object's ADDED event arrived on a watch (millisecond resolution; both ends
of a latency come through the same kind of watch, so the delivery delay cancels out). The
`creationTimestamp`-based p50/max is printed beside them, but it has one-second resolution.

It starts its own dev cluster in a temporary directory (nodes with room for thousands of Pods)
and its own operator process, whose RSS is sampled throughout (peak per size and overall; the
kernel's high-water mark VmHWM at the end), and stops everything at the end. Medians and ratios only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in ("hack", "operator", "trainer-image"):
    if str(REPO_ROOT / _path) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / _path))

from devcluster import controlplane  # noqa: E402

IMAGE_MAP = REPO_ROOT / "hack" / "devcluster" / "images.yaml"
CRDS = REPO_ROOT / "crds"
NOOP_IMAGE = "ghcr.io/finetune-operator/trainer-noop:0.1.0"
GROUP, VERSION, PLURAL = "finetune.ai", "v1alpha1", "finetunejobs"
NODES = [
    {"name": f"bench-node-{i}", "cpu": "4000", "memory": "16Ti", "gpus": 8, "pods": 5000, "labels": {}, "taints": []}
    for i in range(2)
]
CREATE_THREADS = 8


# --------------------------------------------------------------------------- measurements


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def parse_time(value: str) -> float:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


@dataclass
class Series:
    """Latencies of one kind at one size."""

    label: str
    expected: int
    watched: list[float] = field(default_factory=list)  # seconds, from watch arrival times
    by_creation: list[float] = field(default_factory=list)  # seconds, creationTimestamp (1 s resolution)


class ArrivalLog:
    """First arrival time of each object name on a watch; started from a list's resourceVersion
    so no object created after `start()` returns is missed."""

    def __init__(self, list_fn, namespace: str, **list_kwargs):
        self.list_fn = list_fn
        self.namespace = namespace
        self.kwargs = list_kwargs
        self.seen: dict[str, float] = {}
        self.created: dict[str, str] = {}
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.gaps = 0  # times the watch fell behind and a list filled the gap

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, args=(self._list(),), daemon=True)
        self._thread.start()

    def _list(self) -> str:
        """List, note every object not seen yet (arriving now), and return the list's version.

        At start the namespace is empty. After the watch fell too far behind (410 Gone: the API
        server no longer has the events since our version), the objects created meanwhile count
        as arriving when this list sees them: later than their watch event would have, so a
        latency measured across a gap is an upper bound, never an underestimate.
        """
        listing = self.list_fn(namespace=self.namespace, **self.kwargs)
        arrived = time.time()
        with self.changed:
            for obj in listing.get("items") or ():
                self.seen.setdefault(obj["metadata"]["name"], arrived)
                self.created.setdefault(obj["metadata"]["name"], obj["metadata"]["creationTimestamp"])
            self.changed.notify_all()
        return listing["metadata"]["resourceVersion"]

    def _run(self, version: str) -> None:
        from kubernetes import client, watch

        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.list_fn, namespace=self.namespace, resource_version=version,
                    timeout_seconds=30, allow_watch_bookmarks=True, **self.kwargs,
                ):
                    arrived = time.time()
                    obj = event["raw_object"]
                    version = obj["metadata"].get("resourceVersion", version)
                    if event["type"] == "ADDED":
                        name = obj["metadata"]["name"]
                        with self.changed:
                            self.seen.setdefault(name, arrived)
                            self.created.setdefault(name, obj["metadata"]["creationTimestamp"])
                            self.changed.notify_all()
                    if self._stop.is_set():
                        stream.stop()
                        return
            except Exception as exc:  # noqa: BLE001 - a dropped watch resumes from the last version seen
                if self._stop.is_set():
                    return
                if isinstance(exc, client.ApiException) and exc.status == 410:  # that version is gone
                    self.gaps += 1
                    version = self._relist()
                else:
                    time.sleep(0.2)

    def _relist(self) -> str:
        while not self._stop.is_set():
            try:
                return self._list()
            except Exception:  # noqa: BLE001 - a loaded API server may time out; try again
                time.sleep(1)
        return ""

    def stop(self) -> None:
        self._stop.set()

    def wait_for(self, names: set[str], timeout: float, stall: float) -> None:
        """Until every name has arrived, `timeout` passed, or nothing new arrived for `stall` s.

        Progress is any new object of the watch, not only one of `names`: the train Jobs come
        only after the prepare Jobs' Pods ran, which under load can take longer than `stall`.
        """
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        with self.changed:
            while True:
                if len(names & self.seen.keys()) == len(names):
                    return
                count = len(self.seen)
                now = time.monotonic()
                if count != last_count:
                    last_count, last_change = count, now
                if now > deadline or now - last_change > stall:
                    return
                self.changed.wait(0.5)


# --------------------------------------------------------------------------- cluster and operator


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="ftj-latency-"))
        self.cluster_dir = self.tmp / "cluster"
        self.state: controlplane.ClusterState | None = None
        self.operator: subprocess.Popen | None = None
        self.rss_peak: dict[str, int] = {}
        self.rss_label = "idle"
        self.metrics_url = ""
        self._sampling = threading.Event()
        self.last_baseline: Series | None = None  # of the size being measured

    # -- set-up

    def start_cluster(self) -> None:
        nodes = self.tmp / "nodes.json"  # JSON is YAML to the node agent
        nodes.write_text(json.dumps(NODES))
        print(f"starting a dev cluster in {self.cluster_dir}", flush=True)
        self.state = controlplane.start(self.cluster_dir, nodes_config=nodes, image_map=IMAGE_MAP)
        files = sorted(CRDS.glob("*.yaml"))
        for crd in files:
            controlplane.kubectl(self.state, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
        controlplane.wait_for_crds(self.state, files)
        self.api = controlplane.api_client(self.state.kubeconfig, CREATE_THREADS * 2 + 4)  # creators and the watches

    def start_operator(self, timeout: float = 90) -> None:
        health, metrics_port = controlplane.free_port(), controlplane.free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.state.kubeconfig),
            "FINETUNE_METRICS_PORT": str(metrics_port),
            "FINETUNE_HEALTH_PORT": str(health),
            # The jobs write under <tmp>/out (node paths): the only ones this operator may mount.
            "FINETUNE_ALLOWED_HOST_PATHS": str(self.tmp / "out"),
            "PYTHONPATH": os.pathsep.join(str(REPO_ROOT / p) for p in ("operator", "trainer-image", "hack")),
        }
        log = self.cluster_dir / "logs" / "operator.log"
        with open(log, "ab") as out:
            self.operator = subprocess.Popen(
                [sys.executable, "-m", "finetune_operator"], env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except Exception:
                pass
            if self.operator.poll() is not None:
                raise RuntimeError(f"the operator exited ({self.operator.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the operator was not healthy after {timeout:.0f}s; see {log}")
            time.sleep(0.5)
        threading.Thread(target=self._sample_rss, daemon=True).start()
        print(f"operator pid {self.operator.pid}, log {log}", flush=True)

    def _sample_rss(self) -> None:
        import psutil

        process = psutil.Process(self.operator.pid)
        while not self._sampling.wait(0.2):
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                return
            for label in (self.rss_label, "overall"):
                self.rss_peak[label] = max(self.rss_peak.get(label, 0), rss)

    def api_requests(self) -> dict[tuple[str, str, str], float]:
        """The operator's request counter: (verb, resource, code) -> requests so far."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        return {
            (s.labels["verb"], s.labels["resource"], s.labels["code"]): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "finetune_operator_api_requests_total"
        }

    def vm_hwm(self) -> int | None:
        """The operator's peak resident set size (bytes), as the kernel counted it."""
        try:
            for line in Path(f"/proc/{self.operator.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def wait_finished(self, namespace: str, names: list[str], timeout: float) -> int:
        """Until every FineTuneJob is Succeeded or Failed (or `timeout`); how many are."""
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        deadline = time.monotonic() + timeout
        wanted = set(names)
        while True:
            try:
                items = _list_pages(custom, namespace)
            except Exception as exc:  # noqa: BLE001 - a LIST on a loaded API server may time out (504) or break off
                if time.monotonic() > deadline:
                    raise
                print(f"  listing FineTuneJobs: {exc}; again in 5s", flush=True)
                time.sleep(5)
                continue
            done = {
                item["metadata"]["name"]
                for item in items
                if (item.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            }
            if wanted <= done or time.monotonic() > deadline:
                return len(wanted & done)
            time.sleep(1)

    def wait_versions_settled(self, namespace: str, expected: int, timeout: float) -> int:
        """Until the ModelVersions the FineTuneJobs registered have their artifact check's verdict
        (condition ArtifactVerified): the registration's tail, which runs after a job finished.
        Returns how many have it."""
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        deadline = time.monotonic() + timeout
        while True:
            try:
                items = _list_pages(custom, namespace, plural="modelversions")
            except Exception as exc:  # noqa: BLE001 - as in wait_finished
                if time.monotonic() > deadline:
                    raise
                print(f"  listing ModelVersions: {exc}; again in 5s", flush=True)
                time.sleep(5)
                continue
            settled = sum(
                1 for item in items
                if any(c.get("type") == "ArtifactVerified" for c in (item.get("status") or {}).get("conditions") or [])
            )
            if settled >= expected or time.monotonic() > deadline:
                return settled
            time.sleep(2)

    def namespace(self, prefix: str) -> str:
        from kubernetes import client

        name = f"{prefix}-{os.urandom(3).hex()}"
        core = client.CoreV1Api(self.api)
        core.create_namespace({"metadata": {"name": name}})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items):
                return name
            time.sleep(0.2)
        raise RuntimeError(f"no default ServiceAccount in {name} after 60s")

    def create_all(self, create, bodies: list[dict]) -> None:
        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(create, bodies))

    def drop_namespace(self, name: str, timeout: float = 120) -> None:
        """Deletes the FineTuneJobs first (the operator releases its finalizer on each), then
        the namespace, and waits, so one size's clean-up does not load the next measurement."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        core, custom = client.CoreV1Api(self.api), client.CustomObjectsApi(self.api)
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, name, PLURAL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not custom.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL, limit=1)["items"]:
                break
            time.sleep(1)
        core.delete_namespace(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                core.read_namespace(name)
            except ApiException as exc:
                if exc.status == 404:
                    return
            time.sleep(1)
        print(f"  (namespace {name} still terminating after {timeout:.0f}s; going on)", flush=True)

    # -- the two measurements

    def baseline(self, size: int) -> Series:
        """N plain Jobs -> their Pods: the Job controller's own latency."""
        from kubernetes import client

        batch, core = client.BatchV1Api(self.api), client.CoreV1Api(self.api)
        ns = self.namespace(f"bench-jobs-{size}")
        jobs = ArrivalLog(_json_list(batch.list_namespaced_job), ns)
        pods = ArrivalLog(_json_list(core.list_namespaced_pod), ns)
        for log in (jobs, pods):
            log.start()
        names = [f"job-{i:05d}" for i in range(size)]
        bodies = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name},
                "spec": {
                    "backoffLimit": 0,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}},
                },
            }
            for name in names
        ]
        self.create_all(lambda body: batch.create_namespaced_job(ns, body), bodies)
        # Pods are named <job>-<random>: match them to their Job by name prefix.
        wanted = set(names)
        deadline = time.monotonic() + self.args.timeout + size
        while time.monotonic() < deadline:
            with pods.changed:
                if len(_pods_by_job(dict(pods.seen), wanted)) == size:
                    break
            time.sleep(0.2)
        series = Series("Job -> Pod (baseline)", size)
        with pods.changed:
            matched = _pods_by_job(dict(pods.seen), wanted)
        for job, pod in matched.items():
            if job in jobs.seen:
                series.watched.append(pods.seen[pod] - jobs.seen[job])
                series.by_creation.append(parse_time(pods.created[pod]) - parse_time(jobs.created[job]))
        for log in (jobs, pods):
            log.stop()
        _report_gaps(size, {"Jobs": jobs, "Pods": pods})
        self.drop_namespace(ns)
        self.last_baseline = series
        return series

    def operator_run(self, size: int) -> tuple[Series, Series, Requests]:
        from kubernetes import client

        batch, custom = client.BatchV1Api(self.api), client.CustomObjectsApi(self.api)
        ns = self.namespace(f"bench-ftj-{size}")
        ftjs = ArrivalLog(_json_list(_custom_list(custom)), ns)
        jobs = ArrivalLog(_json_list(batch.list_namespaced_job), ns)
        ftjs.start()
        jobs.start()
        data = self.tmp / "data.jsonl"
        if not data.exists():
            record = {"messages": [{"role": "user", "content": "Revenue was $1 billion."}, {"role": "assistant", "content": "{}"}]}
            data.write_text("".join(json.dumps(record) + "\n" for _ in range(10)))
        names = [f"ftj-{i:05d}" for i in range(size)]
        bodies = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "FineTuneJob",
                "metadata": {"name": name},
                "spec": {
                    "baseModel": {"uri": "/models/bench"},  # never read by the no-op trainer
                    "dataset": {"uri": str(data), "format": "chat"},
                    "hyperparameters": {"maxSteps": 5},
                    "resources": {"gpusPerNode": 0},
                    "image": self.args.image,
                    "output": {"uri": str(self.tmp / "out" / ns / name)},
                    "evaluation": {"enabled": False},
                },
            }
            for name in names
        ]
        requests = Requests(size)
        before = self.api_requests()
        self.create_all(lambda body: custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body), bodies)
        jobs.wait_for({f"{n}-{self.args.until}" for n in names}, self.args.timeout + size, self.args.stall)
        results = []
        for suffix in ("prepare", "train"):
            series = Series(f"FineTuneJob -> {suffix} Job", size)
            for name in names:
                job = f"{name}-{suffix}"
                if name in ftjs.seen and job in jobs.seen:
                    series.watched.append(jobs.seen[job] - ftjs.seen[name])
                    series.by_creation.append(parse_time(jobs.created[job]) - parse_time(ftjs.created[name]))
            results.append(series)
        ftjs.stop()
        jobs.stop()
        _report_gaps(size, {"FineTuneJobs": ftjs, "Jobs": jobs})
        baseline = self.last_baseline
        print_table([(size, results[0], baseline), (size, results[1], baseline)], {}, [])  # before anything else can fail
        requests.finished = self.wait_finished(ns, names, self.args.timeout + size)
        # Each job registered a ModelVersion whose artifact check runs after the job finished:
        # part of the lifecycle, and not steady state while it runs.
        requests.versions_settled = self.wait_versions_settled(ns, requests.finished, self.args.timeout + size)
        after = self.api_requests()
        requests.lifecycle = _total(after) - _total(before)
        if self.args.steady > 0:
            time.sleep(5)  # the last finishing reconciles and their child events settle
            start, started = self.api_requests(), time.monotonic()
            print(f"  all {requests.finished}/{size} finished, {requests.versions_settled} versions checked; "
                  f"steady state for {self.args.steady:.0f}s ...", flush=True)
            time.sleep(self.args.steady)
            end, elapsed = self.api_requests(), time.monotonic() - started
            requests.steady_rate = (_total(end) - _total(start)) / elapsed
            requests.steady_by_kind = {
                key: (value - start.get(key, 0)) / elapsed for key, value in end.items() if value > start.get(key, 0)
            }
        print_table([], {}, [requests])  # before the clean-up, which a loaded API server may refuse
        try:
            self.drop_namespace(ns)
        except Exception as exc:  # noqa: BLE001 - a delete of 1000s may time out or break off; the cluster goes anyway
            print(f"  could not empty {ns} ({exc}); it stays until the cluster stops", flush=True)
        return results[0], results[1], requests

    # -- tear-down

    def stop(self) -> None:
        self._sampling.set()
        if self.operator is not None and self.operator.poll() is None:
            try:
                os.killpg(self.operator.pid, signal.SIGTERM)
                self.operator.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.operator.pid, signal.SIGKILL)
                self.operator.wait()
            except ProcessLookupError:
                pass
        controlplane.stop(self.cluster_dir)
        if self.args.keep:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class Requests:
    """The operator's API requests during one size's FineTuneJobs."""

    size: int
    finished: int = 0
    lifecycle: float = 0.0  # requests from the first create until all finished and their versions checked
    versions_settled: int = 0  # ModelVersions with their artifact check's verdict
    steady_rate: float | None = None  # requests per second with all finished
    steady_by_kind: dict[tuple[str, str, str], float] = field(default_factory=dict)


def _list_pages(custom, namespace: str, limit: int = 200, plural: str = PLURAL) -> list[dict]:
    """Every FineTuneJob (or `plural`) of the namespace, listed `limit` at a time (one LIST of
    1000s is megabytes that a loaded API server may not finish in time)."""
    items: list[dict] = []
    token = None
    while True:
        kwargs = {"limit": limit, **({"_continue": token} if token else {})}
        page = json.loads(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, _preload_content=False, **kwargs).data)
        items.extend(page["items"])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


def _total(counts: dict[tuple[str, str, str], float]) -> float:
    return sum(counts.values())


def _report_gaps(size: int, logs: dict[str, ArrivalLog]) -> None:
    gaps = {what: log.gaps for what, log in logs.items() if log.gaps}
    if gaps:
        print(f"  N={size}: the watch of " + ", ".join(f"{what} fell behind {n} time(s)" for what, n in gaps.items())
              + "; a list filled each gap (latencies across one are upper bounds)", flush=True)


def _json_list(list_fn):
    """A list function that returns parsed JSON (cheaper than the client's models at 1000s).

    It has no docstring on purpose: kubernetes.watch reads the type to deserialize events into
    from the list function's docstring, and with none it leaves them as plain dicts.
    """

    def call(*args, **kwargs):
        if kwargs.get("watch"):
            return list_fn(*args, **kwargs)
        kwargs["_preload_content"] = False
        return json.loads(list_fn(*args, **kwargs).data)

    return call


def _custom_list(custom):
    def list_finetunejobs(namespace, **kwargs):  # no docstring: see _json_list
        return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs)

    return list_finetunejobs


def _pods_by_job(pods_seen: dict[str, float], jobs: set[str]) -> dict[str, str]:
    """Job name -> its first Pod (Pods are named `<job>-<5 random characters>`)."""
    found: dict[str, str] = {}
    for pod in sorted(pods_seen, key=pods_seen.get):
        job = pod.rsplit("-", 1)[0]
        if job in jobs:
            found.setdefault(job, pod)
    return found


# --------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def print_table(
    rows: list[tuple[int, Series, Series | None]], rss: dict[str, int], requests: list[Requests] = (), hwm: int | None = None
) -> None:
    header = (
        f"{'N':>5}  {'latency':<27} {'n':>9}  {'p50':>9} {'p99':>9} {'max':>9}  {'p50 / baseline':>14}  "
        f"{'p99 / baseline':>14}  {'creationTimestamp p50/max':>25}"
    )
    print()
    print(header)
    print("-" * len(header))
    for size, series, baseline in rows:
        p50 = percentile(series.watched, 50)
        base = percentile(baseline.watched, 50) if baseline else None
        ratio = f"x{p50 / base:.1f}" if (p50 is not None and base and base > 0) else "-"
        p99, base99 = percentile(series.watched, 99), (percentile(baseline.watched, 99) if baseline else None)
        ratio99 = f"x{p99 / base99:.1f}" if (p99 is not None and base99 and base99 > 0) else "-"
        created = (
            f"{percentile(series.by_creation, 50):.0f} s / {max(series.by_creation):.0f} s" if series.by_creation else "-"
        )
        print(
            f"{size:>5}  {series.label:<27} {f'{len(series.watched)}/{series.expected}':>9}  {_ms(p50):>9} "
            f"{_ms(percentile(series.watched, 99)):>9} {_ms(max(series.watched) if series.watched else None):>9}  "
            f"{ratio:>14}  {ratio99:>14}  {created:>25}"
        )
    print()
    for label in sorted(rss, key=lambda k: (k == "overall", k)):
        print(f"operator peak RSS ({label}): {rss[label] / 2**20:.1f} MiB")
    if hwm is not None:
        print(f"operator peak RSS (VmHWM, whole run): {hwm / 2**20:.1f} MiB")
    if requests:
        print()
        print(f"{'N':>5}  {'finished':>9}  {'API requests / FineTuneJob lifecycle':>36}  {'steady-state API requests/s (all finished)':>42}")
        for r in requests:
            steady = f"{r.steady_rate:.2f}" if r.steady_rate is not None else "-"
            per_job = f"{r.lifecycle / r.size:.1f}" if r.size else "-"
            print(f"{r.size:>5}  {f'{r.finished}/{r.size}':>9}  {per_job:>36}  {steady:>42}")
        for r in requests:
            if r.steady_by_kind:
                top = sorted(r.steady_by_kind.items(), key=lambda kv: -kv[1])[:6]
                print(f"  N={r.size} steady state by verb/resource/code: " + ", ".join(f"{v} {res} {c}: {rate:.2f}/s" for (v, res, c), rate in top))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100", help="comma-separated numbers of FineTuneJobs (default 1,100; e.g. 1,100,1000)")
    parser.add_argument("--image", default=NOOP_IMAGE, help="trainer image of the FineTuneJobs (default the no-op trainer)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait per size, plus one per object (default 120)")
    parser.add_argument("--stall", type=float, default=60, help="stop waiting when no new Job appeared for this long (default 60)")
    parser.add_argument("--steady", type=float, default=60, help="seconds of steady-state request counting with all FineTuneJobs finished (default 60; 0 skips it)")
    parser.add_argument("--until", choices=("prepare", "train"), default="train",
                        help="measure until every prepare Job or every train Job exists (default train; "
                             "prepare measures the operator's own reaction alone, without the prepare Pods' run)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (cluster logs, Pod logs)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    def interrupted(signum, frame):
        raise KeyboardInterrupt  # so `finally` stops the cluster and the operator

    signal.signal(signal.SIGTERM, interrupted)
    bench = Bench(args)
    rows: list[tuple[int, Series, Series | None]] = []
    requests: list[Requests] = []
    try:
        bench.start_cluster()
        bench.start_operator()
        for size in sizes:
            print(f"size {size}: {size} plain Jobs (baseline) ...", flush=True)
            bench.rss_label = f"N={size}"
            baseline = bench.baseline(size)
            print(f"size {size}: {size} FineTuneJobs ...", flush=True)
            prepare, train, counted = bench.operator_run(size)
            rows += [(size, baseline, None), (size, prepare, baseline), (size, train, baseline)]
            requests.append(counted)
            print_table(rows[-3:], {}, [counted])  # each size's figures as soon as they are measured
            missing = size - len(train.watched)
            if missing:
                print(f"  {missing} of {size} FineTuneJobs got no train Job in time "
                      f"({size - len(prepare.watched)} no prepare Job); see the operator log", flush=True)
        print_table(rows, bench.rss_peak, requests, bench.vm_hwm())
        return 0
    except KeyboardInterrupt:
        print_table(rows, bench.rss_peak, requests, bench.vm_hwm())
        return 130
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
