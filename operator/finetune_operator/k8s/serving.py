"""Acting on a Rollout's serving: the versions' Deployments and Services, the stable and canary
Services' selectors, the traffic router's weights, and removing what is no longer served.

The Rollout controller (handlers.rollout) decides; this module carries the decision out against
the API, reading what is there from the watch caches (k8s.modelcache) so that nothing already as it
should be is written again, and reads the router's objects for the weight they carry.
"""

from __future__ import annotations

import logging
from typing import Any

import kubernetes

from finetune_operator import routers
from finetune_operator.api.rollout import RolloutStatus
from finetune_operator.builders import rollout as builders
from finetune_operator.k8s import apply, modelcache
from finetune_operator.logic import rollout as logic

logger = logging.getLogger(__name__)


def backends(owner_name: str, spec, stable: str, canary: str | None):
    port = spec.serving.port
    stable_backend = routers.Backend(
        service=builders.stable_service_name(owner_name), port=port,
        deployment=builders.workload_name(owner_name, stable), version=stable,
    )
    canary_version = canary or stable
    canary_backend: routers.Backend | None = routers.Backend(
        service=builders.canary_service_name(owner_name), port=port,
        deployment=builders.workload_name(owner_name, canary_version), version=canary_version,
    )
    router = routers.for_rollout(spec.traffic_router, replicas=spec.serving.replicas)
    if router.owns_replicas and canary_version == stable:
        canary_backend = None
    return router, stable_backend, canary_backend


def read_targets(router, refs) -> dict:
    observed = {}
    for ref in refs:
        try:
            observed[ref] = apply._dynamic_client().resources.get(api_version=ref.api_version, kind=ref.kind).get(
                name=ref.name, namespace=ref.namespace
            ).to_dict()
        except (kubernetes.dynamic.exceptions.NotFoundError, kubernetes.dynamic.exceptions.ResourceNotFoundError):
            pass
    return observed


def observe_routing(spec, namespace: str, name: str, current: RolloutStatus) -> logic.Routing:
    """The weight the router's objects carry for the current stable/candidate, or why it cannot route."""
    assert current.stable_version is not None, "routing is observed only once a version is stable"
    router, stable, canary = backends(name, spec, current.stable_version, current.candidate_version)
    try:
        observed = read_targets(router, router.targets(name, namespace, stable, canary))
        router.desired(name, namespace, stable, canary, current.canary_weight if current.candidate_version else 0, observed)
    except routers.RouterError as exc:
        return logic.Routing(error=str(exc))
    except kubernetes.dynamic.exceptions.DynamicApiError as exc:
        return logic.Routing(error=f"{exc.status} {exc.reason}: {exc.summary()}")
    carried = router.observed_weight(name, namespace, stable, canary, observed)
    weight = current.canary_weight if current.candidate_version else 0
    return logic.Routing(weight=routers.applied_weight(router, weight, carried))


def ensure_versions(owner: builders.Owner, spec, router, observed: logic.Observed, decision: logic.Decision, *,
                    verifier_image: str | None, s3_endpoint: str) -> None:
    """Every version to serve has its Deployment and Service, as they should be (applied only
    when the watched ones differ). With a router that owns replicas, a candidate and the stable
    version share spec.serving.replicas at the decided weight."""
    namespace, name = owner.namespace, owner.name
    replicas = {v: spec.serving.replicas for v in decision.serve}
    if decision.stable and decision.canary and decision.canary != decision.stable:
        counts = router.replica_counts(decision.weight)
        if counts is not None:
            replicas[decision.stable], replicas[decision.canary] = counts
    for version in decision.serve:
        info = observed.get(version)
        if info is None:
            continue
        served = builders.ServedVersion(version, info.base_model_uri, info.artifact_uri, info.artifact_type, info.artifact_digest,
                                        artifact_credentials_secret=info.artifact_credentials_secret,
                                        s3_endpoint=s3_endpoint,
                                        format_schema=info.format_schema,
                                        base_model_credentials_secret=info.base_model_credentials_secret)
        deployment = builders.deployment(owner, spec, served, replicas[version], verifier_image=verifier_image)
        # What is there, from the watch (index rollout_deployments / rollout_services): nothing is
        # applied that is already as it should be.
        existing = modelcache.indexes.deployment(namespace, name, deployment["metadata"]["name"])
        if router.owns_replicas:
            deployment["spec"].pop("replicas")  # the router's field manager owns it
            if existing is None:
                deployment["spec"]["replicas"] = replicas[version]
        digest = builders.applied_digest(deployment)
        deployment["metadata"].setdefault("annotations", {})[builders.APPLIED_DIGEST_ANNOTATION] = digest
        if needs_apply(existing, digest):
            applied = apply.apply(deployment)
            applied_generations[applied["metadata"]["uid"]] = applied["metadata"].get("generation")
        apply_service(builders.version_service(owner, spec, version))


def point_service(owner: builders.Owner, spec, track: str, version: str, observed: logic.Observed) -> set[str]:
    """Point `<rollout>-<track>` at `version` once it is Available.

    Returns the versions whose Pods it selected before or selects now: both keep their Pods this
    reconcile, so a version the Service has just left goes no earlier than the next reconcile,
    once endpoints and routers have moved off it. The Service as it is comes from the watch
    (index `rollout_services`); it is applied only when it differs from what it should be.
    """
    service = builders.track_service(owner, spec, track, version)
    existing = modelcache.indexes.service(owner.namespace, service["metadata"]["name"])
    current = (existing or {}).get("spec", {}).get("selector", {}).get(builders.VERSION_LABEL)
    if current is None or current == version or observed.ready.get(version) or not observed.ready.get(current):
        apply_service(service, existing)
        return {v for v in (current, version) if v}
    return {current}


# The generation each serving Deployment had right after this process applied it, by uid: a
# higher one means someone else changed its spec since, and it is applied again.
applied_generations: dict[str, int | None] = {}


def needs_apply(existing: dict[str, Any] | None, digest: str) -> bool:
    """Apply unless the watched Deployment carries this digest and nobody changed it since."""
    if existing is None:
        return True
    meta = existing["metadata"]
    if (meta.get("annotations") or {}).get(builders.APPLIED_DIGEST_ANNOTATION) != digest:
        return True
    return meta.get("uid") not in applied_generations or applied_generations[meta["uid"]] != meta.get("generation")


def apply_service(service: dict[str, Any], existing: dict[str, Any] | None = None) -> None:
    """Apply a Rollout's Service unless the watched one already has its selector, ports and labels."""
    meta = service["metadata"]
    if existing is None:
        existing = modelcache.indexes.service(meta["namespace"], meta["name"])
    if existing is None or modelcache.project_service(service)["spec"] != existing["spec"] or \
            not builders.labels_within(meta["labels"], existing["metadata"].get("labels") or {}):
        apply.apply(service)


def route(router, owner: builders.Owner, spec, decision: logic.Decision) -> str | None:
    """Apply the decided weights; why they could not be applied, or None."""
    assert decision.stable is not None, "weights are routed only once a version is stable"
    stable, canary = backends(owner.name, spec, decision.stable, decision.canary)[1:]
    for attempt in range(2):
        try:
            observed = read_targets(router, router.targets(owner.name, owner.namespace, stable, canary))
            patches = router.desired(owner.name, owner.namespace, stable, canary, decision.weight, observed)
            for patch in patches:
                resource = apply._dynamic_client().resources.get(api_version=patch.api_version, kind=patch.kind)
                # The patch carries the resourceVersion it was computed from: a user's edit in between
                # makes it fail (409) instead of being overwritten; it is rendered again from the new one.
                resource.server_side_apply(
                    body=patch.body, name=patch.name, namespace=patch.namespace,
                    field_manager=patch.field_manager, force_conflicts=patch.force,
                )
            return None
        except routers.RouterError as exc:
            error = str(exc)
        except kubernetes.dynamic.exceptions.ConflictError as exc:
            error = f"409 Conflict: {exc.summary()}"
            if attempt == 0:
                continue
        except kubernetes.dynamic.exceptions.DynamicApiError as exc:
            error = f"{exc.status} {exc.reason}: {exc.summary()}"
        logger.warning("Rollout %s/%s: traffic router: %s", owner.namespace, owner.name, error)
        return error
    return None


def remove_unserved(namespace: str, name: str, keep: set[str]) -> None:
    """Remove the serving of versions no longer served. `keep` holds the versions the Services
    still select: their Pods go only once traffic has left them (a later reconcile)."""
    for deployment in modelcache.indexes.deployments(namespace, name):
        version = (deployment["metadata"].get("labels") or {}).get(builders.VERSION_LABEL)
        if version is not None and version not in keep:
            apply.delete("apps/v1", "Deployment", namespace, deployment["metadata"]["name"])
            applied_generations.pop(deployment["metadata"].get("uid", ""), None)
            apply.delete("v1", "Service", namespace, deployment["metadata"]["name"])
