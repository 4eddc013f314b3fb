"""FineTuneJob: observe -> decide (`logic.finetunejob.decide`) -> act (`k8s`).

One reconcile function, triggered by every change that matters: the FineTuneJob itself
(create/update/resume), its child Jobs and Pods and its progress ConfigMap (watched by label),
and, while it runs, a slow timer as a safety net. A finished job has no timer: its watch events
set its TTL deadline (`_ttl`), and one thread deletes each job when its deadline comes. Reconciles of one object never overlap (a
lock per object), and every child has a deterministic name, so duplicate triggers are harmless.

A reconcile reads nothing from the API: the FineTuneJob, its children and its ModelVersion come
from kopf indexes fed by the same watches (`k8s.watchcache`), so its requests are the writes it
decides. A finished job is read from the index and its children not at all.

A spec that cannot be parsed or makes no sense is a *permanent* problem: it becomes an
`Accepted=False/InvalidSpec` condition and a Warning Event, and the handler succeeds, so kopf
does not retry it in a loop. API errors while acting are transient: they propagate and kopf
retries after `backoff` seconds.

Deletion goes through kopf's finalizer: the Jobs are deleted first (their Pods get SIGTERM and
save a checkpoint); the run's scratch (checkpoints, prepared data) is removed only when
spec.deleteArtifactsOnDelete asks, and the trained artifact never. A namespace being deleted
never waits on the finalizer: what can no longer be created there is skipped.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
import kubernetes

from finetune_operator import config as operator_config
from finetune_operator import metrics
from finetune_operator.handlers import locks, workers
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders.labels import FINETUNEJOB_LABEL
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.k8s import apply, client, dryrun, events, modelcache, registry, status, watchcache
from finetune_operator.k8s.resources import FINETUNEJOBS, MODELVERSIONS
from finetune_operator.logic import finetunejob, finetunejob_children
from finetune_operator.logic.finetunejob_spec import resolve_references
from finetune_operator.logic.spec import InvalidSpec

logger = logging.getLogger(__name__)

KIND = FINETUNEJOBS.kind
RESOURCE = (FINETUNEJOBS.group, FINETUNEJOBS.version, FINETUNEJOBS.plural)
BACKOFF_SECONDS = 10
RESYNC_SECONDS = 30
CHILD_LABELS = {FINETUNEJOB_LABEL: kopf.PRESENT}
FINISHED_PHASES = ("Succeeded", "Failed")

_lock = locks.ObjectLocks()
_waiting = locks.Pending()
_seen = locks.Fingerprints()
_cache = watchcache.FineTuneJobCache()


# --- watch caches: what a reconcile reads, kept in memory from the watch streams -------------------
# kopf runs these before any handler of the same event, so a handler sees its event's object.


@kopf.index(*RESOURCE)
def finetunejob_bodies(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict:
    assert namespace is not None, "a FineTuneJob is namespaced: kopf passes its namespace"
    return {(namespace, name): watchcache.project_finetunejob(body)}


@kopf.index("batch", "v1", "jobs", labels=CHILD_LABELS)
def finetunejob_jobs(body: kopf.Body, **_: Any) -> dict | None:
    return watchcache.child_entry("Job", body)


@kopf.index("", "v1", "pods", labels=CHILD_LABELS)
def finetunejob_pods(body: kopf.Body, **_: Any) -> dict | None:
    return watchcache.child_entry("Pod", body)


@kopf.index("", "v1", "configmaps", labels=CHILD_LABELS)
def finetunejob_config_maps(body: kopf.Body, **_: Any) -> dict | None:
    return watchcache.child_entry("ConfigMap", body)


@kopf.index(MODELVERSIONS.group, MODELVERSIONS.version, MODELVERSIONS.plural, labels={mv_builders.SOURCE_UID_LABEL: kopf.PRESENT})
def modelversions_by_source(body: kopf.Body, **_: Any) -> dict | None:
    return watchcache.model_version_entry(body)


@kopf.index("", "v1", "events", field="reason", value=watchcache.FAILED_CREATE)
def job_pod_creation_failures(body: kopf.Body, **_: Any) -> dict | None:
    return watchcache.creation_failure_entry(body)


def _bind(kwargs: Mapping[str, Any]) -> None:
    """The watch caches a reconcile reads: the job's own and its children, and the ModelVersions
    a spec may name (replay, continual learning)."""
    _cache.bind(kwargs)
    modelcache.indexes.bind(kwargs)


def settings() -> builders.Settings:
    cfg = operator_config.current()
    return builders.Settings(
        trainer_image=cfg.trainer_image,
        artifact_store=cfg.artifact_store,
        artifact_store_size=cfg.artifact_store_size,
        allowed_host_paths=cfg.allowed_host_paths,
        model_cache=cfg.model_cache,
        model_cache_max_bytes=operator_config.quantity_bytes(cfg.model_cache_max_size),
        trainer_service_account_annotations=tuple(sorted(cfg.trainer_service_account_annotations.items())),
        hub_offline=cfg.hub_offline,
        hub_endpoint=cfg.hub_endpoint,
        s3_endpoint=cfg.s3_endpoint,
        evaluation_cache=cfg.evaluation_cache,
        gpu_sustained_flops=cfg.gpu_sustained_flops,
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def reconcile_object(body: dict[str, Any]) -> finetunejob.Decision | None:
    """Reconcile one FineTuneJob body: the whole observe -> decide -> act loop."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return None
    return _reconcile_fresh(meta["namespace"], meta["name"], meta["uid"])


def _reconcile_fresh(namespace: str, name: str, uid: str | None, on_locked=None) -> finetunejob.Decision | None:
    """Under the object's lock: read the FineTuneJob (of `uid`, or whichever exists) and reconcile it."""
    with _lock(namespace, name), metrics.reconciling(KIND):
        if on_locked is not None:
            on_locked()
        # Read it inside the lock: the body an event carried can predate the status the
        # previous reconcile wrote, and deciding from it would repeat that transition's Events.
        body = _read(namespace, name)
        if body is None:
            return None
        meta = body["metadata"]
        if meta.get("deletionTimestamp") or (uid is not None and meta["uid"] != uid):
            return None
        return _reconcile_locked(body, builders.Owner(name=name, namespace=namespace, uid=meta["uid"]))


def _read(namespace: str, name: str) -> dict[str, Any] | None:
    """The newest FineTuneJob known: from the index, or as this operator's last write returned it."""
    try:
        return _cache.finetunejob(namespace, name)
    except watchcache.Stale:
        try:
            return client.custom_objects().get_namespaced_custom_object(
                FINETUNEJOBS.group, FINETUNEJOBS.version, namespace, FINETUNEJOBS.plural, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _refused_children(spec: Any, owner: builders.Owner) -> InvalidSpec | None:
    """Before the first child exists: each child as a server-side dry run; refusals name spec fields.

    The evaluation Job is tried only when the spec asks for an evaluation: otherwise it is never
    created (an edit that turns evaluation on later comes after the first child, as any edit).
    """
    try:
        objects = [
            *(obj for obj in builders.setup_objects(owner, spec, settings()) if obj["kind"] not in dryrun.NAME_ONLY_KINDS),
            builders.prepare_job(owner, spec, settings()),
            builders.train_job(owner, spec, settings()),
            *([builders.eval_job(owner, spec, settings())] if spec.evaluation.enabled else []),
        ]
    except builders.RenderError:
        return None  # decide() reports it, naming the field
    problems = dryrun.refusals(objects)
    return InvalidSpec(problems) if problems else None


def finished(status: Any) -> bool:
    """The job is history: `decide` reads none of its children, and nothing changes it but an edit.

    The same test as `decide`'s: a terminal phase with a completion time (a Failed without one,
    an invalid spec, may still start when the reason goes away, so it is not finished).
    """
    status = status or {}
    return status.get("phase") in FINISHED_PHASES and bool(status.get("completionTime"))


def _reconcile_locked(body: dict[str, Any], owner: builders.Owner, *, registered: bool = False) -> finetunejob.Decision | None:
    meta = body["metadata"]
    namespace, name = owner.namespace, owner.name
    if finished(body.get("status")):
        # `decide` ignores the children of a finished job (it only records an edit's generation).
        observed = finetunejob.Children()
    else:
        observed = _cache.children(namespace, name)
        observed = dataclasses.replace(observed, model_version=_cache.model_version(namespace, meta["uid"]))
        lagging = watchcache.behind(observed)
        if lagging is not None:
            logger.debug("FineTuneJob %s/%s: %s; deciding once its event arrives", namespace, name, lagging)
            return None
    spec = finetunejob.parse_spec(body.get("spec"))
    if not finished(body.get("status")) and not isinstance(spec, InvalidSpec):
        spec = resolve_references(spec, lambda version: modelcache.indexes.model_version(namespace, version))
    if not finished(body.get("status")) and not isinstance(spec, InvalidSpec) and not observed.jobs and observed.config is None:
        spec = _refused_children(spec, owner) or spec
    decision = finetunejob.decide(
        spec,
        finetunejob.parse_status(body.get("status")),
        observed,
        now=_now(),
        generation=meta["generation"],
        owner=owner,
        settings=settings(),
        gpu_hour_price=operator_config.current().gpu_hour_price,
    )
    if decision.register is not None:
        if registered:
            raise kopf.TemporaryError("the registered ModelVersion is not visible yet", delay=5)
        registration = decision.register
        mv = registry.register(namespace, name, meta["uid"], registration.model_name, registration.version, registration.spec)
        _cache.registered(namespace, meta["uid"], mv)
        _record_registered(body, mv)
        # Decide again with the version in place, so the job finishes in this reconcile.
        return _reconcile_locked(body, owner, registered=True)
    try:
        for group in creation_groups(decision.create):
            for created in apply.concurrently(apply.create, group):
                _cache.created(created)
    except kubernetes.client.ApiException as exc:
        if not namespace_going_away(exc):
            raise
        logger.info("FineTuneJob %s/%s: its namespace is being deleted; nothing more is started", namespace, name)
        return decision
    for job_name, suspend in decision.suspend:
        apply.set_job_suspended(namespace, job_name, suspend)
    if observed.model_version is not None and decision.status_changed:
        # Killed between registering and its Event, the re-run registers nothing: record it here.
        _record_registered(body, observed.model_version)
    # Events first, named by the transition: a kill before the status patch repeats the same
    # decision, whose Events exist already (ignored); never a transition without its Event.
    for event in decision.events:
        events.record(body, event.type, event.reason, event.message, key=events.transition_key(body.get("status"), event.message))
    if decision.status_changed:
        _cache.wrote(status.patch(FINETUNEJOBS, namespace, name, decision.status_patch))
    metrics.finetunejob_phases.observe(namespace, name, decision.status.phase)
    return decision


def creation_groups(objects: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """`objects` in groups that may be created together, the groups in order.

    A Job waits for everything before it: its Pod is refused while its ServiceAccount is missing,
    and it mounts the ConfigMaps. Objects that are not Jobs (ServiceAccount, Role, RoleBinding,
    ConfigMaps) only name each other, so consecutive ones go out together.
    """
    groups: list[list[Mapping[str, Any]]] = []
    for obj in objects:
        if obj.get("kind") != "Job" and groups and groups[-1][0].get("kind") != "Job":  # a Job is alone in its group
            groups[-1].append(obj)
        else:
            groups.append([obj])
    return groups


def _record_registered(body: dict[str, Any], mv: Mapping[str, Any]) -> None:
    """The job's one Registered Event, named by the version (recorded once whoever calls first)."""
    mv_name = mv["metadata"]["name"]
    events.record(body, "Normal", "Registered", f"registered ModelVersion {mv_name}", key=mv_name)


def queue_reconcile(namespace: str, name: str) -> None:
    """Reconcile the FineTuneJob of a child event on a reconcile thread, coalescing bursts.

    Called from the event loop; returns at once. When a reconcile of that job is already
    queued, or waiting for its lock, this event is covered: the waiting one reads the job and its
    children only once it holds the lock, so it sees what this event reported. A Pod's start
    alone brings a handful of events; 1000 jobs, thousands.
    """
    key = (namespace, name)
    if _waiting.claim(key):
        workers.submit(_reconcile_claimed, key, what=f"reconcile of FineTuneJob {namespace}/{name}")


def _reconcile_claimed(key: tuple[str, str]) -> None:
    try:
        _reconcile_fresh(*key, None, on_locked=lambda: _waiting.release(key))
    finally:
        _waiting.release(key)


@kopf.on.resume(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.create(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.update(*RESOURCE, backoff=BACKOFF_SECONDS)
def reconcile(body: kopf.Body, **kwargs: Any) -> None:
    _bind(kwargs)
    reconcile_object(dict(body))


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "pods", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "configmaps", labels={FINETUNEJOB_LABEL: kopf.PRESENT, builders.STAGE_LABEL: "progress"})
async def child_changed(labels: kopf.Labels, namespace: str | None, type: str | None, body: kopf.Body, **kwargs: Any) -> None:
    """A child moved: queue a reconcile of its FineTuneJob (found by label, not by ownerReference).

    Events that change nothing `decide` reads (a Pod's IP, its heartbeats) are dropped. Runs in
    the event loop and returns at once (`handlers.workers`): the event's body is not kept while
    the reconcile waits for a thread.
    """
    assert namespace is not None, "a Job, Pod or ConfigMap is namespaced: kopf passes its namespace"
    _bind(kwargs)
    if type is None:  # the initial listing: resume handlers cover it
        return
    uid = body.get("metadata", {}).get("uid")
    if uid and not _seen.changed(uid, finetunejob_children.child_fingerprint(body.get("kind", ""), body), gone=type == "DELETED"):
        return
    queue_reconcile(namespace, labels[FINETUNEJOB_LABEL])


@kopf.on.event("", "v1", "events", field="reason", value=watchcache.FAILED_CREATE)
async def pod_creation_refused(namespace: str | None, type: str | None, body: kopf.Body, **kwargs: Any) -> None:
    """The API refused a Job's Pod (FailedCreate): reconcile the FineTuneJob that Job belongs to.

    Nothing else moves when that happens (the Job stays active=0, no Pod appears), so without this
    the job would show Preparing until the next resync.
    """
    _bind(kwargs)
    involved = body.get("involvedObject") or {}
    if type is None or type == "DELETED" or involved.get("kind") != "Job":
        return
    owner = _cache.finetunejob_of_job(involved.get("namespace") or namespace or "", involved.get("name", ""))
    if owner is not None:
        queue_reconcile(involved.get("namespace") or namespace or "", owner)


def needs_timer(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    """A finished job has no timer at all: only an edit changes it (its update handler sees that),
    and its TTL is a deadline in `_ttl`. kopf stops the timer when this turns False and starts it
    when it turns True."""
    return not finished(status)


@kopf.timer(*RESOURCE, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, idle=None, when=needs_timer)
def resync(body: kopf.Body, status: kopf.Status, namespace: str | None, **kwargs: Any) -> None:
    """Safety net for missed events while the job runs."""
    assert namespace is not None, "a FineTuneJob is namespaced: kopf passes its namespace"
    _bind(kwargs)
    if not finished(status):
        reconcile_object(dict(body))


def ttl_deadline(spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> float | None:
    """When a finished job's TTL passes (epoch seconds); None when it has none or is not finished."""
    ttl = (spec or {}).get("ttlSecondsAfterFinished")
    if ttl is None or not finished(status):
        return None
    completed = datetime.datetime.fromisoformat(str((status or {})["completionTime"]).replace("Z", "+00:00"))
    return (completed + datetime.timedelta(seconds=int(ttl))).timestamp()


def _ttl_passed(key: tuple[str, str]) -> None:
    """A deadline in `_ttl` came: delete the job if the watch cache still says its TTL passed
    (an edit of the TTL moves the deadline through `track_ttl`; this re-check covers a race)."""
    namespace, name = key
    body = _cache.finetunejob(namespace, name)
    if body is None:
        return
    deadline = ttl_deadline(body.get("spec"), body.get("status"))
    if deadline is None:
        return
    if deadline > _now().timestamp():
        _ttl.set(key, deadline)
        return
    ttl = body["spec"]["ttlSecondsAfterFinished"]
    logger.info("FineTuneJob %s/%s: TTL of %ss after finishing passed; deleting it", namespace, name, ttl)
    apply.delete(FINETUNEJOBS.api_version, KIND, namespace, name)


_ttl = locks.Deadlines(_ttl_passed, clock=lambda: _now().timestamp())


@kopf.on.event(*RESOURCE)
async def track_ttl(type: str | None, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any) -> None:
    """Every watch event of a FineTuneJob (the initial listing too) sets or cancels its TTL
    deadline from the body it carries: no API request, no timer, no thread (it runs in the
    event loop)."""
    assert namespace is not None, "a FineTuneJob is namespaced: kopf passes its namespace"
    _bind(kwargs)
    deadline = None
    if type != "DELETED" and not body.get("metadata", {}).get("deletionTimestamp"):
        deadline = ttl_deadline(body.get("spec"), body.get("status"))
    if deadline is None:
        _ttl.cancel((namespace, name))
    else:
        _ttl.set((namespace, name), deadline)


@kopf.on.startup()
def start_ttl(**_: Any) -> None:
    _ttl.start(name="finetunejob-ttl")


@kopf.on.cleanup()
def stop_ttl(**_: Any) -> None:
    _ttl.stop()


def namespace_going_away(exc: kubernetes.client.ApiException) -> bool:
    """The API refused because the namespace is being deleted (403) or is gone (404).

    Nothing can be created in such a namespace, and everything in it goes with it: a finalizer
    that waited for that would hold the namespace's deletion forever.
    """
    if exc.status == 404:
        return True
    return exc.status == 403 and "being terminated" in str(exc.body or "")


@kopf.on.delete(*RESOURCE, backoff=BACKOFF_SECONDS)
def stop(body: kopf.Body, spec: kopf.Spec, namespace: str | None, name: str, **_: Any) -> None:
    """Stop the Jobs (SIGTERM to the trainer) and keep or remove the run's scratch as asked.

    Never blocks the deletion of a namespace: a Job or cleanup that cannot be created there any
    more is skipped, and the finalizer is released.
    """
    assert namespace is not None, "a FineTuneJob is namespaced: kopf passes its namespace"
    for job_name in (builders.train_job_name(name), builders.prepare_job_name(name)):
        try:
            apply.delete("batch/v1", "Job", namespace, job_name, propagation="Foreground")
        except kubernetes.client.ApiException as exc:
            if not namespace_going_away(exc):
                raise
    parsed = finetunejob.parse_spec(dict(spec))
    if isinstance(parsed, InvalidSpec):
        return
    owner = builders.Owner(name=name, namespace=namespace, uid=body["metadata"]["uid"])
    try:
        location = builders.output_uri(owner, parsed, settings())
    except builders.RenderError as exc:
        logger.warning("FineTuneJob %s/%s: nothing to keep or remove (%s)", namespace, name, exc)
        return
    if not parsed.delete_artifacts_on_delete:
        events.record(dict(body), "Normal", "ArtifactsKept", f"artifacts kept at {location}")
        return
    cleanup = builders.cleanup_job(owner, parsed, settings())
    if cleanup is None:
        events.record(dict(body), "Warning", "ArtifactsKept", f"scratch files at {location} cannot be removed by the operator; remove them by hand")
        return
    try:
        apply.create_if_absent(cleanup)
    except kubernetes.client.ApiException as exc:
        if not namespace_going_away(exc):
            raise
        logger.warning(
            "FineTuneJob %s/%s: its namespace is being deleted, so no cleanup Job can run; scratch files stay at %s",
            namespace, name, location,
        )
        return
    scratch = ", ".join(builders.SCRATCH_ENTRIES)
    events.record(dict(body), "Normal", "DeletingScratch", f"removing {scratch} from {location}; the trained artifact stays")


def _deleted(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(*RESOURCE, when=_deleted)
def forget(namespace: str | None, name: str, uid: str, **_: Any) -> None:
    """Drop a deleted FineTuneJob from the by-phase gauge, its lock and the cache's overlays."""
    assert namespace is not None, "a FineTuneJob is namespaced: kopf passes its namespace"
    metrics.finetunejob_phases.forget(namespace, name)
    _lock.forget(namespace, name)
    _cache.forget(namespace, name, uid)
