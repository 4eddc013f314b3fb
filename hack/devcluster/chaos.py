"""Chaos on the dev cluster: kill the operator (or a piece of the cluster) anywhere, then check
that nothing a platform team relies on broke.

Used by tests/chaos (a few kills, in `make test`) and benchmarks/chaos.py (a hundred). Parts:

* `restart_component`: kill one process of the dev cluster (kube-apiserver, the node agent, ...)
  and start it again with the same command line and environment, read back from /proc.
* `Operator`: the operator as a real process (`python -m finetune_operator`) watching the given
  namespaces, that can be SIGKILLed (as an OOM kill or a node crash would) and started again.
* `serve`: `python -m devcluster.chaos serve --bind IP --port N`, a serving stand-in for Rollouts
  that answers /health and OpenAI-style requests with no model, so serving Pods start in a
  fraction of a second (`SERVING_COMMAND`).
* `Round`: one pipeline, from `kubectl apply` of FineTuneJobs (the no-op trainer image) through
  data preparation, training, evaluation and registration to a Rollout walking its canary steps,
  promoting, rolling a bad version back on analysis and rolling back to a pinned version, with
  the operator SIGKILLed at seeded random points along the way (`KillPlan`), while `Recorder`
  watches every object the pipeline touches.
* `check`: the invariants of DESIGN.md section 6 read back from the API server, the recorded
  history and the filesystem: every FineTuneJob ended exactly once; no duplicate Jobs or
  ModelVersions; every registered artifact exists with its digest; no refused version ever had
  traffic; the Rollout ended where it would have ended without kills.

The versions are judged deterministically: v3 is trained by the `:unsafe` no-op image, so its
safety gate rejects it; the Rollout's analysis is a Prometheus query that fails for v4 alone
(`BAD_VERSIONS`) and passes for every other candidate, so where the Rollout ends never depends on
timing, only on whether the operator kept its promises.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import certs, controlplane

REPO_ROOT = Path(__file__).resolve().parents[2]
NOOP_IMAGE = "ghcr.io/finetune-operator/trainer-noop:0.1.0"
UNSAFE_IMAGE = "ghcr.io/finetune-operator/trainer-noop:unsafe"
SERVING_COMMAND = ["python", "-m", "devcluster.chaos", "serve", "--bind", "$(POD_IP)", "--port", "$(PORT)",
                   "--version", "$(MODEL_VERSION)"]
GROUP, API_VERSION = "finetune.ai", "finetune.ai/v1alpha1"
TERMINAL = ("Succeeded", "Failed")
DEFAULT_WAIT = 120.0


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- cluster components


def _proc_argv(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def _proc_env(pid: int) -> dict[str, str]:
    pairs = (item.decode(errors="replace").partition("=") for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def _component_ready(state: controlplane.ClusterState, name: str, log_size: int) -> Callable[[], bool]:
    if name == "kube-apiserver":
        pki = certs.Pki(state.path / "pki")
        return lambda: controlplane._https_ok(f"{state.server}/readyz", pki)
    if name == "node-agent":
        # Ready once the new agent registered its nodes and watches Pods (its log says so).
        logfile = state.path / "logs" / "node-agent.log"
        return lambda: b"watching pods" in logfile.read_bytes()[log_size:]
    if name == "etcd":
        return lambda: controlplane._http_ok(f"http://127.0.0.1:{state.etcd_port}/health")
    port = {"kube-controller-manager": state.controller_manager_port, "kube-scheduler": state.scheduler_port}[name]
    return lambda: controlplane._https_ok(f"https://127.0.0.1:{port}/healthz", None)


def restart_component(state: controlplane.ClusterState, name: str, *, sig: int = signal.SIGKILL,
                      down_seconds: float = 0.0, timeout: float = 90.0) -> float:
    """Kill one dev cluster process (`state.pids[name]`) with `sig` and start it again, with the
    same command line and environment; returns the seconds until it was ready again.

    SIGKILL is a crash. The node agent is better stopped with SIGTERM: it then kills its Pods'
    processes as it goes (a node that reboots), where a SIGKILLed agent would leave them running
    unwatched. `state` is updated (and saved) with the new pid, so stopping the cluster stops it.
    """
    pid = state.pids[name]
    argv, env = _proc_argv(pid), _proc_env(pid)
    logfile = state.path / "logs" / f"{name}.log"
    started = time.monotonic()
    os.killpg(pid, sig)
    deadline = time.monotonic() + 30
    while controlplane._alive(pid):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
        time.sleep(0.05)
    if down_seconds:
        time.sleep(down_seconds)
    size = logfile.stat().st_size if logfile.exists() else 0
    controlplane._spawn(state, name, argv, env=env)
    controlplane._wait(state, name, _component_ready(state, name, size), timeout)
    return time.monotonic() - started


# --------------------------------------------------------------------------- the operator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Operator:
    """`python -m finetune_operator` against the dev cluster, watching `namespaces`."""

    def __init__(self, kubeconfig: str | Path, log_path: Path, namespaces: Iterable[str] = (),
                 env: Mapping[str, str] | None = None):
        self.kubeconfig = str(kubeconfig)
        self.log_path = Path(log_path)
        self.namespaces = list(namespaces)
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.health_url = ""
        self.starts = 0

    def _env(self) -> dict[str, str]:
        source = [str(REPO_ROOT / d) for d in ("operator", "trainer-image", "hack")]
        pythonpath = os.pathsep.join(source + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        health = _free_port()
        self.health_url = f"http://127.0.0.1:{health}/healthz"
        return {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "PYTHONPATH": pythonpath,
            "FINETUNE_WATCH_NAMESPACES": ",".join(self.namespaces),
            "FINETUNE_LOG_FORMAT": "text",
            "FINETUNE_LOG_LEVEL": "INFO",
            "FINETUNE_METRICS_HOST": "127.0.0.1",
            "FINETUNE_METRICS_PORT": str(_free_port()),
            "FINETUNE_HEALTH_HOST": "127.0.0.1",
            "FINETUNE_HEALTH_PORT": str(health),
            "FINETUNE_PEERING": "off",
            **self.extra_env,
        }

    def start(self, timeout: float = 90.0) -> Operator:
        env = self._env()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"\n===== operator start {self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.process = subprocess.Popen([sys.executable, "-m", "finetune_operator"], env=env, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the operator was not healthy after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, as in an OOM kill or a node crash."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 120) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- serving stand-in


class _ServeHandler(BaseHTTPRequestHandler):
    version_name = ""

    def _reply(self, code: int, body: dict | str, content_type: str = "application/json") -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/health"):
            self._reply(200, {"status": "ok", "version": self.version_name})
        elif self.path.startswith("/metrics"):
            self._reply(200, "", "text/plain; version=0.0.4")
        else:
            self._reply(200, {"object": "list", "data": [{"id": "base"}]})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._reply(200, {"object": "text_completion", "model": self.version_name,
                          "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}]})

    def log_message(self, *args: Any) -> None:
        pass


def serve(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.chaos serve")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", default="")
    args = parser.parse_args(argv)
    handler = type("Handler", (_ServeHandler,), {"version_name": args.version})
    server = ThreadingHTTPServer((args.bind, args.port), handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"serving {args.version} on {args.bind}:{args.port}", flush=True)
    server.serve_forever()
    return 0


# --------------------------------------------------------------------------- recording


@dataclasses.dataclass
class Change:
    """One watch event, as it arrived."""

    time: float
    kind: str
    type: str
    name: str
    uid: str
    obj: dict


class Recorder:
    """Watches the pipeline's objects in one namespace and keeps every event with its arrival time.

    Each change also becomes a *stage* label when it moves the pipeline (`ftj/<name>/<phase>`,
    `register/<version>`, `canary/<version>/step<i>`, `promote/<version>`, `rollback/<version>`,
    `rollout/<phase>`); listeners hear each label once, in arrival order.
    """

    CUSTOM = {"FineTuneJob": "finetunejobs", "ModelVersion": "modelversions", "Rollout": "rollouts"}

    def __init__(self, api_client, namespace: str, *, httproute: bool):
        self.api = api_client
        self.namespace = namespace
        self.httproute = httproute
        self.changes: list[Change] = []
        self.stages: list[tuple[float, str]] = []
        self._seen_stages: set[str] = set()
        self._last: dict[tuple[str, str], dict] = {}
        self.listeners: list[Callable[[str], None]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _sources(self) -> dict[str, Callable[..., Any]]:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        sources: dict[str, Callable[..., Any]] = {}
        for kind, plural in self.CUSTOM.items():
            sources[kind] = (lambda plural=plural, **kw: custom.list_namespaced_custom_object(GROUP, "v1alpha1", self.namespace, plural, **kw))
        batch, core, apps = client.BatchV1Api(self.api), client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        sources["Job"] = lambda **kw: batch.list_namespaced_job(self.namespace, _preload_content=False, **kw)
        sources["Service"] = lambda **kw: core.list_namespaced_service(self.namespace, _preload_content=False, **kw)
        sources["Deployment"] = lambda **kw: apps.list_namespaced_deployment(self.namespace, _preload_content=False, **kw)
        if self.httproute:
            sources["HTTPRoute"] = lambda **kw: custom.list_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", **kw)
        return sources

    def start(self) -> Recorder:
        ready = []
        for kind, lister in self._sources().items():
            started = threading.Event()
            thread = threading.Thread(target=self._watch, args=(kind, lister, started), daemon=True, name=f"watch-{kind}")
            thread.start()
            self._threads.append(thread)
            ready.append(started)
        for started in ready:
            started.wait(30)
        return self

    def stop(self) -> None:
        self._stop.set()

    def _list(self, lister) -> dict:
        result = lister()
        return json.loads(result.data) if hasattr(result, "data") else result

    def _watch(self, kind: str, lister, started: threading.Event) -> None:
        from kubernetes import watch

        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listing = self._list(lister)
                    for obj in listing.get("items") or []:
                        self._record(kind, "ADDED", obj)
                    version = listing["metadata"]["resourceVersion"]
                    started.set()
                stream = watch.Watch()
                for event in stream.stream(lister, resource_version=version, timeout_seconds=20, allow_watch_bookmarks=True):
                    if self._stop.is_set():
                        stream.stop()
                        return
                    obj = event["raw_object"]
                    if event["type"] == "ERROR":
                        version = None  # expired: list again
                        break
                    version = obj["metadata"].get("resourceVersion", version)
                    if event["type"] != "BOOKMARK":
                        self._record(kind, event["type"], obj)
            except Exception:  # noqa: BLE001 - the API server may be down (chaos); list again
                version = None
                self._stop.wait(0.5)

    def _record(self, kind: str, type: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        change = Change(time.time(), kind, type, meta.get("name", ""), meta.get("uid", ""), obj)
        key = (kind, change.name)
        with self.lock:
            last = self._last.get(key)
            if type == "ADDED" and last is not None and last["metadata"].get("resourceVersion") == meta.get("resourceVersion"):
                return  # the same object again after a relist
            self.changes.append(change)
            self._last[key] = obj
            labels = self._stage_labels(kind, type, obj, last)
            fresh = [label for label in labels if label not in self._seen_stages]
            self._seen_stages.update(fresh)
            self.stages.extend((change.time, label) for label in fresh)
        for label in fresh:
            for listener in list(self.listeners):
                listener(label)

    @staticmethod
    def _stage_labels(kind: str, type: str, obj: dict, last: dict | None) -> list[str]:
        status = obj.get("status") or {}
        before = (last or {}).get("status") or {}
        name = obj["metadata"].get("name", "")
        if kind == "FineTuneJob" and status.get("phase"):
            return [f"ftj/{name}/{status['phase']}"]
        if kind == "ModelVersion":
            version = (obj.get("spec") or {}).get("version", name)
            return [f"register/{version}"] + ([f"{version}/{status['phase']}"] if status.get("phase") else [])
        if kind == "Rollout":
            labels = []
            if status.get("candidateVersion") and status.get("currentStepIndex") is not None:
                labels.append(f"canary/{status['candidateVersion']}/step{status['currentStepIndex']}")
            history, old = status.get("history") or [], before.get("history") or []
            for entry in history[len(old):] if len(history) > len(old) else []:
                labels.append(f"{entry.get('action')}/{entry.get('to') if entry.get('action') == 'promote' else entry.get('from')}")
            if status.get("phase"):
                labels.append(f"rollout/{status['phase']}/{status.get('stableVersion')}")
            return labels
        return []

    def snapshot(self) -> list[Change]:
        with self.lock:
            return list(self.changes)


# --------------------------------------------------------------------------- kills


@dataclasses.dataclass
class Kill:
    stage: str
    delay: float
    down: float
    at: float = 0.0
    restarted_at: float = 0.0


class KillPlan:
    """Which stages of a round the operator dies at: `kills` of the first `expected_stages` stage
    labels, chosen with `seed`, each after a random delay (mid-reconcile, or once it settled) and
    with a random time down before it starts again.

    The labels are split into `kills` equal stretches and one is drawn in each, so that even a
    few kills land all along the pipeline (data, training, evaluation, registration, canary,
    promotion, rollback) rather than bunched in one part of it.
    """

    def __init__(self, seed: int, kills: int, expected_stages: int, max_delay: float = 1.5, max_down: float = 1.0):
        rng = random.Random(seed)
        self.seed = seed
        kills = min(kills, expected_stages)
        indices = [rng.randrange(i * expected_stages // kills, (i + 1) * expected_stages // kills) for i in range(kills)]
        self.slots = {i: (round(rng.uniform(0, max_delay), 3), round(rng.uniform(0, max_down), 3)) for i in indices}

    def describe(self) -> str:
        return f"seed {self.seed}: stage indices {sorted(self.slots)}"


class Killer:
    """Hears stage labels; at a planned one, SIGKILLs the operator and starts it again.

    `operator` is anything with `kill()` (SIGKILL, waits for the exit) and `start()` (returns once
    the operator is healthy): `Operator` here, or the test suite's process fixture.
    """

    def __init__(self, operator: Any, plan: KillPlan):
        self.operator = operator
        self.plan = plan
        self.kills: list[Kill] = []
        self.errors: list[str] = []
        self._count = 0
        self._queue: list[Kill] = []
        self._wake = threading.Condition()
        self._stop = False
        self.down = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="killer")
        self.lock = threading.Lock()

    def start(self) -> Killer:
        self._thread.start()
        return self

    def hear(self, label: str) -> None:
        with self._wake:
            slot = self.plan.slots.get(self._count)
            self._count += 1
            if slot is not None:
                self._queue.append(Kill(label, *slot))
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stop:
                    self._wake.wait()
                if self._stop and not self._queue:
                    return
                kill = self._queue.pop(0)
            time.sleep(kill.delay)
            with self.lock:
                kill.at = time.time()
                self.operator.kill()
                self.down = True
                log(f"SIGKILLed the operator {kill.delay:.2f}s after stage {kill.stage}; down {kill.down:.2f}s")
                time.sleep(kill.down)
                try:
                    self.operator.start()
                except BaseException as exc:  # noqa: BLE001 - reported by the round (pytest.fail is a BaseException)
                    self.errors.append(str(exc))
                    return
                self.down = False
                kill.restarted_at = time.time()
                self.kills.append(kill)

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=120)
        with self.lock:
            if self.down and not self.errors:
                self.operator.start()
                self.down = False


# --------------------------------------------------------------------------- one round


def model_version_name(model: str, version: str) -> str:
    return f"{model}-{version}"


BAD_VERSIONS = ("v4",)  # fail the Rollout's analysis
UNSAFE_VERSIONS = ("v3",)  # rejected by the safety gate at registration


def analysis_query(bad: Iterable[str] = BAD_VERSIONS) -> str:
    """1 when the canary is one of `bad`, else 0: a deterministic verdict, no scraping needed."""
    pattern = "|".join(bad)
    return (
        'count(label_replace(label_replace(vector(1), "v", "{{canary}}", "", ""), "v", "BAD", "v", "' + pattern + '")'
        ' and on(v) label_replace(vector(1), "v", "BAD", "", "")) or vector(0)'
    )


def finetunejob(name: str, model: str, output: Path, *, image: str = NOOP_IMAGE, base: Path | str = "/models/base",
                **spec: Any) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": str(base)},
            "image": image,
            "dataset": {"uri": "/data/train.jsonl"},
            "resources": {"gpusPerNode": 1},
            "output": {"uri": str(output), "modelName": model},
            **spec,
        },
    }


def rollout(name: str, model: str, prometheus_url: str, *, httproute: bool, version: str | None = None) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "modelName": model,
            **({"version": version} if version else {"track": "LatestApproved"}),
            "scaleDownDelaySeconds": 0,
            "serving": {"type": "custom", "image": NOOP_IMAGE, "command": list(SERVING_COMMAND), "args": [],
                        "resources": {"gpus": 0}},
            "trafficRouter": {"gatewayAPI": {"httpRoute": name}} if httproute else {"replicaRatio": {}},
            "analysis": {
                "prometheus": {"address": prometheus_url},
                "metrics": [{"name": "chaos-verdict", "query": analysis_query(), "thresholds": {"max": 0.5},
                             "interval": "1s", "count": 2, "failureLimit": 0, "inconclusiveLimit": 5}],
            },
            "strategy": {"canary": {"steps": [{"setWeight": 30}, {"analysis": {}}, {"setWeight": 60},
                                              {"analysis": {}}, {"setWeight": 100}]}},
        },
    }


def httproute(name: str) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "inference-gateway"}], "hostnames": [f"{name}.example.internal"],
                 "rules": [{"backendRefs": [{"name": f"{name}-stable", "port": 8000, "weight": 100},
                                            {"name": f"{name}-canary", "port": 8000, "weight": 0}]}]},
    }


# The Rollout's history when every promise holds, kills or not.
EXPECTED_HISTORY = [("promote", "v1", "v2"), ("rollback", "v4", "v2"), ("rollback", "v2", "v1")]
EXPECTED_FINAL = {"phase": "RolledBack", "stableVersion": "v1", "candidateVersion": None}
JOBS = ("j1", "j2", "j3", "j4")
# Stage labels one round produces without kills, at least (kill slots are drawn from these).
EXPECTED_STAGES = 42


class Round:
    """One pipeline in `namespace`, with kills planned by `plan` (None: no kills)."""

    def __init__(self, api_client, namespace: str, workdir: Path, operator: Any, *, prometheus_url: str,
                 httproute: bool, plan: KillPlan | None, wait_timeout: float = DEFAULT_WAIT):
        from kubernetes import client

        self.api = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.workdir = Path(workdir)
        self.operator = operator
        self.prometheus_url = prometheus_url
        self.httproute = httproute
        self.plan = plan
        self.timeout = wait_timeout
        self.model = "chaos-model"
        self.rollout_name = "chaos"
        self.recorder = Recorder(api_client, namespace, httproute=httproute)
        self.killer = Killer(operator, plan) if plan is not None and plan.slots else None
        self.started = self.finished = 0.0

    # -- API helpers

    def create(self, obj: dict) -> None:
        group, version = obj["apiVersion"].split("/")
        plural = {"FineTuneJob": "finetunejobs", "Rollout": "rollouts", "HTTPRoute": "httproutes"}[obj["kind"]]
        self.custom.create_namespaced_custom_object(group, version, self.namespace, plural, obj)

    def get(self, plural: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, "v1alpha1", self.namespace, plural, name)

    def wait(self, check: Callable[[], Any], what: str) -> Any:
        from kubernetes.client.rest import ApiException

        deadline = time.monotonic() + self.timeout
        last: Any = None
        while True:
            if self.killer is not None and self.killer.errors:
                raise AssertionError(f"the operator did not come back after a kill: {self.killer.errors[0]}")
            try:
                last = check()
            except ApiException as exc:  # the object is not there yet
                last = f"{exc.status} {exc.reason}"
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                ro = self._rollout_status()
                raise AssertionError(f"timed out after {self.timeout:.0f}s waiting for {what}; last seen {last!r}; "
                                     f"rollout status {json.dumps(ro)[:1500]}\noperator log:\n{self.operator.log_tail(60)}")
            time.sleep(0.25)

    def _rollout_status(self) -> dict:
        try:
            return self.get("rollouts", self.rollout_name).get("status") or {}
        except Exception:  # noqa: BLE001 - only for the failure message
            return {}

    def ftj_done(self, name: str) -> dict | None:
        status = self.get("finetunejobs", name).get("status") or {}
        return status if status.get("phase") in TERMINAL else None

    def rollout_is(self, phase: str, stable: str) -> dict | None:
        status = self._rollout_status()
        return status if status.get("phase") == phase and status.get("stableVersion") == stable \
            and not status.get("candidateVersion") else None

    # -- the pipeline

    def run(self) -> None:
        self.started = time.time()
        self.recorder.start()
        if self.killer is not None:
            self.recorder.listeners.append(self.killer.hear)
            self.killer.start()
            log(f"kill plan {self.plan.describe()}")
        try:
            self._pipeline()
        finally:
            if self.killer is not None:
                self.killer.stop()
            self.finished = time.time()
            time.sleep(1.0)  # let the last watch events arrive
            self.recorder.stop()

    def _ftj(self, name: str, **kw: Any) -> None:
        # The serving Pods mount the base model's node directory: it must exist (the no-op
        # trainer and server never read it).
        base = self.workdir / "base"
        base.mkdir(parents=True, exist_ok=True)
        self.create(finetunejob(name, self.model, self.workdir / name, base=base, **kw))

    def _finished(self, name: str) -> None:
        status = self.wait(lambda: self.ftj_done(name), f"{name} to finish")
        if status["phase"] != "Succeeded":
            raise AssertionError(f"FineTuneJob {name} ended {status['phase']}: {status.get('message')}")

    def _pipeline(self) -> None:
        ro = self.rollout_name
        if self.httproute:
            self.create(httproute(ro))
        self.create(rollout(ro, self.model, self.prometheus_url, httproute=self.httproute))
        # v1: the first version serves at once.
        self._ftj("j1")
        self._finished("j1")
        self.wait(lambda: self.rollout_is("Healthy", "v1"), "v1 to serve")
        # v2: a good candidate walks every step and is promoted; v3 meanwhile is refused at registration.
        self._ftj("j2")
        self._finished("j2")
        self._ftj("j3", image=UNSAFE_IMAGE)
        self._finished("j3")
        self.wait(lambda: self.rollout_is("Healthy", "v2"), "v2 to be promoted")
        # v4: the analysis fails it; all traffic back to v2.
        self._ftj("j4")
        self._finished("j4")
        self.wait(lambda: self.rollout_is("Degraded", "v2"), "v4 to be rolled back by analysis")
        # A declarative rollback: pin v1.
        self.custom.patch_namespaced_custom_object(GROUP, "v1alpha1", self.namespace, "rollouts", ro,
                                                   {"spec": {"version": "v1", "track": None}})
        self.wait(lambda: self.rollout_is("RolledBack", "v1"), "the pinned v1 to serve")


# --------------------------------------------------------------------------- invariants


@dataclasses.dataclass
class Report:
    namespace: str
    kills: int = 0
    finetunejobs: int = 0
    duplicates: list[str] = dataclasses.field(default_factory=list)
    lost_artifacts: list[str] = dataclasses.field(default_factory=list)
    refused_served: list[str] = dataclasses.field(default_factory=list)
    transitions: list[str] = dataclasses.field(default_factory=list)
    rollout: list[str] = dataclasses.field(default_factory=list)
    recovery_seconds: list[float] = dataclasses.field(default_factory=list)
    stages: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def violations(self) -> list[str]:
        return [*self.duplicates, *self.lost_artifacts, *self.refused_served, *self.transitions, *self.rollout]


def _status_changes(changes: list[Change]) -> list[Change]:
    """The changes that moved a FineTuneJob, ModelVersion or Rollout status (or created one)."""
    last: dict[tuple[str, str], Any] = {}
    moved = []
    for change in changes:
        if change.kind not in Recorder.CUSTOM:
            continue
        key = (change.kind, change.name)
        status = change.obj.get("status")
        if key not in last or last[key] != status:
            moved.append(change)
        last[key] = status
    return moved


def _events(api_client, namespace: str) -> list[dict]:
    from kubernetes import client

    return json.loads(client.CoreV1Api(api_client).list_namespaced_event(namespace, _preload_content=False).data)["items"]


def _route_traffic(changes: list[Change], rollout_name: str, refused: set[str]) -> list[str]:
    """Replays HTTPRoute weights and the stable/canary Services' selectors in arrival order; a
    refused version behind a backend with weight > 0 at any point is a violation."""
    weights: dict[str, int] = {}
    selected: dict[str, str | None] = {}
    found = []
    for change in changes:
        if change.kind == "HTTPRoute" and change.name == rollout_name and change.type != "DELETED":
            rules = (change.obj.get("spec") or {}).get("rules") or [{}]
            weights = {ref["name"]: ref.get("weight", 1) for ref in rules[0].get("backendRefs") or []}
        elif change.kind == "Service" and change.name in (f"{rollout_name}-stable", f"{rollout_name}-canary"):
            selector = (change.obj.get("spec") or {}).get("selector") or {}
            selected[change.name] = selector.get("finetune.ai/model-version")
        else:
            continue
        for service, weight in weights.items():
            if weight > 0 and selected.get(service) in refused:
                found.append(f"HTTPRoute {rollout_name}: backend {service} (version {selected[service]}) had weight {weight}")
    return found


def check(round_: Round) -> Report:
    """Every invariant of the round, from the API server, the recorded history and the files."""
    from kubernetes import client

    from finetune_trainer.artifacts import digest_files

    ns = round_.namespace
    changes = round_.recorder.snapshot()
    report = Report(namespace=ns, kills=len(round_.killer.kills) if round_.killer else 0,
                    stages=[label for _, label in round_.recorder.stages], seconds=round_.finished - round_.started)
    custom = round_.custom
    ftjs = custom.list_namespaced_custom_object(GROUP, "v1alpha1", ns, "finetunejobs")["items"]
    mvs = custom.list_namespaced_custom_object(GROUP, "v1alpha1", ns, "modelversions")["items"]
    report.finetunejobs = len(ftjs)
    events = _events(round_.api, ns)

    # -- every FineTuneJob ended exactly once
    for ftj in ftjs:
        name, uid = ftj["metadata"]["name"], ftj["metadata"]["uid"]
        status = ftj.get("status") or {}
        if status.get("phase") != "Succeeded":
            report.transitions.append(f"FineTuneJob {name} ended {status.get('phase')}: {status.get('message')}")
        phases = [c.obj.get("status", {}).get("phase") for c in changes if c.kind == "FineTuneJob" and c.uid == uid]
        phases = [p for i, p in enumerate(phases) if p and (i == 0 or p != phases[i - 1])]
        ended = [i for i, p in enumerate(phases) if p in TERMINAL]
        if ended and ended[0] != len(phases) - 1:
            report.transitions.append(f"FineTuneJob {name} left its terminal phase: {' -> '.join(phases)}")
        completions = {c.obj.get("status", {}).get("completionTime") for c in changes
                       if c.kind == "FineTuneJob" and c.uid == uid and c.obj.get("status", {}).get("completionTime")}
        if len(completions) > 1:
            report.transitions.append(f"FineTuneJob {name} finished more than once: completionTime {sorted(completions)}")
        mine = [e for e in events if e["involvedObject"].get("uid") == uid]
        for reason in ("Accepted", "Preparing", "Training", "Evaluating", "Registered", "Succeeded", "Failed"):
            count = sum(int(e.get("count") or 1) for e in mine if e["reason"] == reason)
            if count > 1:
                report.transitions.append(f"FineTuneJob {name}: Event {reason} recorded {count} times")
        terminal = sum(int(e.get("count") or 1) for e in mine if e["reason"] in TERMINAL)
        if terminal != 1:
            report.transitions.append(f"FineTuneJob {name}: {terminal} terminal Events (Succeeded/Failed), expected exactly 1")

    # -- no duplicate Jobs or ModelVersions
    jobs_seen: dict[str, set[str]] = {}
    for c in changes:
        if c.kind == "Job":
            jobs_seen.setdefault(c.name, set()).add(c.uid)
    for name, uids in sorted(jobs_seen.items()):
        if len(uids) > 1:
            report.duplicates.append(f"Job {name} was created {len(uids)} times")
    batch = client.BatchV1Api(round_.api)
    for ftj in ftjs:
        name = ftj["metadata"]["name"]
        owned = sorted(j.metadata.name for j in batch.list_namespaced_job(ns, label_selector=f"finetune.ai/finetunejob={name}").items)
        expected = sorted([f"{name}-prepare", f"{name}-train", f"{name}-eval-1"])
        if owned != expected:
            report.duplicates.append(f"FineTuneJob {name} has Jobs {owned}, expected {expected}")
        registered = [mv["metadata"]["name"] for mv in mvs
                      if (mv["metadata"].get("labels") or {}).get("finetune.ai/finetunejob-uid") == ftj["metadata"]["uid"]
                      or (mv.get("spec", {}).get("lineage") or {}).get("fineTuneJob") == name]
        if len(registered) != 1:
            report.duplicates.append(f"FineTuneJob {name} registered {len(registered)} ModelVersions: {registered}")
    mv_seen: dict[str, set[str]] = {}
    for c in changes:
        if c.kind == "ModelVersion":
            mv_seen.setdefault(c.name, set()).add(c.uid)
    for name, uids in sorted(mv_seen.items()):
        if len(uids) > 1:
            report.duplicates.append(f"ModelVersion {name} was created {len(uids)} times")

    # -- every registered artifact exists with its digest
    for mv in mvs:
        artifact = mv["spec"]["artifact"]
        path = Path(artifact["uri"].removeprefix("file://"))
        if not path.is_dir():
            report.lost_artifacts.append(f"ModelVersion {mv['metadata']['name']}: artifact {path} is missing")
            continue
        digest = digest_files(path)
        if digest != artifact.get("digest"):
            report.lost_artifacts.append(f"ModelVersion {mv['metadata']['name']}: {path} has digest {digest}, registered {artifact.get('digest')}")

    # -- no refused version ever received traffic
    refused = {mv["spec"]["version"] for mv in mvs if (mv.get("status") or {}).get("phase") == "Rejected"}
    refused_expected = set(UNSAFE_VERSIONS)
    if refused != refused_expected:
        report.rollout.append(f"refused versions {sorted(refused)}, expected {sorted(refused_expected)}")
    refused |= refused_expected
    for c in changes:
        if c.kind == "Rollout":
            s = c.obj.get("status") or {}
            if s.get("stableVersion") in refused:
                report.refused_served.append(f"Rollout {c.name}: refused {s['stableVersion']} was stable")
            if s.get("candidateVersion") in refused and (s.get("canaryWeight") or 0) > 0:
                report.refused_served.append(f"Rollout {c.name}: refused {s['candidateVersion']} had weight {s['canaryWeight']}")
        if c.kind == "Deployment" and c.type == "ADDED" and (c.obj["metadata"].get("labels") or {}).get("finetune.ai/model-version") in refused:
            report.refused_served.append(f"Deployment {c.name} was created to serve a refused version")
    report.refused_served += _route_traffic(changes, round_.rollout_name, refused)
    report.refused_served = list(dict.fromkeys(report.refused_served))

    # -- the Rollout ended where it would have without kills
    status = round_._rollout_status()
    final = {key: status.get(key) for key in EXPECTED_FINAL}
    if final != EXPECTED_FINAL:
        report.rollout.append(f"Rollout ended {final}, expected {EXPECTED_FINAL}")
    history = [(h.get("action"), h.get("from"), h.get("to")) for h in status.get("history") or []]
    if history != EXPECTED_HISTORY:
        report.rollout.append(f"Rollout history {history}, expected {EXPECTED_HISTORY}")

    # -- from each kill to the next status change
    moved = _status_changes(changes)
    for kill in round_.killer.kills if round_.killer else []:
        after = next((c.time for c in moved if c.time > kill.at), None)
        if after is not None:
            report.recovery_seconds.append(after - kill.at)
    return report


def summary(report: Report) -> str:
    lines = [f"namespace {report.namespace}: {report.kills} kills, {report.finetunejobs} FineTuneJobs, "
             f"{report.seconds:.0f}s; stages {' '.join(report.stages)}"]
    lines += [f"  VIOLATION {v}" for v in report.violations]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    print("usage: python -m devcluster.chaos serve --bind IP --port N [--version V]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
