"""Istio: the weights of a VirtualService's HTTP routes to the stable and canary Services.

The user owns the VirtualService (hosts, gateways, matches, retries); the Rollout only moves
weights. In each HTTP route it manages (`trafficRouter.istio.routes` by name, or every route
with a destination on the stable or canary Service when none are named), the destination on
the stable host gets weight 100-w and the one on the canary host w; the canary destination is
added after the stable one, with the same host form and port, when the user listed only stable.
Hosts match in any of Istio's forms: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<cluster domain>`.

As with the Gateway API (see routers/gatewayapi.py), `spec.http` has no list-type in Istio's
CRD and is therefore atomic under server-side apply: the router applies a copy of the whole
`spec.http` list with only the weights changed, under its own field manager, with the observed
`metadata.resourceVersion` as a precondition so a concurrent edit is never overwritten.
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

API_VERSION = "networking.istio.io/v1"
KIND = "VirtualService"


class IstioRouter:
    kind = "istio"
    field_manager = field_manager("istio")
    owns_replicas = False

    def replica_counts(self, weight: int) -> tuple[int, int] | None:
        return None  # every version runs spec.serving.replicas

    def __init__(self, virtual_service: str, routes: list[str] | tuple[str, ...] = ()):
        self.virtual_service = virtual_service
        self.routes = tuple(routes)

    def vs_ref(self, namespace: str) -> ObjectRef:
        return ObjectRef(API_VERSION, KIND, namespace, self.virtual_service)

    def targets(self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None) -> list[ObjectRef]:
        return [self.vs_ref(namespace)]

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
        ref = self.vs_ref(namespace)
        hint = (
            f"create the VirtualService with an HTTP route whose destination host is Service "
            f"{stable.service} (port {stable.port})"
        )
        vs = require(observed, ref, hint)
        http = (vs.get("spec") or {}).get("http") or []
        names = [route.get("name") for route in http]
        missing = [name for name in self.routes if name not in names]
        if missing:
            raise RouterError(f"{ref} has no HTTP route named {', '.join(missing)} (it has {names}); fix trafficRouter.istio.routes")
        new_http, routed = [], 0
        for index, route in enumerate(http):
            route = copy.deepcopy(dict(route))
            if self._selected(route, stable, canary, namespace):
                destinations = route.get("route") or []
                if not any(_is_host(d, stable, namespace) for d in destinations):
                    raise RouterError(
                        f"{ref}: HTTP route {route.get('name') or f'#{index}'} has no destination "
                        f"on Service {stable.service}; add one, or leave the route out of trafficRouter.istio.routes"
                    )
                route["route"] = _weighted(destinations, stable, canary, weight, namespace)
                routed += 1
            new_http.append(route)
        if not routed:
            raise RouterError(f"{ref} has no HTTP route with a destination on Service {stable.service}; {hint}")
        resource_version = (vs.get("metadata") or {}).get("resourceVersion")
        return [Patch(ref, apply_body(ref, resource_version, spec={"http": new_http}), self.field_manager)]

    def effective_weight(self, weight: int) -> int:
        return check_weight(weight)

    def observed_weight(
        self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None, observed: Observed
    ) -> int | None:
        vs = observed.get(self.vs_ref(namespace))
        if not vs or canary is None:
            return None
        for route in (vs.get("spec") or {}).get("http") or []:
            if not self._selected(route, stable, canary, namespace):
                continue
            destinations = route.get("route") or []
            stable_weight = sum(_weight(d, destinations) for d in destinations if _is_host(d, stable, namespace))
            canary_weight = sum(_weight(d, destinations) for d in destinations if _is_host(d, canary, namespace))
            if stable_weight + canary_weight:
                return round(100 * canary_weight / (stable_weight + canary_weight))
        return None

    def _selected(self, route: Mapping[str, Any], stable: Backend, canary: Backend | None, namespace: str) -> bool:
        if self.routes:
            return route.get("name") in self.routes
        backends = [stable] if canary is None else [stable, canary]
        return any(_is_host(d, b, namespace) for d in route.get("route") or [] for b in backends)


def _host_forms(service: str, namespace: str) -> tuple[str, ...]:
    return (service, f"{service}.{namespace}", f"{service}.{namespace}.svc")


def _is_host(destination: Mapping[str, Any], backend: Backend, namespace: str) -> bool:
    host = ((destination.get("destination") or {}).get("host")) or ""
    return host in _host_forms(backend.service, namespace) or host.startswith(f"{backend.service}.{namespace}.svc.")


def _weight(destination: Mapping[str, Any], destinations: list) -> int:
    # Istio: a lone destination without a weight takes all the traffic.
    return int(destination.get("weight", 100 if len(destinations) == 1 else 0))


def _weighted(
    destinations: list[Mapping[str, Any]], stable: Backend, canary: Backend | None, weight: int, namespace: str
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    has_canary = canary is not None and any(_is_host(d, canary, namespace) for d in destinations)
    for listed in destinations:
        destination = copy.deepcopy(dict(listed))
        if _is_host(destination, stable, namespace):
            destination["weight"] = 100 - weight
            out.append(destination)
            if canary is not None and not has_canary:
                out.append(_canary_like(destination, stable, canary, weight))
                has_canary = True
        elif canary is not None and _is_host(destination, canary, namespace):
            destination["weight"] = weight
            out.append(destination)
        else:
            out.append(destination)
    return out


def _canary_like(stable_destination: Mapping[str, Any], stable: Backend, canary: Backend, weight: int) -> dict[str, Any]:
    """A destination for the canary in the same host form as the user's stable one."""
    target = copy.deepcopy(dict(stable_destination["destination"]))
    host = target["host"]
    target["host"] = canary.service + host[len(stable.service):]
    target.pop("subset", None)
    if "port" in target:
        target["port"] = {"number": canary.port}
    return {"destination": target, "weight": weight}
