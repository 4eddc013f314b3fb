"""Rollout: observe versions and serving -> measure due metrics -> decide -> act.

Triggers: the Rollout itself (create/update/resume), ModelVersion changes of the model (a newly
Approved version starts a canary), the serving Deployments' readiness, an immediate reconcile
when the CLI writes a request into status, and time: a daemon per Rollout comes back exactly
when the last decision said (`Decision.requeue_after`: the end of a pause, the next analysis
measurement, the end of a scale-down delay, a weight to read back), woken early when another
trigger's decision moves that time, and at the latest every RESYNC_SECONDS. A settled Rollout
costs one reconcile a minute, a canary one per thing it waits for, not one every two seconds.
Reconciles of one Rollout never overlap.

Analysis is measured by that daemon before it reconciles, off the Rollout's lock and off kopf's
handler threads (on an analysis pool, each metric bounded in time): a slow or dead Prometheus
delays this Rollout's judgement and nothing else. The reconcile takes the measurements only
while the Rollout still has the candidate, stable version and step they were taken for.

Observing includes the traffic router (the weight its objects carry, or why it cannot route)
and the serving Pods' artifact check, so `decide` never walks on weights that were not applied.

Acting (carried out by k8s.serving, which writes only what differs from the watch caches), in
order: serving Deployments and Services for every version to serve; the stable and
canary Services' selectors, each re-pointed only once the version it will select is Available;
the traffic router's weights (its own field manager; a failure is decided on again, so the
status says Degraded in the same reconcile); the versions' serving records and `Serving` conditions (server-side
apply under this controller's own field manager); the Rollout's status and Events; last, the
Deployments of versions neither served nor selected by a Service are removed — the old version's
Pods go only after the Services stopped selecting them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes

from finetune_operator import config as operator_config
from finetune_operator import metrics, routers
from finetune_operator.handlers import locks
from finetune_operator.analysis.prometheus import PrometheusProvider
from finetune_operator.builders import rollout as builders
from finetune_operator.k8s import client, events, modelcache, serving, status
from finetune_operator.k8s.resources import FIELD_MANAGER, MODELVERSIONS, ROLLOUTS
from finetune_operator.logic import analysis, conditions
from finetune_operator.logic import modelversion as modelversion_logic
from finetune_operator.logic import rollout as logic
from finetune_operator.logic.spec import InvalidSpec
from finetune_operator.api.modelversion import ServingRecord
from finetune_operator.api.rollout import FORCE_VERSION_ANNOTATION, RolloutStatus

SERVING = modelversion_logic.SERVING

logger = logging.getLogger(__name__)

KIND = ROLLOUTS.kind
RESOURCE = (ROLLOUTS.group, ROLLOUTS.version, ROLLOUTS.plural)
BACKOFF_SECONDS = 5
RESYNC_SECONDS = 60

_lock = locks.ObjectLocks()
_schedule = locks.Schedule()
# Prometheus queries run here, never on kopf's handler threads nor under a Rollout's lock.
_analysis_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="analysis")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


VERIFY_CONTAINER = builders.VERIFY_CONTAINER


def _versions(namespace: str, model: str) -> tuple[logic.VersionInfo, ...]:
    """The model's versions, from the ModelVersion index (see k8s.modelcache)."""
    return tuple(logic.VersionInfo.from_object(mv) for mv in modelcache.indexes.model_versions(namespace, model))


def observe(namespace: str, name: str, model: str, spec=None, current: RolloutStatus | None = None) -> logic.Observed:
    """Versions, serving and routing as they stand: versions, Deployments and Pods from the
    watch indexes, the router's objects (a few, per candidate) from the API."""
    versions = _versions(namespace, model)
    ready = {}
    for deployment in modelcache.indexes.deployments(namespace, name):
        version = (deployment["metadata"].get("labels") or {}).get(builders.VERSION_LABEL)
        if version:
            ready[version] = _available(deployment)
    failures = _serving_failures(namespace, name) if not all(ready.values()) else {}
    routing = None
    if spec is not None and not isinstance(spec, InvalidSpec) and current is not None and current.stable_version:
        routing = serving.observe_routing(spec, namespace, name, current)
    return logic.Observed(versions=versions, ready=ready, routing=routing, serving_failures=failures)


def _available(deployment: Mapping[str, Any]) -> bool:
    """Serving Pods of the Deployment's current template are up: a Service may point at them."""
    st = deployment.get("status") or {}
    if (st.get("observedGeneration") or 0) < (deployment["metadata"].get("generation") or 0):
        return False
    available = next((c for c in st.get("conditions") or [] if c.get("type") == "Available"), None)
    return bool(st.get("readyReplicas")) and (st.get("availableReplicas") or 0) >= 1 and (available is None or available.get("status") == "True")


def _serving_failures(namespace: str, name: str) -> dict[str, tuple[str, str]]:
    """Versions whose Pods refuse to serve: the artifact check (an init container) failed.

    The Rollout's Pods from the serving-Pod index, only while some version is not ready.
    """
    failures: dict[str, tuple[str, str]] = {}
    for pod in modelcache.indexes.serving_pods(namespace, name):
        version = (pod["metadata"].get("labels") or {}).get(builders.VERSION_LABEL)
        if version is None:
            continue  # not a version's serving Pod
        for container in pod["status"].get("initContainerStatuses") or []:
            if container.get("name") != VERIFY_CONTAINER:
                continue
            for state in (container.get("state"), container.get("lastState")):
                terminated = (state or {}).get("terminated")
                if terminated is not None and terminated.get("exitCode") not in (0, None):
                    message = (terminated.get("message") or "").strip() or f"the artifact check exited with {terminated.get('exitCode')}"
                    failures[version] = (builders.REASON_DIGEST_MISMATCH, f"{version}: {message}")
    return failures


@dataclasses.dataclass(frozen=True)
class DueAnalysis:
    """The measurements a Rollout's analysis is waiting for, read without its lock.

    `key` is what they belong to — candidate, stable and step — and a reconcile takes them only
    while its Rollout is still there; anything else moved, they are dropped and taken again.
    """

    key: tuple[str | None, str | None, int | None]
    address: str
    metrics: tuple[Any, ...]
    variables: analysis.QueryVars


def analysis_key(current: RolloutStatus) -> tuple[str | None, str | None, int | None]:
    return (current.candidate_version, current.stable_version, current.current_step_index)


def _read(namespace: str, name: str) -> dict[str, Any] | None:
    """The Rollout as the API server has it now; None when it is gone or being deleted."""
    try:
        body = client.custom_objects().get_namespaced_custom_object(ROLLOUTS.group, ROLLOUTS.version, namespace, ROLLOUTS.plural, name)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return None if body["metadata"].get("deletionTimestamp") else body


def due_analysis(namespace: str, name: str) -> DueAnalysis | None:
    """What is due to be measured now (a read of the Rollout and its versions, no lock held)."""
    body = _read(namespace, name)
    if body is None:
        return None
    spec = logic.parse_spec(body.get("spec"))
    if isinstance(spec, InvalidSpec):
        return None
    current = logic.parse_status(body.get("status"))
    address = analysis.prometheus_address(spec.analysis)
    if address is None or not logic.analysing(spec, current):
        return None
    # Which metrics exist depends only on the versions (their format schemas): not the serving,
    # routing and Pod reads of a whole `observe`, which the reconcile that follows makes anyway.
    due = logic.due_metrics(spec, current, _now(), logic.Observed(versions=_versions(namespace, spec.model_name)))
    if not due:
        return None
    variables = analysis.QueryVars(
        namespace=namespace, rollout=name, canary=current.candidate_version or "",
        stable=current.stable_version, model=spec.model_name,
    )
    return DueAnalysis(key=analysis_key(current), address=address, metrics=tuple(due), variables=variables)


async def measure_due(due: DueAnalysis) -> dict[str, analysis.Measured]:
    """Every due metric at once, each on the analysis pool (never kopf's handler threads) and
    bounded in time: a slow or dead Prometheus delays this Rollout's analysis, nothing else."""
    loop = asyncio.get_running_loop()
    provider = PrometheusProvider(due.address)
    # A relative metric runs two queries, each with the provider's own timeout.
    limit = 2 * provider.timeout + 5

    async def one(metric: Any) -> analysis.Measured:
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(_analysis_pool, measure_metric, provider, metric, due.variables), timeout=limit
            )
        except TimeoutError:
            return analysis.Measured(error=f"Prometheus at {due.address}: no answer within {limit:g}s")

    results = await asyncio.gather(*(one(metric) for metric in due.metrics))
    return {metric.name: result for metric, result in zip(due.metrics, results)}


def measure_metric(provider, metric, variables: analysis.QueryVars) -> analysis.Measured:
    """One metric: the canary's query, and for a relative metric the same query for stable."""
    runs = [variables]
    if metric.relative:
        if not variables.stable:
            return analysis.Measured(error="no stable version to compare the canary with")
        runs.append(dataclasses.replace(variables, canary=variables.stable))
    results = []
    for run in runs:
        try:
            query = analysis.render_query(metric.query, run)
        except analysis.QueryTemplateError as exc:
            return analysis.Measured(error=str(exc))
        result = provider.measure_histogram(query) if metric.mann_whitney is not None else provider.measure(query)
        if result.error is not None:
            return analysis.Measured(error=result.error)
        results.append(result)
    if metric.mann_whitney is not None:
        return analysis.Measured(canary_samples=results[0].buckets, stable_samples=results[1].buckets)
    return analysis.Measured(value=results[0].value, stable_value=results[1].value if len(results) > 1 else None)


def reconcile_object(
    body: dict[str, Any], measured: Mapping[str, analysis.Measured] | None = None,
    measured_for: tuple[str | None, str | None, int | None] | None = None,
) -> logic.Decision | None:
    """Observe, decide, act for one Rollout, under its lock. `measured`: analysis results the
    daemon took off the lock for `measured_for` (candidate, stable, step); used only if the
    Rollout is still there."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if meta.get("deletionTimestamp"):
        return None
    with _lock(namespace, name), metrics.reconciling(KIND):
        # Read fresh: a request the CLI just wrote must not be handled from a stale body.
        fresh = _read(namespace, name)
        if fresh is None:
            return None
        body = fresh
        meta = body["metadata"]
        spec = logic.parse_spec(body.get("spec"))
        current = logic.parse_status(body.get("status"))
        now = _now()
        model = body.get("spec", {}).get("modelName", "")
        observed = observe(namespace, name, model, spec, current)
        taken = measured if measured and measured_for == analysis_key(current) else {}
        force_version = (meta.get("annotations") or {}).get(FORCE_VERSION_ANNOTATION)

        def decide(seen: logic.Observed) -> logic.Decision:
            return logic.decide(name, spec, current, seen, now, generation=meta["generation"], measured=taken,
                                force_version=force_version)

        decision = decide(observed)
        if not isinstance(spec, InvalidSpec):
            routing_error = _act(body, spec, observed, decision)
            if routing_error and not (observed.routing and observed.routing.error):
                # The router refused the weights just decided: decide again knowing it, so the
                # status says Degraded and the canary does not walk on weights never applied.
                carried = observed.routing.weight if observed.routing else None
                observed = dataclasses.replace(observed, routing=logic.Routing(weight=carried, error=routing_error))
                decision = decide(observed)
        # Events first, named by the transition: a kill before the status patch repeats the
        # same decision, whose Events exist already (ignored); never a transition without its Event.
        for event in decision.events:
            events.record(body, event.type, event.reason, event.message, key=events.transition_key(body.get("status"), event.message))
        if decision.status_changed:
            status.patch(ROLLOUTS, namespace, name, decision.status_patch)
        _schedule.due_in((namespace, name), min(decision.requeue_after or RESYNC_SECONDS, RESYNC_SECONDS))
        return decision


def _act(body: dict[str, Any], spec, observed: logic.Observed, decision: logic.Decision) -> str | None:
    """Serving, Services, router weights, the versions' serving records, then scale-down.

    Returns why the router could not apply the weights, or None.
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    owner = builders.Owner(name=name, namespace=namespace, uid=meta["uid"])
    router = routers.for_rollout(spec.traffic_router, replicas=spec.serving.replicas)
    settings = operator_config.current()
    serving.ensure_versions(owner, spec, router, observed, decision,
                            verifier_image=settings.trainer_image, s3_endpoint=settings.s3_endpoint)
    selected: set[str] = set()
    if decision.stable:
        # A Service is re-pointed only at a version whose Deployment is Available: until then it
        # keeps selecting the version that serves now, so no request meets an empty Service.
        for track, version in (("stable", decision.stable), ("canary", decision.canary or decision.stable)):
            selected |= serving.point_service(owner, spec, track, version, observed)
    routing_error = serving.route(router, owner, spec, decision) if decision.stable else None
    _write_serving_conditions(namespace, name, decision)
    serving.remove_unserved(namespace, name, set(decision.serve) | selected)
    return routing_error


def _write_serving_conditions(namespace: str, rollout: str, decision: logic.Decision) -> None:
    """Each version's serving record (`status.serving`) and `Serving` condition, applied under
    the Rollout controller's own field manager (the ModelVersion controller owns the phase and
    derives it from the record)."""
    from finetune_operator.handlers import modelversion as modelversion_handler

    now = _now().replace(microsecond=0)
    for version_name, serving_now in decision.version_serving.items():
        # A GET, not the ModelVersion index: this runs only on a transition (a version made
        # stable, replaced or refused), and the condition's lastTransitionTime and the record's
        # are kept from the newest copy, which the index may not have caught up with yet.
        try:
            mv = client.custom_objects().get_namespaced_custom_object(
                MODELVERSIONS.group, MODELVERSIONS.version, namespace, MODELVERSIONS.plural, version_name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                continue
            raise
        current = modelversion_logic.parse_status(mv.get("status"))
        updated = conditions.set_condition(
            current.conditions, SERVING, serving_now.condition_status, serving_now.reason, serving_now.message,
            mv["metadata"].get("generation"), now,
        )
        owned = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in updated if c.type == SERVING]
        record = ServingRecord(
            state=serving_now.state,
            rollout=rollout,
            last_transition_time=current.serving.last_transition_time
            if current.serving is not None and current.serving.state == serving_now.state
            else now,
        )
        body = {"conditions": owned, modelversion_logic.SERVING_FIELD: record.model_dump(mode="json", by_alias=True, exclude_none=True)}
        written = status.apply(MODELVERSIONS, namespace, version_name, body, status.ROLLOUT_MANAGER)
        if written is not None:
            modelversion_handler.reconcile_object(written)


@kopf.on.resume(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.create(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.update(*RESOURCE, backoff=BACKOFF_SECONDS)
def reconcile(body: kopf.Body, **kwargs: Any) -> None:
    modelcache.indexes.bind(kwargs)
    reconcile_object(dict(body))


@kopf.daemon(*RESOURCE, cancellation_timeout=5.0)
async def requeue(namespace: str | None, name: str, stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """Reconcile the Rollout when its last decision said to (or RESYNC_SECONDS after it).

    An asyncio task on kopf's event loop, not a thread: a hundred waiting Rollouts hold no worker.
    The reconcile itself runs on a worker thread, under the Rollout's lock like every other.
    """
    assert namespace is not None, "a Rollout is namespaced: kopf passes its namespace"
    modelcache.indexes.bind(kwargs)
    key = (namespace, name)
    loop = asyncio.get_running_loop()
    try:
        while not stopped:
            delay = _schedule.delay(key, RESYNC_SECONDS)
            if delay > 0:
                await _schedule.wait(key, delay)
                continue
            _schedule.due_in(key, RESYNC_SECONDS)  # until this reconcile's decision says otherwise
            try:
                due = await loop.run_in_executor(_analysis_pool, due_analysis, namespace, name)
                measured = await measure_due(due) if due is not None else None
                await loop.run_in_executor(
                    None, reconcile_object, {"metadata": {"namespace": namespace, "name": name}},
                    measured, due.key if due is not None else None,
                )
            except kubernetes.client.ApiException as exc:
                logger.warning("Rollout %s/%s: reconcile failed (%s %s); retrying in %ss", namespace, name, exc.status, exc.reason, BACKOFF_SECONDS)
                _schedule.due_in(key, BACKOFF_SECONDS)
    finally:
        if stopped:
            _schedule.forget(key)


def _request_pending(body: kopf.Body, **_: Any) -> bool:
    st = body.get("status") or {}
    handled = st.get("lastHandledRequest")
    for key in ("abortRequest", "promoteRequest", "rollbackRequest"):
        request = st.get(key) or {}
        if request.get("requestedAt") and (handled is None or request["requestedAt"] > handled):
            return True
    return False


@kopf.on.event(*RESOURCE, when=_request_pending)
def request_written(body: kopf.Body, type: str | None, **kwargs: Any) -> None:
    """The CLI wrote an abort/promote/rollback into status: act now, not at the next tick."""
    modelcache.indexes.bind(kwargs)
    if type in ("ADDED", "MODIFIED", None):
        reconcile_object(dict(body))


@kopf.index(*RESOURCE)
def rollouts_by_model(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str | None, Any], str]:
    """Rollout names by (namespace, modelName), from the Rollout watch: which Rollouts a
    ModelVersion's change concerns, without a LIST per ModelVersion event."""
    return {(namespace, spec.get("modelName")): name}


@kopf.index(*RESOURCE)
def rollout_bodies(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[tuple[str | None, str], dict[str, Any]]:
    """Each Rollout by (namespace, name): what retention reads of the Rollouts of a model."""
    return {(namespace, name): modelcache.project_body(body)}


@kopf.index("apps", "v1", "deployments", labels={builders.ROLLOUT_LABEL: kopf.PRESENT})
def rollout_deployments(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> dict[tuple[str | None, str], dict[str, Any]]:
    """The serving Deployments by (namespace, Rollout): which version is Available."""
    return {(namespace, labels[builders.ROLLOUT_LABEL]): modelcache.project_deployment(body)}


@kopf.index("", "v1", "services", labels={builders.ROLLOUT_LABEL: kopf.PRESENT})
def rollout_services(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[tuple[str | None, str], dict[str, Any]]:
    """The Rollouts' Services by (namespace, name): which version a track Service selects."""
    return {(namespace, name): modelcache.project_service(body)}


@kopf.index("", "v1", "pods", labels={builders.ROLLOUT_LABEL: kopf.PRESENT})
def rollout_pods(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> dict[tuple[str | None, str], dict[str, Any]]:
    """The serving Pods by (namespace, Rollout): whose artifact check refused to serve."""
    return {(namespace, labels[builders.ROLLOUT_LABEL]): modelcache.project_serving_pod(body)}


@kopf.on.event(MODELVERSIONS.group, MODELVERSIONS.version, MODELVERSIONS.plural)
def version_changed(body: kopf.Body, namespace: str | None, type: str | None, **kwargs: Any) -> None:
    """A version of some model changed phase: reconcile the Rollouts of that model."""
    assert namespace is not None, "a ModelVersion is namespaced: kopf passes its namespace"
    modelcache.indexes.bind(kwargs)
    if type is None:
        return
    model = (body.get("spec") or {}).get("modelName")
    by_model: kopf.Index = kwargs["rollouts_by_model"]
    for rollout in sorted(by_model.get((namespace, model), ())):
        reconcile_object({"metadata": {"namespace": namespace, "name": rollout}})


@kopf.on.event("apps", "v1", "deployments", labels={builders.ROLLOUT_LABEL: kopf.PRESENT})
def serving_changed(labels: kopf.Labels, namespace: str | None, type: str | None, **kwargs: Any) -> None:
    """A serving Deployment changed (became Available, lost Pods): reconcile its Rollout, if the
    index knows it (the reconcile reads it fresh)."""
    assert namespace is not None, "a Deployment is namespaced: kopf passes its namespace"
    modelcache.indexes.bind(kwargs)
    if type is None:
        return
    rollout = labels[builders.ROLLOUT_LABEL]
    if modelcache.indexes.rollout(namespace, rollout) is not None:
        reconcile_object({"metadata": {"namespace": namespace, "name": rollout}})


__all__ = ["reconcile", "FIELD_MANAGER"]
