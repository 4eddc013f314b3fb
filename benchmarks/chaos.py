"""Chaos benchmark: SIGKILL the operator N times across whole pipelines and count what broke.

    python benchmarks/chaos.py                  # 100 kills
    python benchmarks/chaos.py --kills 5        # a quick look
    python benchmarks/chaos.py --seed 7         # replay a run

It runs the chaos suite's harness (`hack/devcluster/chaos.py`, as in tests/chaos) round after
round, each in a fresh namespace: no-op FineTuneJobs through prepare, train, evaluate and register
(one refused by its gates) and a Rollout that serves a first version, promotes a good canary
through its steps, rolls a bad one back on analysis and is pinned back to an earlier version.
Each round the operator is SIGKILLed at up to `--kills-per-round` stages drawn with the round's
seed (`--seed` + round), after a random delay, and started again after a random time down, until
`--kills` kills happened or `--max-minutes` passed. After each round the invariants are checked
from the API server, the recorded watch history and the filesystem.

It prints kills, FineTuneJobs, duplicates (Jobs or ModelVersions created twice), lost artifacts
(a registered artifact missing or not matching its digest), refused versions served, other broken
promises (transitions repeated or lost, a Rollout that ended elsewhere), and the median and p90
time from a kill to the pipeline moving again (the next status change of a FineTuneJob,
ModelVersion or Rollout seen on a watch; it includes the operator's own start-up). Exit status 0
when every count of broken promises is zero, 1 otherwise.

It starts its own dev cluster in a temporary directory, its own Prometheus (for the analysis)
and its own operator process, and stops everything at the end, on Ctrl-C, or at the time limit.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in ("", "hack", "operator", "trainer-image"):
    if str(REPO_ROOT / _path) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / _path))

from devcluster import canary, chaos, controlplane  # noqa: E402

IMAGE_MAP = REPO_ROOT / "hack" / "devcluster" / "images.yaml"
CRDS = REPO_ROOT / "crds"
ADMISSION = REPO_ROOT / "config" / "admission"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="ftj-chaos-"))
        self.cluster_dir = self.tmp / "cluster"
        self.state: controlplane.ClusterState | None = None
        self.operator: chaos.Operator | None = None
        self.prometheus = None
        self.httproute = False

    def start(self) -> None:
        from kubernetes import config

        from hack.prometheus.server import INSTALL_HINT, PrometheusServer, prometheus_binary

        print(f"starting a dev cluster in {self.cluster_dir}", flush=True)
        self.state = controlplane.start(self.cluster_dir, image_map=IMAGE_MAP)
        files = sorted(CRDS.glob("*.yaml"))
        for crd in files:
            controlplane.kubectl(self.state, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
        controlplane.wait_for_crds(self.state, files)
        for policy in sorted(ADMISSION.glob("*.yaml")):
            controlplane.kubectl(self.state, "apply", "--server-side", "--force-conflicts", "-f", str(policy))
        try:
            canary.install_httproute_crd(self.state)
            self.httproute = True
        except controlplane.ClusterError as exc:
            print(f"no HTTPRoute CRD ({exc}); Rollouts use the replicaRatio router", flush=True)
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        workdir = self.tmp / "prometheus"
        workdir.mkdir()
        self.prometheus = PrometheusServer(binary, workdir, [], "1s").start()
        self.api = config.new_client_from_config(str(self.state.kubeconfig))
        # The rounds' FineTuneJobs write under <tmp>/artifacts (node paths): the only ones this
        # operator may mount.
        self.operator = chaos.Operator(self.state.kubeconfig, self.cluster_dir / "logs" / "operator.log",
                                       env={"FINETUNE_ALLOWED_HOST_PATHS": str(self.tmp / "artifacts")}).start()
        print(f"operator log {self.operator.log_path}", flush=True)

    def namespace(self, name: str) -> str:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        core.create_namespace({"metadata": {"name": name}})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items):
                return name
            time.sleep(0.2)
        raise RuntimeError(f"no default ServiceAccount in {name} after 60s")

    def drop_namespace(self, name: str) -> None:
        controlplane.kubectl(self.state, "delete", "namespace", name, "--wait=false", check=False)

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.state is not None:
            controlplane.stop(self.cluster_dir)
        if self.args.keep:
            print(f"kept {self.tmp}", flush=True)
        else:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)


def print_results(reports: list[chaos.Report], wall: float, stopped: str | None) -> bool:
    kills = sum(r.kills for r in reports)
    recovery = [s for r in reports for s in r.recovery_seconds]
    duplicates = [v for r in reports for v in r.duplicates]
    lost = [v for r in reports for v in r.lost_artifacts]
    refused = [v for r in reports for v in r.refused_served]
    other = [v for r in reports for v in r.transitions + r.rollout]

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}s"

    print()
    print(f"rounds                          {len(reports)}{f'  ({stopped})' if stopped else ''}")
    print(f"kills                           {kills}")
    print(f"FineTuneJobs                    {sum(r.finetunejobs for r in reports)}")
    print(f"duplicates                      {len(duplicates)}")
    print(f"lost artifacts                  {len(lost)}")
    print(f"refused versions served         {len(refused)}")
    print(f"other broken promises           {len(other)}")
    print(f"kill -> pipeline moving, median {seconds(statistics.median(recovery) if recovery else None)}")
    print(f"kill -> pipeline moving, p90    {seconds(percentile(recovery, 90))}")
    print(f"wall time                       {wall:.0f}s")
    for violation in duplicates + lost + refused + other:
        print(f"  {violation}")
    return not (duplicates or lost or refused or other)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100, help="operator kills in total (default 100)")
    parser.add_argument("--kills-per-round", type=int, default=8, help="kills per pipeline round (default 8)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first round (default: random, printed)")
    parser.add_argument("--max-minutes", type=float, default=40, help="stop starting rounds after this long (default 40)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (cluster, operator and Pod logs)")
    parser.add_argument("--json", type=Path, help="also write the per-round reports here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    print(f"chaos benchmark: {args.kills} kills, up to {args.kills_per_round} per round, seed {seed} "
          f"(replay: --seed {seed})", flush=True)

    def interrupted(signum, frame):
        raise KeyboardInterrupt  # so `finally` stops the cluster and the operator

    signal.signal(signal.SIGTERM, interrupted)
    bench = Bench(args)
    reports: list[chaos.Report] = []
    started = time.monotonic()
    stopped = None
    try:
        bench.start()
        done = 0
        while done < args.kills:
            if time.monotonic() - started > args.max_minutes * 60:
                stopped = f"stopped at the {args.max_minutes:g}-minute limit"
                break
            index = len(reports)
            kills = min(args.kills_per_round, args.kills - done)
            namespace = bench.namespace(f"chaos-{index}-{seed % 10000}")
            plan = chaos.KillPlan(seed + index, kills, chaos.EXPECTED_STAGES)
            round_ = chaos.Round(bench.api, namespace, bench.tmp / "artifacts" / namespace, bench.operator,
                                 prometheus_url=bench.prometheus.url, httproute=bench.httproute, plan=plan)
            try:
                round_.run()
                report = chaos.check(round_)
            except AssertionError as exc:  # the round never finished: a broken promise too
                print(str(exc)[:3000], flush=True)
                try:
                    report = chaos.check(round_)
                except Exception as check_error:  # noqa: BLE001 - report what can be reported
                    report = chaos.Report(namespace=namespace, kills=len(round_.killer.kills) if round_.killer else 0)
                    report.transitions.append(f"round {index}: checking failed too: {check_error}")
                report.transitions.append(f"round {index} did not finish: {str(exc).splitlines()[0]}")
            reports.append(report)
            done += report.kills
            print(chaos.summary(report).splitlines()[0][:200] + " ...", flush=True)
            for violation in report.violations:
                print(f"  VIOLATION {violation}", flush=True)
            bench.drop_namespace(namespace)
        ok = print_results(reports, time.monotonic() - started, stopped)
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ for r in reports], indent=2, default=str))
        return 0 if ok else 1
    except KeyboardInterrupt:
        print_results(reports, time.monotonic() - started, "interrupted")
        return 130
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
