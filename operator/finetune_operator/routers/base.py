"""The router interface: what each traffic router gets, and the patches it returns.

A router is a pure renderer. The Rollout controller tells it which objects it needs to see
(`targets`), reads those, and asks for the `desired` state at a canary weight; the router
answers with server-side-apply patches, each holding only the fields that router owns and
naming the field manager to send it with. The k8s layer applies them; nothing here does I/O.

One field manager per router (`finetune-operator-router-<kind>`), distinct from the
operator's own `finetune-operator`, so that managedFields show exactly which fields traffic
routing owns and a GitOps tool can ignore precisely those (see docs/argocd.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

FIELD_MANAGER_PREFIX = "finetune-operator-router-"


class RouterError(Exception):
    """The router cannot render a patch: a missing or unusable object. The message names the fix."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """One side of the traffic split: the Service (and Deployment) serving one version."""

    service: str  # Service name, in the Rollout's namespace
    port: int = 8000  # the Service port traffic goes to
    deployment: str | None = None  # the Deployment behind the Service (replica-ratio router)
    version: str | None = None  # the ModelVersion served, for messages


@dataclasses.dataclass(frozen=True, order=True)
class ObjectRef:
    """An object a router reads or writes."""

    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Patch:
    """A server-side apply: `body` is the whole apply configuration (apiVersion, kind, metadata, owned fields).

    `force` takes the fields over from another manager (a user's `kubectl apply`, a GitOps
    tool): these fields are the router's to set while a Rollout points at the object.
    """

    ref: ObjectRef
    body: dict[str, Any]
    field_manager: str
    force: bool = True

    @property
    def api_version(self) -> str:
        return self.ref.api_version

    @property
    def kind(self) -> str:
        return self.ref.kind

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def namespace(self) -> str:
        return self.ref.namespace


Observed = Mapping[ObjectRef, Mapping[str, Any]]


class Router(Protocol):
    """What the Rollout controller needs from any traffic router."""

    kind: str  # the trafficRouter field naming it: gatewayAPI, istio, kserve, replicaRatio
    field_manager: str
    # True when the router splits traffic by scaling the versions' Deployments (their spec.replicas
    # is its field): the controller sets replicas only when it creates a Deployment, and a canary
    # that is the stable version has no backend of its own. False: every version runs
    # spec.serving.replicas and the router re-weights objects of its own.
    owns_replicas: bool

    def replica_counts(self, weight: int) -> tuple[int, int] | None:
        """(stable, canary) replicas at `weight` when the router owns replicas; None otherwise."""
        ...

    def targets(self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None) -> list[ObjectRef]:
        """Objects to read and pass to `desired` / `observed_weight` as `observed`."""
        ...

    def desired(
        self,
        rollout_name: str,
        namespace: str,
        stable: Backend,
        canary: Backend | None,
        weight: int,
        observed: Observed,
    ) -> list[Patch]:
        """Patches that send `weight` percent of traffic to `canary` and the rest to `stable`.

        `canary=None` means there is no candidate: everything goes to stable. Raises
        RouterError when an object it needs is missing or does not route to the backends.
        """
        ...

    def observed_weight(
        self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None, observed: Observed
    ) -> int | None:
        """The canary weight the objects carry now (None when they do not say)."""
        ...

    def effective_weight(self, weight: int) -> int:
        """The weight `observed_weight` reads back once `desired(weight)` is applied (the same,
        except where the router can only approximate it, as whole replicas do)."""
        ...


def applied_weight(router: Router, weight: int, observed_weight: int | None) -> int | None:
    """`weight` when the router's objects carry it, else what they carry: what a canary step
    compares with the weight it set, to know that the weight really reached the traffic."""
    if observed_weight is not None and observed_weight == router.effective_weight(weight):
        return weight
    return observed_weight


def field_manager(kind: str) -> str:
    return FIELD_MANAGER_PREFIX + kind.lower()


def check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise ValueError(f"canary weight must be an integer percentage 0..100, got {weight!r}")
    return weight


def apply_body(ref: ObjectRef, resource_version: str | None = None, **fields: Any) -> dict[str, Any]:
    """The apply configuration for `ref` with `fields` at the top level (spec, ...)."""
    metadata: dict[str, Any] = {"name": ref.name, "namespace": ref.namespace}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": ref.api_version, "kind": ref.kind, "metadata": metadata, **fields}


def require(observed: Observed, ref: ObjectRef, hint: str) -> Mapping[str, Any]:
    obj = observed.get(ref)
    if not obj:
        raise RouterError(f"{ref} not found; {hint}")
    return obj
