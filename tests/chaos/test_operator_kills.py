"""The operator SIGKILLed at random points of the whole pipeline, and restarted: nothing breaks.

One `devcluster.chaos.Round` runs in a fresh namespace: no-op FineTuneJobs go through prepare,
train, evaluate and register (v3 is refused by its safety gate), and a Rollout serves v1 at once,
walks v2 through its canary steps and promotes it, rolls v4 back when its analysis fails, and is
pinned back to v1. Meanwhile the operator is SIGKILLed at stages drawn with a seed (printed;
FINETUNE_CHAOS_SEED replays a run), after a random delay, and started again after a random time
down. FINETUNE_CHAOS_KILLS sets how many kills (default 4; `benchmarks/chaos.py` does 100).

Then, from the API server, the recorded watch history and the filesystem (`chaos.check`): every
FineTuneJob ended exactly once, no duplicate Jobs or ModelVersions, every registered artifact
exists with its digest, no refused version ever had traffic, and the Rollout ended where it would
have ended without kills.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import pytest

from devcluster import canary, chaos, controlplane
from hack.prometheus.server import INSTALL_HINT, PrometheusServer, prometheus_binary
from tests.integration.conftest import OperatorProcess, _start_operator, _stop_operator

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DEFAULT_KILLS = 4


class KillableOperator:
    """The integration tests' operator process (same environment), as the chaos Killer drives it."""

    def __init__(self, kubeconfig: str, log_path):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.process: OperatorProcess | None = None

    def start(self) -> None:
        self.process = _start_operator(self.kubeconfig, self.log_path, append=self.process is not None)

    def kill(self) -> None:
        self.process.process.kill()
        self.process.process.wait(timeout=30)

    def log_tail(self, lines: int = 200) -> str:
        return self.process.log_tail(lines) if self.process else ""


@pytest.fixture(scope="module")
def killable_operator(cluster, tmp_path_factory) -> Iterator[KillableOperator]:
    operator = KillableOperator(cluster.kubeconfig, tmp_path_factory.mktemp("chaos-operator") / "operator.log")
    operator.start()
    yield operator
    _stop_operator(operator.process)


@pytest.fixture(scope="module")
def httproute_crd(cluster) -> bool:
    """Rollouts are routed by a Gateway API HTTPRoute when its CRD is there (`make test` fetches it
    first); on a machine without it, by the replica-ratio router, which needs no CRD."""
    try:
        canary.install_httproute_crd(cluster.state)
    except controlplane.ClusterError as exc:
        print(f"no HTTPRoute CRD ({exc}); the Rollout uses the replicaRatio router")
        return False
    return True


@pytest.fixture(scope="module")
def analysis_prometheus(tmp_path_factory) -> Iterator[PrometheusServer]:
    """A real Prometheus for the Rollout's analysis; its verdict query needs no scrape target."""
    binary = prometheus_binary()
    if binary is None:
        pytest.fail(INSTALL_HINT)
    server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), [], "1s").start()
    yield server
    server.stop()


def test_analysis_query_fails_exactly_the_bad_versions(analysis_prometheus):
    for version, expected in (("v4", 1.0), ("v2", 0.0), ("v14", 0.0), ("v3", 0.0)):
        result = analysis_prometheus.query(chaos.analysis_query().replace("{{canary}}", version))
        assert [float(sample["value"][1]) for sample in result] == [expected], (version, result)


@pytest.mark.pod_security("privileged", reason="the round's jobs write their artifacts to node paths that its checks "
                         "read, and its Rollout serves them from there (hostPath volumes)")
def test_operator_killed_anywhere_changes_nothing(cluster, namespace, killable_operator, httproute_crd,
                                                  analysis_prometheus, tmp_path):
    kills = int(os.environ.get("FINETUNE_CHAOS_KILLS") or DEFAULT_KILLS)
    seed = int(os.environ.get("FINETUNE_CHAOS_SEED") or random.Random(time.time_ns()).randrange(10**6))
    print(f"chaos: {kills} kills, seed {seed} (replay: FINETUNE_CHAOS_SEED={seed} FINETUNE_CHAOS_KILLS={kills})")
    plan = chaos.KillPlan(seed, kills, chaos.EXPECTED_STAGES)
    round_ = chaos.Round(cluster.api_client(), namespace, tmp_path / "artifacts", killable_operator,
                         prometheus_url=analysis_prometheus.url, httproute=httproute_crd, plan=plan)
    round_.run()
    report = chaos.check(round_)
    print(chaos.summary(report))
    done = round_.killer.kills if round_.killer else []
    print(f"kills at {[(k.stage, k.delay, k.down) for k in done]}; "
          f"kill -> next status change: {[round(s, 2) for s in report.recovery_seconds]}")
    assert not report.violations, f"seed {seed}:\n" + "\n".join(report.violations)
    assert report.finetunejobs == len(chaos.JOBS)
    assert report.kills == min(kills, chaos.EXPECTED_STAGES), f"seed {seed}: only {report.kills} of {kills} kills happened"
