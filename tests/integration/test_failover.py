"""Two operator replicas, one active: SIGKILL the active one mid-FineTuneJob and mid-canary, and the
other takes over with nothing duplicated and nothing missed.

Two `python -m finetune_operator` processes run with leader election on one Lease (a short one, 4 s,
so the test is quick; the chart's default is 15 s) and watch the test namespace
(`devcluster.failover.Pair`). The whole pipeline of `devcluster.chaos.Round` runs against them:
four no-op FineTuneJobs (prepare, train, evaluate, register; v3 refused by its safety gate) and a
Rollout that serves v1, walks v2 through its canary steps and promotes it, rolls v4 back on
analysis and is pinned back to v1. Whichever replica holds the Lease is SIGKILLed while j2 trains
and while v2's canary is at its analysis step; the other must take the Lease within a bound, and
the killed one comes back as the standby (as its ReplicaSet would start it again).

`chaos.check` then reads back from the API server, the recorded watch history and the files that
every FineTuneJob ended exactly once, no Job or ModelVersion was created twice, every artifact is
there with its digest, no refused version had traffic and the Rollout ended as it would have
without kills; the Lease changed hands exactly once per kill (the restarted replica never took it
back).

The session's operator watches every namespace, so it is stopped for this test and started again
after (`session_operator_stopped`).
"""

from __future__ import annotations

import pytest

from devcluster import chaos, failover
from tests.chaos.test_operator_kills import analysis_prometheus, httproute_crd  # noqa: F401 - fixtures
from tests.integration.conftest import ALLOWED_HOST_PATHS, session_operator_stopped

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS = 4, 3, 0.5
# Where the leader dies: while j2's training Job runs, and while v2's canary is analysed (step 1
# of setWeight 30 -> analysis -> setWeight 60 -> analysis -> setWeight 100).
KILL_AT = ("ftj/j2/Training", "canary/v2/step1")
# From the kill to the Lease taken by the other replica: the lease duration and one retry period
# in theory; the bound leaves room for a loaded machine, and fails a standby that never looked.
TAKEOVER_BOUND_SECONDS = 2 * LEASE_SECONDS + 10


class AtStages:
    """A kill plan naming stage labels instead of drawn indices."""

    def __init__(self, stages: tuple[str, ...]):
        self.stages = stages
        self.slots = dict.fromkeys(range(len(stages)))

    def describe(self) -> str:
        return "at " + ", ".join(self.stages)


class StageKiller(chaos.Killer):
    """chaos.Killer, killing at once when a named stage is first seen."""

    def __init__(self, operator, plan: AtStages):
        super().__init__(operator, plan)
        self.stages = set(plan.stages)

    def hear(self, label: str) -> None:
        if label in self.stages:
            with self._wake:
                self._queue.append(chaos.Kill(label, delay=0.0, down=0.0))
                self._wake.notify()


@pytest.fixture
def pair(cluster, namespace, tmp_path):
    with session_operator_stopped(cluster.kubeconfig):
        replicas = failover.Pair(cluster.kubeconfig, tmp_path / "operators", [namespace], namespace,
                                 lease_duration=LEASE_SECONDS, renew_deadline=RENEW_DEADLINE_SECONDS,
                                 retry_period=RETRY_SECONDS, env={"FINETUNE_ALLOWED_HOST_PATHS": ALLOWED_HOST_PATHS})
        try:
            yield replicas
        finally:
            # Finalizers are the operator's to remove: delete the objects while a replica runs.
            cluster.kubectl("delete", "rollouts.finetune.ai,finetunejobs,modelversions", "--all", "-n", namespace,
                            "--timeout=60s", check=False)
            replicas.stop()


@pytest.mark.pod_security("privileged", reason="the round's jobs write their artifacts to node paths that its checks "
                         "read, and its Rollout serves them from there (hostPath volumes)")
def test_the_standby_takes_over_a_killed_leader_and_nothing_is_duplicated_or_missed(
        cluster, namespace, pair, httproute_crd, analysis_prometheus, tmp_path):  # noqa: F811 - fixtures
    first_leader = pair.start_all()
    standby = pair.standby(first_leader)
    assert pair.replicas[standby].alive(), f"the standby {standby} exited:\n{pair.log_tail(40)}"

    round_ = chaos.Round(cluster.api_client(), namespace, tmp_path / "artifacts", pair,
                         prometheus_url=analysis_prometheus.url, httproute=httproute_crd, plan=None)
    round_.plan = AtStages(KILL_AT)
    round_.killer = StageKiller(pair, round_.plan)
    round_.run()
    report = chaos.check(round_)
    print(chaos.summary(report))
    print("takeovers: " + "; ".join(f"{t.killed} killed -> {t.leader} leads after {t.seconds:.2f}s" for t in pair.takeovers))

    assert not report.violations, "\n".join(report.violations) + f"\n{pair.log_tail(60)}"
    assert report.finetunejobs == len(chaos.JOBS)
    assert [kill.stage for kill in round_.killer.kills] == list(KILL_AT), "a planned kill did not happen"
    assert len(pair.takeovers) == len(KILL_AT)
    for takeover in pair.takeovers:
        assert takeover.leader != takeover.killed
        assert 0 < takeover.seconds < TAKEOVER_BOUND_SECONDS, (
            f"{takeover.leader} took the Lease {takeover.seconds:.1f}s after {takeover.killed} was killed "
            f"(lease {LEASE_SECONDS}s)")
    # One change of hands per kill: a restarted replica waits as the standby, it never takes the
    # Lease back from a live leader.
    lease = pair.lease()
    assert lease.spec.lease_transitions == len(KILL_AT)
    assert pair.leader() == pair.takeovers[-1].leader
    assert all(replica.alive() for replica in pair.replicas.values()), pair.log_tail(40)
