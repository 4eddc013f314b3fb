"""Two operator replicas with leader election on the dev cluster, and kills of the active one.

Used by tests/integration/test_failover.py and benchmarks/failover.py. `Pair` runs two
`python -m finetune_operator` processes (`chaos.Operator`, each with its own POD_NAME, so the
Lease's holderIdentity says which one leads) watching the same namespaces, with
FINETUNE_LEADER_ELECTION=on and one Lease. `kill()` SIGKILLs whichever holds the Lease (no
release: the standby must wait the lease out, as after an OOM kill or a node crash) and `start()`
waits for the other to take the Lease, then starts the killed one again as the new standby (what
the Deployment's ReplicaSet does): the pair has chaos.Killer's operator interface.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import chaos

LEASE_NAME = "finetune-operator"
REPLICAS = ("replica-a", "replica-b")


def parse_time(value: Any) -> float:
    """Seconds since the epoch of a Lease time (the client gives a datetime; a string from JSON)."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass
class Takeover:
    killed: str
    killed_at: float  # time.time() just before the SIGKILL
    leader: str = ""
    acquired_at: float = 0.0  # the Lease's acquireTime written by the new leader

    @property
    def seconds(self) -> float:
        return self.acquired_at - self.killed_at


class Pair:
    """Two replicas, one Lease `lease_namespace`/LEASE_NAME; both watch `namespaces`."""

    def __init__(self, kubeconfig: str | Path, log_dir: Path, namespaces: Iterable[str], lease_namespace: str, *,
                 lease_duration: int = 15, renew_deadline: float = 10, retry_period: float = 2,
                 env: Mapping[str, str] | None = None):
        from kubernetes import client, config

        self.lease_namespace = lease_namespace
        self.lease_duration = lease_duration
        self.retry_period = retry_period
        settings = {
            "FINETUNE_LEADER_ELECTION": "on",
            "FINETUNE_LEADER_ELECTION_NAMESPACE": lease_namespace,
            "FINETUNE_LEADER_ELECTION_NAME": LEASE_NAME,
            "FINETUNE_LEASE_DURATION_SECONDS": str(lease_duration),
            "FINETUNE_LEASE_RENEW_DEADLINE_SECONDS": str(renew_deadline),
            "FINETUNE_LEASE_RETRY_PERIOD_SECONDS": str(retry_period),
            **(env or {}),
        }
        self.replicas = {
            name: chaos.Operator(kubeconfig, Path(log_dir) / f"{name}.log", namespaces, env={**settings, "POD_NAME": name})
            for name in REPLICAS
        }
        self.coordination = client.CoordinationV1Api(config.new_client_from_config(str(kubeconfig)))
        self.takeovers: list[Takeover] = []
        self._pending: Takeover | None = None

    # -- the Lease

    def lease(self) -> Any | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.coordination.read_namespaced_lease(LEASE_NAME, self.lease_namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def leader(self) -> str | None:
        """The replica named in the Lease's holderIdentity (`<POD_NAME>_<suffix>`), if any."""
        lease = self.lease()
        holder = (lease.spec.holder_identity or "") if lease is not None else ""
        name = holder.rsplit("_", 1)[0]
        return name if name in self.replicas else None

    def wait_for_leader(self, timeout: float, *, other_than: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        while True:
            name = self.leader()
            if name is not None and name != other_than and self.replicas[name].alive():
                return name
            if time.monotonic() > deadline:
                raise AssertionError(f"no replica{' other than ' + other_than if other_than else ''} took the Lease "
                                     f"{self.lease_namespace}/{LEASE_NAME} within {timeout:.0f}s:\n{self.log_tail(40)}")
            time.sleep(0.1)

    # -- the processes

    def start_all(self, timeout: float = 90.0) -> str:
        """Both replicas; returns the one that leads."""
        for replica in self.replicas.values():
            replica.start(timeout)
        return self.wait_for_leader(timeout)

    def standby(self, leader: str) -> str:
        return next(name for name in self.replicas if name != leader)

    def kill(self) -> Takeover:
        """SIGKILL the replica holding the Lease."""
        leader = self.wait_for_leader(60)
        takeover = Takeover(killed=leader, killed_at=time.time())
        self.replicas[leader].kill()
        self._pending = takeover
        chaos.log(f"SIGKILLed the leader {leader}")
        return takeover

    def start(self) -> None:
        """After `kill()`: wait until the other replica holds the Lease, then start the killed one
        again as the standby."""
        takeover, self._pending = self._pending, None
        if takeover is None:
            raise RuntimeError("start() without a kill()")
        takeover.leader = self.wait_for_leader(self.lease_duration * 3 + 60, other_than=takeover.killed)
        lease = self.lease()
        takeover.acquired_at = parse_time(lease.spec.acquire_time)
        self.takeovers.append(takeover)
        chaos.log(f"{takeover.leader} took the Lease {takeover.seconds:.2f}s after the kill")
        self.replicas[takeover.killed].start()

    def stop(self) -> None:
        for replica in self.replicas.values():
            replica.stop()

    def log_tail(self, lines: int = 120) -> str:
        return "\n".join(f"----- {name} -----\n{replica.log_tail(lines)}" for name, replica in self.replicas.items())
