"""Rollout: observe versions and serving -> measure due metrics -> decide -> act.

Triggers: the Rollout itself (create/update/resume), a 2-second timer while anything can move
(steps, analysis intervals, scale-down delays; it also bounds how long an abort written by the
CLI waits), ModelVersion changes of the model (a newly Approved version starts a canary), the
serving Deployments' readiness, and an immediate reconcile when the CLI writes a request into
status. Reconciles of one Rollout never overlap.

Acting, in order: serving Deployments and Services for every version to serve, the stable and
canary Services' selectors, the traffic router's weights (its own field manager), ModelVersion
phases (Production / Deprecated), the Rollout's status, Events; last, the Pods of versions no
longer served are removed.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import kopf
import kubernetes

from finetune_operator import metrics, routers
from finetune_operator.handlers import locks
from finetune_operator.analysis.prometheus import PrometheusProvider
from finetune_operator.builders import rollout as builders
from finetune_operator.k8s import apply, client, events, status
from finetune_operator.k8s.resources import FIELD_MANAGER, MODELVERSIONS, ROLLOUTS
from finetune_operator.logic import analysis, conditions
from finetune_operator.logic import modelversion as modelversion_logic
from finetune_operator.logic import rollout as logic
from finetune_operator.logic.spec import InvalidSpec

logger = logging.getLogger(__name__)

KIND = ROLLOUTS.kind
RESOURCE = (ROLLOUTS.group, ROLLOUTS.version, ROLLOUTS.plural)
BACKOFF_SECONDS = 5
TICK_SECONDS = 2
RESYNC_SECONDS = 60

_lock = locks.ObjectLocks()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def observe(namespace: str, name: str, model: str) -> logic.Observed:
    versions = [
        logic.VersionInfo.from_object(mv)
        for mv in client.custom_objects().list_namespaced_custom_object(
            MODELVERSIONS.group, MODELVERSIONS.version, namespace, MODELVERSIONS.plural
        )["items"]
        if (mv.get("spec") or {}).get("modelName") == model
    ]
    ready = {}
    for deployment in client.apps().list_namespaced_deployment(namespace, label_selector=f"{builders.ROLLOUT_LABEL}={name}").items:
        version = (deployment.metadata.labels or {}).get(builders.VERSION_LABEL)
        if version:
            ready[version] = bool(deployment.status.ready_replicas) and (deployment.status.ready_replicas or 0) >= 1
    return logic.Observed(versions=tuple(versions), ready=ready)


def measure(spec, status_obj, namespace: str, name: str, now: datetime.datetime) -> dict[str, analysis.Measured]:
    due = logic.due_metrics(spec, status_obj, now)
    if not due or spec.analysis is None:
        return {}
    provider = PrometheusProvider(spec.analysis.prometheus.address)
    variables = analysis.QueryVars(
        namespace=namespace,
        rollout=name,
        canary=status_obj.candidate_version or "",
        stable=status_obj.stable_version,
        model=spec.model_name,
    )
    measured = {}
    for metric in due:
        try:
            query = analysis.render_query(metric.query, variables)
        except analysis.QueryTemplateError as exc:
            measured[metric.name] = analysis.Measured(error=str(exc))
            continue
        result = provider.measure(query)
        measured[metric.name] = analysis.Measured(value=result.value, error=result.error)
    return measured


def reconcile_object(body: dict[str, Any]) -> logic.Decision | None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if meta.get("deletionTimestamp"):
        return None
    with _lock(namespace, name), metrics.reconciling(KIND):
        # Read fresh: a request the CLI just wrote must not be handled from a stale body.
        try:
            body = client.custom_objects().get_namespaced_custom_object(ROLLOUTS.group, ROLLOUTS.version, namespace, ROLLOUTS.plural, name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        spec = logic.parse_spec(body.get("spec"))
        current = logic.parse_status(body.get("status"))
        now = _now()
        model = body.get("spec", {}).get("modelName", "")
        observed = observe(namespace, name, model)
        measured = {} if isinstance(spec, InvalidSpec) else measure(spec, current, namespace, name, now)
        decision = logic.decide(name, spec, current, observed, now, generation=meta["generation"], measured=measured)
        if not isinstance(spec, InvalidSpec):
            _act(body, spec, observed, decision)
        if decision.status_changed:
            status.patch(ROLLOUTS, namespace, name, decision.status_patch)
        for event in decision.events:
            events.record(body, event.type, event.reason, event.message)
        return decision


def _act(body: dict[str, Any], spec, observed: logic.Observed, decision: logic.Decision) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    owner = builders.Owner(name=name, namespace=namespace, uid=meta["uid"])
    router = routers.for_rollout(spec.traffic_router, replicas=spec.serving.replicas)
    replicas = {v: spec.serving.replicas for v in decision.serve}
    if isinstance(router, routers.ReplicaRatioRouter) and decision.canary and decision.canary != decision.stable:
        split = routers.split_replicas(spec.serving.replicas, decision.weight)
        replicas[decision.stable] = split.stable
        replicas[decision.canary] = split.canary
    for version in decision.serve:
        info = observed.get(version)
        if info is None:
            continue
        served = builders.ServedVersion(version, info.base_model_uri, info.artifact_uri, info.artifact_type)
        deployment = builders.deployment(owner, spec, served, replicas[version])
        if isinstance(router, routers.ReplicaRatioRouter):
            deployment["spec"].pop("replicas")  # the router's field manager owns it
            existing = _exists("apps/v1", "Deployment", namespace, deployment["metadata"]["name"])
            if not existing:
                deployment["spec"]["replicas"] = replicas[version]
        apply.apply(deployment)
        apply.apply(builders.version_service(owner, spec, version))
    if decision.stable:
        apply.apply(builders.track_service(owner, spec, "stable", decision.stable))
        apply.apply(builders.track_service(owner, spec, "canary", decision.canary or decision.stable))
        _route(router, owner, spec, decision)
    now = _now().replace(microsecond=0)
    for version_name in set(decision.version_phases) | set(decision.version_serving):
        patch: dict[str, Any] = {}
        if version_name in decision.version_phases:
            patch["phase"] = decision.version_phases[version_name]
        if version_name in decision.version_serving:
            try:
                mv = client.custom_objects().get_namespaced_custom_object(
                    MODELVERSIONS.group, MODELVERSIONS.version, namespace, MODELVERSIONS.plural, version_name
                )
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            value, reason, message = decision.version_serving[version_name]
            current = modelversion_logic.parse_status(mv.get("status")).conditions
            updated = conditions.set_condition(current, "Serving", value, reason, message, mv["metadata"].get("generation"), now)
            patch["conditions"] = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in updated]
        status.patch(MODELVERSIONS, namespace, version_name, patch)
    _remove_unserved(namespace, name, set(decision.serve))


def _exists(api_version: str, kind: str, namespace: str, name: str) -> bool:
    try:
        apply._dynamic_client().resources.get(api_version=api_version, kind=kind).get(name=name, namespace=namespace)
    except kubernetes.dynamic.exceptions.NotFoundError:
        return False
    return True


def _route(router, owner: builders.Owner, spec, decision: logic.Decision) -> None:
    port = spec.serving.port
    stable = routers.Backend(
        service=builders.stable_service_name(owner.name), port=port,
        deployment=builders.workload_name(owner.name, decision.stable), version=decision.stable,
    )
    canary_version = decision.canary or decision.stable
    canary = routers.Backend(
        service=builders.canary_service_name(owner.name), port=port,
        deployment=builders.workload_name(owner.name, canary_version), version=canary_version,
    )
    if isinstance(router, routers.ReplicaRatioRouter) and canary_version == decision.stable:
        canary = None
    observed = {}
    for ref in router.targets(owner.name, owner.namespace, stable, canary):
        try:
            observed[ref] = apply._dynamic_client().resources.get(api_version=ref.api_version, kind=ref.kind).get(
                name=ref.name, namespace=ref.namespace
            ).to_dict()
        except (kubernetes.dynamic.exceptions.NotFoundError, kubernetes.dynamic.exceptions.ResourceNotFoundError):
            pass
    try:
        patches = router.desired(owner.name, owner.namespace, stable, canary, decision.weight, observed)
    except routers.RouterError as exc:
        logger.warning("Rollout %s/%s: traffic router: %s", owner.namespace, owner.name, exc)
        return
    for patch in patches:
        resource = apply._dynamic_client().resources.get(api_version=patch.api_version, kind=patch.kind)
        try:
            # The patch carries the resourceVersion it was computed from: a user's edit in between
            # makes it fail (409) instead of being overwritten; the next tick recomputes it.
            resource.server_side_apply(
                body=patch.body, name=patch.name, namespace=patch.namespace,
                field_manager=patch.field_manager, force_conflicts=patch.force,
            )
        except kubernetes.dynamic.exceptions.ConflictError:
            logger.info("Rollout %s/%s: %s changed while routing; retrying next tick", owner.namespace, owner.name, patch.ref)


def _remove_unserved(namespace: str, name: str, serve: set[str]) -> None:
    selector = f"{builders.ROLLOUT_LABEL}={name},{builders.VERSION_LABEL}"
    for deployment in client.apps().list_namespaced_deployment(namespace, label_selector=selector).items:
        version = deployment.metadata.labels.get(builders.VERSION_LABEL)
        if version not in serve:
            apply.delete("apps/v1", "Deployment", namespace, deployment.metadata.name)
            apply.delete("v1", "Service", namespace, deployment.metadata.name)


@kopf.on.resume(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.create(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.update(*RESOURCE, backoff=BACKOFF_SECONDS)
def reconcile(body: kopf.Body, **_: Any) -> None:
    reconcile_object(dict(body))


_last_full: dict[tuple[str, str], float] = {}


def _settled(body: kopf.Body) -> bool:
    """Nothing can move by itself: no canary, no pending request, the spec observed."""
    st = body.get("status") or {}
    history = st.get("history") or []
    if history:
        # The version traffic just left keeps its Pods for scaleDownDelaySeconds, then goes.
        delay = (body.get("spec") or {}).get("scaleDownDelaySeconds", 30)
        last = datetime.datetime.fromisoformat(str(history[-1].get("time", "1970-01-01T00:00:00Z")).replace("Z", "+00:00"))
        if _now() - last <= datetime.timedelta(seconds=delay + 2 * TICK_SECONDS):
            return False
    return (
        st.get("phase") in ("Healthy", "Degraded", "RolledBack")
        and not st.get("candidateVersion")
        and st.get("observedGeneration") == body["metadata"].get("generation")
        and not _request_pending(body)
    )


@kopf.timer(*RESOURCE, interval=TICK_SECONDS, idle=None)
def tick(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    """Steps, analysis intervals and scale-down delays move with time; a settled Rollout is only
    resynced every RESYNC_SECONDS (new versions and serving changes trigger it by their events)."""
    now = time.monotonic()
    if _settled(body) and now - _last_full.get((namespace, name), 0.0) < RESYNC_SECONDS:
        return
    _last_full[(namespace, name)] = now
    reconcile_object(dict(body))


def _request_pending(body: kopf.Body, **_: Any) -> bool:
    st = body.get("status") or {}
    handled = st.get("lastHandledRequest")
    for key in ("abortRequest", "promoteRequest", "rollbackRequest"):
        request = st.get(key) or {}
        if request.get("requestedAt") and (handled is None or request["requestedAt"] > handled):
            return True
    return False


@kopf.on.event(*RESOURCE, when=_request_pending)
def request_written(body: kopf.Body, type: str | None, **_: Any) -> None:
    """The CLI wrote an abort/promote/rollback into status: act now, not at the next tick."""
    if type in ("ADDED", "MODIFIED", None):
        reconcile_object(dict(body))


@kopf.on.event(MODELVERSIONS.group, MODELVERSIONS.version, MODELVERSIONS.plural)
def version_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A version of some model changed phase: reconcile the Rollouts of that model."""
    if type is None:
        return
    model = (body.get("spec") or {}).get("modelName")
    for ro in client.custom_objects().list_namespaced_custom_object(ROLLOUTS.group, ROLLOUTS.version, namespace, ROLLOUTS.plural)["items"]:
        if (ro.get("spec") or {}).get("modelName") == model:
            reconcile_object(ro)


@kopf.on.event("apps", "v1", "deployments", labels={builders.ROLLOUT_LABEL: kopf.PRESENT})
def serving_changed(labels: kopf.Labels, namespace: str, type: str | None, **_: Any) -> None:
    if type is None:
        return
    try:
        ro = client.custom_objects().get_namespaced_custom_object(
            ROLLOUTS.group, ROLLOUTS.version, namespace, ROLLOUTS.plural, labels[builders.ROLLOUT_LABEL]
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return
        raise
    reconcile_object(ro)


__all__ = ["reconcile", "FIELD_MANAGER"]
