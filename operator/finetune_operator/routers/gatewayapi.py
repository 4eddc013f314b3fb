"""Gateway API: the weights of an HTTPRoute's backendRefs to the stable and canary Services.

The user owns the HTTPRoute (parentRefs, hostnames, matches, filters); the Rollout only moves
weights. Each rule that has a backendRef to the stable or the canary Service gets exactly two
refs in that place, stable with weight 100-w and canary with weight w (the canary ref is
added next to the stable one if the user listed only stable); every other ref, rule and field
is copied unchanged.

Why the whole `spec.rules` list is applied, not only the weights: the upstream CRD declares
`spec.rules` and `rules[].backendRefs` with `x-kubernetes-list-type: atomic`. Server-side apply
treats an atomic list as one value, so a partial apply of `rules: [{backendRefs: [{weight}]}]`
would *replace* the user's rules (dropping matches, filters and parentRef wiring), and no manager
can own `rules[0].backendRefs[1].weight` on its own. The finest ownership the API allows is the
`spec.rules` list as a whole. So the router reads the route, renders a copy of the rules with
only the weights changed, and applies it under its own field manager with the route's
`metadata.resourceVersion` as a precondition: if the user changed the route between the read
and the apply, the API server answers 409 and the next reconcile renders from the new rules
instead of overwriting them. In managedFields the router's manager then owns `f:spec.f:rules`
and nothing else; docs/argocd.md shows how a GitOps tool ignores only the weights inside it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from finetune_operator.routers.base import (
    Backend,
    Observed,
    ObjectRef,
    Patch,
    RouterError,
    apply_body,
    check_weight,
    field_manager,
    require,
)

API_VERSION = "gateway.networking.k8s.io/v1"
KIND = "HTTPRoute"


class GatewayApiRouter:
    kind = "gatewayAPI"
    field_manager = field_manager("gatewayAPI")
    owns_replicas = False

    def replica_counts(self, weight: int) -> tuple[int, int] | None:
        return None  # every version runs spec.serving.replicas

    def __init__(self, http_route: str | None = None, route_namespace: str | None = None):
        self.http_route = http_route
        self.route_namespace = route_namespace

    def route_ref(self, rollout_name: str, namespace: str) -> ObjectRef:
        return ObjectRef(API_VERSION, KIND, self.route_namespace or namespace, self.http_route or rollout_name)

    def targets(self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None) -> list[ObjectRef]:
        return [self.route_ref(rollout_name, namespace)]

    def desired(
        self,
        rollout_name: str,
        namespace: str,
        stable: Backend,
        canary: Backend | None,
        weight: int,
        observed: Observed,
    ) -> list[Patch]:
        check_weight(weight)
        ref = self.route_ref(rollout_name, namespace)
        route = require(observed, ref, _hint(stable, namespace))
        rules = (route.get("spec") or {}).get("rules") or []
        new_rules, routed = [], 0
        for rule in rules:
            refs = rule.get("backendRefs") or []
            if any(_points_at(r, b, ref.namespace, namespace) for r in refs for b in _backends(stable, canary)):
                routed += 1
                rule = {**copy.deepcopy(dict(rule)), "backendRefs": _weighted(refs, stable, canary, weight, ref.namespace, namespace)}
            else:
                rule = copy.deepcopy(dict(rule))
            new_rules.append(rule)
        if not routed:
            raise RouterError(f"{ref} has no rule with a backendRef to Service {stable.service}; {_hint(stable, namespace)}")
        resource_version = (route.get("metadata") or {}).get("resourceVersion")
        return [Patch(ref, apply_body(ref, resource_version, spec={"rules": new_rules}), self.field_manager)]

    def effective_weight(self, weight: int) -> int:
        return check_weight(weight)

    def observed_weight(
        self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None, observed: Observed
    ) -> int | None:
        route = observed.get(self.route_ref(rollout_name, namespace))
        if not route or canary is None:
            return None
        route_namespace = self.route_namespace or namespace
        for rule in (route.get("spec") or {}).get("rules") or []:
            refs = rule.get("backendRefs") or []
            stable_weight = sum(_weight(r) for r in refs if _points_at(r, stable, route_namespace, namespace))
            canary_weight = sum(_weight(r) for r in refs if _points_at(r, canary, route_namespace, namespace))
            if stable_weight + canary_weight:
                return round(100 * canary_weight / (stable_weight + canary_weight))
        return None


def _hint(stable: Backend, namespace: str) -> str:
    return (
        f"create the HTTPRoute (parentRefs to your Gateway) with a rule whose backendRefs name "
        f"Service {stable.service} in namespace {namespace}, port {stable.port}"
    )


def _backends(stable: Backend, canary: Backend | None) -> list[Backend]:
    return [stable] if canary is None else [stable, canary]


def _points_at(ref: Mapping[str, Any], backend: Backend, route_namespace: str, service_namespace: str) -> bool:
    return (
        ref.get("name") == backend.service
        and (ref.get("group") or "") == ""
        and (ref.get("kind") or "Service") == "Service"
        and (ref.get("namespace") or route_namespace) == service_namespace
    )


def _weight(ref: Mapping[str, Any]) -> int:
    return int(ref.get("weight", 1))  # the Gateway API default weight is 1


def _weighted(
    refs: list[Mapping[str, Any]],
    stable: Backend,
    canary: Backend | None,
    weight: int,
    route_namespace: str,
    service_namespace: str,
) -> list[dict[str, Any]]:
    """`refs` with the stable/canary refs replaced, in place of the first of them, by the weighted pair."""
    pair = [(stable, 100 - weight)] + ([] if canary is None else [(canary, weight)])
    existing = {}
    for backend, _ in pair:
        existing[backend.service] = next(
            (r for r in refs if _points_at(r, backend, route_namespace, service_namespace)), None
        )
    weighted = []
    for backend, backend_weight in pair:
        ref = copy.deepcopy(dict(existing[backend.service] or {}))
        if not ref:
            ref = {"name": backend.service, "port": backend.port}
            if route_namespace != service_namespace:
                ref["namespace"] = service_namespace  # needs a ReferenceGrant in the Service's namespace
        ref.setdefault("port", backend.port)
        ref["weight"] = backend_weight
        weighted.append(ref)
    out: list[dict[str, Any]] = []
    placed = False
    for listed in refs:
        if any(_points_at(listed, backend, route_namespace, service_namespace) for backend, _ in pair):
            if not placed:
                out.extend(weighted)
                placed = True
        else:
            out.append(copy.deepcopy(dict(listed)))
    return out
