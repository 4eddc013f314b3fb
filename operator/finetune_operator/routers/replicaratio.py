"""Replica ratio: no mesh or gateway; one Service selects the Pods of both versions, and traffic
follows the ratio of canary to stable replicas (kube-proxy spreads connections evenly).

The total stays at `serving.replicas` (serving replicas are GPUs; a canary should not double
the bill), split as close to the weight as whole replicas allow:

- weight 0: all replicas stable, canary 0; weight 100: all canary, stable 0;
- otherwise canary = total * weight / 100 rounded half up, but at least 1 (a canary step must
  really send traffic) and at most total - 1 (stable keeps serving until 100%);
- with a single replica and 0 < weight < 100, both run one replica: 50% is the closest a single
  replica can get while both versions serve. `ReplicaSplit.effective_weight` says what the split
  really is, for status and analysis.

The patches set only `spec.replicas` of the two Deployments, under this router's own field
manager. The Deployment builder must therefore leave `spec.replicas` out of what it applies
with the operator's manager when this router is in use, or the two managers would take the
field from each other on every reconcile.
"""

from __future__ import annotations

import dataclasses

from finetune_operator.routers.base import (
    Backend,
    Observed,
    ObjectRef,
    Patch,
    RouterError,
    apply_body,
    check_weight,
    field_manager,
)

API_VERSION = "apps/v1"
KIND = "Deployment"


@dataclasses.dataclass(frozen=True)
class ReplicaSplit:
    stable: int
    canary: int

    @property
    def effective_weight(self) -> int:
        total = self.stable + self.canary
        return 0 if total == 0 else round(100 * self.canary / total)


def split_replicas(total: int, weight: int) -> ReplicaSplit:
    """Replicas of stable and canary for `weight` percent on the canary, out of `total`."""
    check_weight(weight)
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"total replicas must be a positive integer, got {total!r}")
    if weight == 0:
        return ReplicaSplit(stable=total, canary=0)
    if weight == 100:
        return ReplicaSplit(stable=0, canary=total)
    if total == 1:
        return ReplicaSplit(stable=1, canary=1)
    canary = (total * weight * 2 + 100) // 200  # round half up, in integers
    canary = min(max(canary, 1), total - 1)
    return ReplicaSplit(stable=total - canary, canary=canary)


class ReplicaRatioRouter:
    kind = "replicaRatio"
    field_manager = field_manager("replicaRatio")
    owns_replicas = True

    def replica_counts(self, weight: int) -> tuple[int, int] | None:
        counts = self.split(weight)
        return counts.stable, counts.canary

    def __init__(self, replicas: int):
        self.replicas = replicas

    def targets(self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None) -> list[ObjectRef]:
        return [self._ref(backend, namespace) for backend in _backends(stable, canary)]

    def split(self, weight: int, has_canary: bool = True) -> ReplicaSplit:
        """The replica counts `desired` renders; without a canary, all replicas are stable."""
        counts = split_replicas(self.replicas, weight)
        return counts if has_canary else ReplicaSplit(stable=self.replicas, canary=0)

    def desired(
        self,
        rollout_name: str,
        namespace: str,
        stable: Backend,
        canary: Backend | None,
        weight: int,
        observed: Observed,
    ) -> list[Patch]:
        counts = self.split(weight, has_canary=canary is not None)
        patches = []
        for backend, replicas in ((stable, counts.stable), (canary, counts.canary)):
            if backend is None:
                continue
            ref = self._ref(backend, namespace)
            patches.append(Patch(ref, apply_body(ref, spec={"replicas": replicas}), self.field_manager))
        return patches

    def effective_weight(self, weight: int) -> int:
        return self.split(weight).effective_weight

    def observed_weight(
        self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None, observed: Observed
    ) -> int | None:
        if canary is None:
            return None
        stable_deployment = observed.get(self._ref(stable, namespace))
        canary_deployment = observed.get(self._ref(canary, namespace))
        if not stable_deployment or not canary_deployment:
            return None
        stable_replicas, canary_replicas = (
            int((d.get("spec") or {}).get("replicas", 1)) for d in (stable_deployment, canary_deployment)
        )
        return ReplicaSplit(stable_replicas, canary_replicas).effective_weight

    @staticmethod
    def _ref(backend: Backend, namespace: str) -> ObjectRef:
        if not backend.deployment:
            raise RouterError(
                f"the replicaRatio router needs the Deployment of Service {backend.service} "
                f"(version {backend.version or 'unknown'}); pass Backend.deployment"
            )
        return ObjectRef(API_VERSION, KIND, namespace, backend.deployment)


def _backends(stable: Backend, canary: Backend | None) -> list[Backend]:
    return [stable] if canary is None else [stable, canary]
