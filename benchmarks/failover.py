"""Failover benchmark: SIGKILL the active operator replica N times; how long until the other acts?

    python benchmarks/failover.py                    # 5 kills, the chart's Lease timings (15/10/2 s)
    python benchmarks/failover.py --kills 10 --lease-duration 8 --renew-deadline 5 --retry-period 1

Two replicas run with leader election (`hack/devcluster/failover.py`, the same pair as
tests/integration/test_failover.py) against a dev cluster of its own. Each round SIGKILLs the
replica holding the Lease (no release: the standby has to wait the lease out, as after an OOM kill
or a lost node) and at the same moment creates a FineTuneJob (suspended, so no Pod runs) that only
an active operator can answer. It measures, from the kill:

* to the Lease taken by the other replica (the acquireTime it writes);
* to the first reconcile by the new leader: the probe FineTuneJob's first status write, seen by
  polling every 50 ms. This includes the Lease wait, kopf's start (login, resource scan, watches,
  indexes filled) and the reconcile itself.

Then the killed replica is started again as the standby (what its ReplicaSet does) and the next
round begins. It prints each round, the median and max of both, the configured lease duration,
and the goal check: median kill -> first reconcile < lease duration + 5 s (exit status 1 when not).

It starts its own dev cluster in a temporary directory and stops everything at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in ("", "hack", "operator", "trainer-image"):
    if str(REPO_ROOT / _path) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / _path))

from devcluster import chaos, controlplane, failover  # noqa: E402

IMAGE_MAP = REPO_ROOT / "hack" / "devcluster" / "images.yaml"
CRDS = REPO_ROOT / "crds"
NAMESPACE = "failover"
GOAL_MARGIN_SECONDS = 5.0
POLL_SECONDS = 0.05


def first_status_write(custom, name: str, timeout: float) -> float:
    """time.time() when the FineTuneJob `name` was first seen with a status phase."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = custom.get_namespaced_custom_object("finetune.ai", "v1alpha1", NAMESPACE, "finetunejobs", name).get("status")
        if (status or {}).get("phase"):
            return time.time()
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"FineTuneJob {NAMESPACE}/{name} got no status within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--lease-duration", type=int, default=15, help="FINETUNE_LEASE_DURATION_SECONDS (chart default 15)")
    parser.add_argument("--renew-deadline", type=float, default=10, help="FINETUNE_LEASE_RENEW_DEADLINE_SECONDS (default 10)")
    parser.add_argument("--retry-period", type=float, default=2, help="FINETUNE_LEASE_RETRY_PERIOD_SECONDS (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)

    from kubernetes import client, config

    tmp = Path(tempfile.mkdtemp(prefix="ftj-failover-"))
    cluster_dir = tmp / "cluster"
    pair: failover.Pair | None = None
    rounds: list[tuple[str, str, float, float]] = []
    try:
        print(f"starting a dev cluster in {cluster_dir}", flush=True)
        state = controlplane.start(cluster_dir, image_map=IMAGE_MAP)
        files = sorted(CRDS.glob("*.yaml"))
        for crd in files:
            controlplane.kubectl(state, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
        controlplane.wait_for_crds(state, files)
        api = config.new_client_from_config(str(state.kubeconfig))
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        custom = client.CustomObjectsApi(api)
        artifacts = tmp / "artifacts"
        pair = failover.Pair(state.kubeconfig, cluster_dir / "logs", [NAMESPACE], NAMESPACE,
                             lease_duration=args.lease_duration, renew_deadline=args.renew_deadline,
                             retry_period=args.retry_period, env={"FINETUNE_ALLOWED_HOST_PATHS": str(artifacts)})
        leader = pair.start_all()
        print(f"replicas up, {leader} leads; logs in {cluster_dir / 'logs'}", flush=True)
        # One reconcile before the first kill, so kopf's start-up cost is not counted twice.
        custom.create_namespaced_custom_object("finetune.ai", "v1alpha1", NAMESPACE, "finetunejobs",
                                               chaos.finetunejob("warmup", "probe", artifacts / "warmup", suspend=True))
        first_status_write(custom, "warmup", 120)

        for i in range(1, args.kills + 1):
            time.sleep(args.retry_period * 1.5)  # the standby has seen a renewal
            takeover = pair.kill()
            probe = f"probe-{i}"
            custom.create_namespaced_custom_object("finetune.ai", "v1alpha1", NAMESPACE, "finetunejobs",
                                                   chaos.finetunejob(probe, "probe", artifacts / probe, suspend=True))
            reconciled = first_status_write(custom, probe, args.lease_duration * 3 + 60)
            pair.start()  # the Lease's new holder is recorded; the killed replica comes back as standby
            rounds.append((takeover.killed, takeover.leader, takeover.seconds, reconciled - takeover.killed_at))
            print(f"kill {i}: {takeover.killed} killed -> {takeover.leader} holds the Lease after {takeover.seconds:.2f}s, "
                  f"first reconcile after {reconciled - takeover.killed_at:.2f}s", flush=True)
    finally:
        if pair is not None:
            pair.stop()
        controlplane.stop(cluster_dir)
        if args.keep:
            print(f"kept {tmp}", flush=True)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    lease = [r[2] for r in rounds]
    reconcile = [r[3] for r in rounds]
    goal = args.lease_duration + GOAL_MARGIN_SECONDS
    median = statistics.median(reconcile)
    print()
    print(f"kills: {len(rounds)}; lease duration {args.lease_duration}s, renew deadline {args.renew_deadline:g}s, "
          f"retry period {args.retry_period:g}s")
    print(f"kill -> Lease taken by the standby:       median {statistics.median(lease):.2f}s, max {max(lease):.2f}s")
    print(f"kill -> first reconcile by the new leader: median {median:.2f}s, max {max(reconcile):.2f}s")
    print(f"goal: median < lease duration + {GOAL_MARGIN_SECONDS:g}s = {goal:g}s: {'met' if median < goal else 'NOT met'}")
    return 0 if median < goal else 1


if __name__ == "__main__":
    sys.exit(main())
