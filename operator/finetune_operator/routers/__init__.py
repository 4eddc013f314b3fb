"""Traffic routers (Gateway API HTTPRoute, Istio, KServe, replica ratio) behind one small interface.

Each router is a pure renderer (no Kubernetes client, no I/O): the Rollout controller asks it
for the objects it must read (`targets`), reads them, and gets back server-side-apply patches
for a canary weight (`desired`), each carrying only the fields that router owns and its own
field manager. `observed_weight` reads the weight back, to notice drift.

    router = routers.for_rollout(spec.traffic_router, replicas=spec.serving.replicas)
    refs = router.targets(name, namespace, stable, canary)
    observed = {ref: k8s_read(ref) for ref in refs}            # the k8s layer
    for patch in router.desired(name, namespace, stable, canary, weight, observed):
        k8s_apply(patch.body, field_manager=patch.field_manager, force=patch.force)

| router        | object                       | fields it owns (server-side apply)           | field manager                            |
|---------------|------------------------------|----------------------------------------------|------------------------------------------|
| gatewayAPI    | HTTPRoute (default: Rollout) | `spec.rules` (atomic upstream; only weights change) | finetune-operator-router-gatewayapi |
| istio         | VirtualService               | `spec.http` (atomic upstream; only weights change)  | finetune-operator-router-istio      |
| kserve        | InferenceService             | `spec.predictor.canaryTrafficPercent`        | finetune-operator-router-kserve          |
| replicaRatio  | the two Deployments          | `spec.replicas`                              | finetune-operator-router-replicaratio    |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from finetune_operator.routers.base import (
    FIELD_MANAGER_PREFIX,
    Backend,
    ObjectRef,
    Observed,
    Patch,
    Router,
    RouterError,
    applied_weight,
)
from finetune_operator.routers.gatewayapi import GatewayApiRouter
from finetune_operator.routers.istio import IstioRouter
from finetune_operator.routers.kserve import KServeRouter
from finetune_operator.routers.replicaratio import ReplicaRatioRouter, ReplicaSplit, split_replicas

if TYPE_CHECKING:
    from finetune_operator.api.rollout import TrafficRouter

__all__ = [
    "FIELD_MANAGER_PREFIX",
    "Backend",
    "GatewayApiRouter",
    "IstioRouter",
    "KServeRouter",
    "ObjectRef",
    "Observed",
    "Patch",
    "ReplicaRatioRouter",
    "ReplicaSplit",
    "Router",
    "RouterError",
    "applied_weight",
    "for_rollout",
    "split_replicas",
]


def for_rollout(traffic_router: TrafficRouter, replicas: int) -> Router:
    """The router a Rollout's `spec.trafficRouter` selects; `replicas` is `spec.serving.replicas`."""
    if traffic_router.gateway_api is not None:
        return GatewayApiRouter(traffic_router.gateway_api.http_route, traffic_router.gateway_api.namespace)
    if traffic_router.istio is not None:
        return IstioRouter(traffic_router.istio.virtual_service, traffic_router.istio.routes)
    if traffic_router.kserve is not None:
        return KServeRouter(traffic_router.kserve.inference_service)
    if traffic_router.replica_ratio is not None:
        return ReplicaRatioRouter(replicas)
    raise ValueError("spec.trafficRouter sets no router")
