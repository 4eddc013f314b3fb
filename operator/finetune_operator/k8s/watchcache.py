"""What the FineTuneJob controller reads, served from memory: kopf indexes fed by the watches.

The operator already watches FineTuneJobs, and Jobs, Pods and ConfigMaps carrying the
FineTuneJob label (their events trigger reconciles). kopf's indexes (`@kopf.index`, declared in
`handlers.finetunejob`) keep from those same streams a *projection* of each object — the few
fields `logic.finetunejob.decide` reads, not whole Pod bodies — keyed by the FineTuneJob they
belong to. A steady-state reconcile makes no read request at all: 1,000 finished jobs cost the
API server nothing, and a running job's reconcile costs only the writes it decides.

A watch lags the operator's own writes by a few milliseconds. Deciding from an index that has
not yet seen what this operator just wrote would repeat work, or worse, step a status back, so
two overlays cover the gap (the Job controller's "expectations" are the same idea):

- `written`: the FineTuneJob as the last status patch returned it. Of the index's copy and
  this one, the newer (by resourceVersion, an etcd revision) is read; once the index has caught
  up the overlay entry is dropped.
- `created`: children this operator created and the index has not shown yet, from the create
  responses; kept until the index has them (by uid) or `CREATED_TTL_SECONDS` passed (an object
  created and deleted before its first watch event must not linger).

The Job controller's `FailedCreate` Events (the API refused a Job's Pod: a quota, a LimitRange, an
admission policy) are indexed too, by (namespace, Job name): the Event carries no label of the
FineTuneJob, but its Jobs' names are known. Only those Events are kept, projected to the few fields
`decide` reads; every other Event of the namespace passes by.

The ModelVersion a job registered is read the same way (an index by the source job's uid, plus
the registration's own answer until the index has it). Registration itself still reads the
API (`k8s.registry.register`): it is once per job, and its "does this job have a version
already" must be authoritative, or a stale index would register a job twice.

resourceVersions are opaque by contract; every API server in use numbers them with etcd
revisions. Where one is not a number, the reader says so (`Stale`) and the caller reads the
object from the API instead.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.builders.labels import FINETUNEJOB_LABEL
from finetune_operator.logic.finetunejob import Children

CREATED_TTL_SECONDS = 60.0

# The index names (the kopf handler functions' names, which kopf passes as kwargs).
FINETUNEJOB_INDEX = "finetunejob_bodies"
CHILD_INDEXES = {"Job": "finetunejob_jobs", "Pod": "finetunejob_pods", "ConfigMap": "finetunejob_config_maps"}
MODELVERSION_INDEX = "modelversions_by_source"
CREATION_FAILURE_INDEX = "job_pod_creation_failures"
INDEXES = (FINETUNEJOB_INDEX, *CHILD_INDEXES.values(), MODELVERSION_INDEX, CREATION_FAILURE_INDEX)
FAILED_CREATE = "FailedCreate"  # the Job controller's Event reason when the API refuses a Pod
# The server-side filter of the operator's Event watch: only the Job controller's FailedCreate
# Events reach it. Without it every Event in the cluster (thousands when many jobs run: each Pod's
# start alone brings a handful) would pass through the operator to be dropped by a client filter.
FAILED_CREATE_FIELD_SELECTOR = f"reason={FAILED_CREATE},involvedObject.kind=Job"

_META_KEYS = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")


class Stale(Exception):
    """The cached copy cannot be ordered against the operator's own write: read the API."""


# --- projections: what `decide` reads of each object ------------------------------------------


def project_meta(obj: Mapping[str, Any], *, annotations: Iterable[str] = ()) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {key: meta[key] for key in _META_KEYS if meta.get(key) is not None}
    if meta.get("labels"):
        out["labels"] = dict(meta["labels"])
    kept = {key: meta["annotations"][key] for key in annotations if key in (meta.get("annotations") or {})}
    if kept:
        out["annotations"] = kept
    if meta.get("ownerReferences"):
        out["ownerReferences"] = [
            {key: ref.get(key) for key in ("apiVersion", "kind", "name", "uid", "controller") if key in ref}
            for ref in meta["ownerReferences"]
        ]
    return out


def _head(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind") or kind}


def project_job(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A Job: identity, owners, `suspend` and the deadline, and its (small) status."""
    spec = obj.get("spec") or {}
    return {
        **_head(obj, "Job"),
        "metadata": project_meta(obj),
        "spec": {key: spec[key] for key in ("suspend", "activeDeadlineSeconds") if key in spec},
        "status": dict(obj.get("status") or {}),
    }


def project_pod(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A Pod: identity, owners, its completion index, phase, conditions and container states.

    Not its spec (the Job's template says it all), nor addresses, images or heartbeat times.
    """
    status = obj.get("status") or {}
    return {
        **_head(obj, "Pod"),
        "metadata": project_meta(obj, annotations=(builders.COMPLETION_INDEX_ANNOTATION,)),
        "status": {
            "phase": status.get("phase"),
            "conditions": [
                {key: c[key] for key in ("type", "status", "reason", "message") if key in c}
                for c in status.get("conditions") or []
            ],
            "containerStatuses": [
                {key: c[key] for key in ("name", "state", "restartCount") if key in c}
                for c in status.get("containerStatuses") or []
            ],
        },
    }


def project_config_map(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A ConfigMap (the job's config, or the trainer's progress): identity and data."""
    return {**_head(obj, "ConfigMap"), "metadata": project_meta(obj), "data": dict(obj.get("data") or {})}


def project_model_version(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A ModelVersion: identity and spec (what a registered job reports and compares)."""
    return {**_head(obj, "ModelVersion"), "metadata": project_meta(obj), "spec": dict(obj.get("spec") or {})}


def project_finetunejob(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A FineTuneJob without managedFields and annotations (kopf's own bookkeeping among them)."""
    return {
        **_head(obj, "FineTuneJob"),
        "metadata": project_meta(obj),
        "spec": dict(obj.get("spec") or {}),
        "status": dict(obj.get("status") or {}),
    }


def project_event(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An Event: the object it is about, why, what the API said, and when it last happened."""
    involved = obj.get("involvedObject") or {}
    return {
        **_head(obj, "Event"),
        "metadata": project_meta(obj),
        "involvedObject": {key: involved[key] for key in ("kind", "name", "uid") if key in involved},
        "reason": obj.get("reason"),
        "message": obj.get("message"),
        **{key: obj[key] for key in ("lastTimestamp", "eventTime", "firstTimestamp", "count") if obj.get(key)},
    }


def creation_failure_entry(obj: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]] | None:
    """The FailedCreate index's entry of an Event on a Job: (namespace, Job name) -> projection."""
    involved = obj.get("involvedObject") or {}
    if obj.get("reason") != FAILED_CREATE or involved.get("kind") != "Job" or not involved.get("name"):
        return None
    namespace = involved.get("namespace") or (obj.get("metadata") or {}).get("namespace", "")
    return {(namespace, involved["name"]): project_event(obj)}


_CHILD_PROJECTIONS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "Job": project_job,
    "Pod": project_pod,
    "ConfigMap": project_config_map,
}


def child_entry(kind: str, obj: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]] | None:
    """The child index's entry of a labelled Job, Pod or ConfigMap: (namespace, job) -> projection."""
    meta = obj.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(FINETUNEJOB_LABEL)
    if not owner or kind not in _CHILD_PROJECTIONS:
        return None
    return {(meta.get("namespace", ""), owner): _CHILD_PROJECTIONS[kind](obj)}


def model_version_entry(obj: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]] | None:
    """The ModelVersion index's entry: (namespace, source job uid) -> projection."""
    meta = obj.get("metadata") or {}
    source = (meta.get("labels") or {}).get(mv_builders.SOURCE_UID_LABEL)
    if not source:
        return None
    return {(meta.get("namespace", ""), source): project_model_version(obj)}


def revision(obj: Mapping[str, Any] | None) -> int | None:
    value = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def children_from(projections: Iterable[Mapping[str, Any]], name: str) -> Children:
    """Sort a FineTuneJob's child projections into what `decide` reads."""
    jobs, pods, config_maps = [], [], {}
    for obj in projections:
        kind = obj.get("kind")
        if kind == "Job":
            jobs.append(obj)
        elif kind == "Pod":
            pods.append(obj)
        elif kind == "ConfigMap":
            config_maps[obj["metadata"]["name"]] = obj
    return Children(
        jobs=tuple(sorted(jobs, key=lambda o: o["metadata"]["name"])),
        pods=tuple(sorted(pods, key=lambda o: o["metadata"]["name"])),
        progress=config_maps.get(builders.progress_name(name)),
        config=config_maps.get(builders.config_map_name(name)),
    )


def _ended(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed") or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return any("terminated" in (c.get("state") or {}) for c in status.get("containerStatuses") or [])


def behind(children: Children) -> str | None:
    """Why these children are not yet a consistent picture, or None when they are.

    Each kind comes through its own watch, and under load one lags another by seconds: a Job
    can be seen Complete while its Pod is still seen running, without the termination message
    that carries the run's results. Deciding from that would fail a run that succeeded. The
    Pod's own event is on its way and triggers the next reconcile; until then, nothing is done.
    """
    for job in children.jobs:
        conditions = (job.get("status") or {}).get("conditions") or []
        if not any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions):
            continue
        name = job["metadata"]["name"]
        for pod in children.pods_of(name):
            if not _ended(pod):
                return f"Job {name} has ended but its Pod {pod['metadata']['name']} is still seen running"
    return None


class IndexViews:
    """kopf's live index views named in `names`, taken from any handler's kwargs."""

    names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._indexes: dict[str, Mapping[Any, Iterable[Any]]] = {}

    def bind(self, kwargs: Mapping[str, Any]) -> None:
        """Take the indexes from a handler's kwargs (kopf passes live, read-only views)."""
        for name in self.names:
            if name in kwargs and self._indexes.get(name) is not kwargs[name]:
                self._indexes[name] = kwargs[name]

    def _lookup(self, index: str, key: tuple[str, str]) -> list[Any]:
        if index not in self._indexes:
            raise RuntimeError(f"the {index} index is not bound: reconciles run from kopf handlers, which pass it")
        # kopf updates an index on its event loop while a sync handler reads it on a worker
        # thread: copying a store's values is one C-level pass, which the GIL keeps whole.
        return list(self._indexes[index].get(key, ()))


class FineTuneJobCache(IndexViews):
    """The indexes (bound from a handler's kwargs) and the operator's own not-yet-watched writes."""

    names = INDEXES

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._created: dict[tuple[str, str], dict[tuple[str, str], tuple[float, dict[str, Any]]]] = {}
        self._registered: dict[tuple[str, str], dict[str, Any]] = {}
        self._guard = threading.Lock()
        self._clock = clock

    # --- the FineTuneJob itself

    def finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The newest copy known: the index's, or the one the last status patch returned."""
        key = (namespace, name)
        found = self._lookup(FINETUNEJOB_INDEX, key)
        indexed = found[0] if found else None
        with self._guard:
            written = self._written.get(key)
            if indexed is None:
                self._written.pop(key, None)  # gone (or not yet seen): nothing to reconcile
                return None
            if written is None or written["metadata"].get("uid") != indexed["metadata"].get("uid"):
                self._written.pop(key, None)
                return indexed
            ours, theirs = revision(written), revision(indexed)
            if ours is None or theirs is None:
                raise Stale(f"FineTuneJob {namespace}/{name}: resourceVersion is not a number")
            if theirs >= ours:
                del self._written[key]
                return indexed
            return written

    def wrote(self, obj: Mapping[str, Any] | None) -> None:
        """Remember the FineTuneJob as a write returned it, until the index has caught up."""
        if not obj:
            return
        meta = obj["metadata"]
        with self._guard:
            self._written[(meta["namespace"], meta["name"])] = project_finetunejob(obj)

    # --- its children

    def children(self, namespace: str, name: str) -> Children:
        key = (namespace, name)
        indexed = [obj for index in CHILD_INDEXES.values() for obj in self._lookup(index, key)]
        seen = {(o.get("kind"), o["metadata"].get("uid")) for o in indexed}
        now = self._clock()
        with self._guard:
            pending = self._created.get(key, {})
            for child, (since, obj) in list(pending.items()):
                if (obj.get("kind"), obj["metadata"].get("uid")) in seen or now - since > CREATED_TTL_SECONDS:
                    del pending[child]
            if not pending:
                self._created.pop(key, None)
            named = {(o.get("kind"), o["metadata"]["name"]) for o in indexed}
            extra = [obj for child, (_, obj) in pending.items() if child not in named]
        found = children_from([*indexed, *extra], name)
        failures = tuple(e for job in found.jobs for e in self._lookup(CREATION_FAILURE_INDEX, (namespace, job["metadata"]["name"])))
        return dataclasses.replace(found, creation_failures=failures) if failures else found

    def finetunejob_of_job(self, namespace: str, job_name: str) -> str | None:
        """The FineTuneJob a Job (seen in the index) belongs to, by its label."""
        for (ns, owner), jobs in list(self._indexes.get(CHILD_INDEXES["Job"], {}).items()):
            if ns == namespace and any(j["metadata"]["name"] == job_name for j in list(jobs)):
                return owner
        return None

    def created(self, obj: Mapping[str, Any] | None) -> None:
        """Remember a child this operator created (a Job or ConfigMap) until the index has it."""
        if not obj or obj.get("kind") not in ("Job", "ConfigMap"):
            return
        entry = child_entry(obj["kind"], obj)
        if entry is None:
            return
        [(key, projection)] = entry.items()
        with self._guard:
            self._created.setdefault(key, {})[(obj["kind"], obj["metadata"]["name"])] = (self._clock(), projection)

    # --- its ModelVersion

    def model_version(self, namespace: str, uid: str) -> dict[str, Any] | None:
        key = (namespace, uid)
        found = self._lookup(MODELVERSION_INDEX, key)
        with self._guard:
            if found:
                self._registered.pop(key, None)
                return found[0]
            return self._registered.get(key)

    def registered(self, namespace: str, uid: str, obj: Mapping[str, Any]) -> None:
        with self._guard:
            self._registered[(namespace, uid)] = project_model_version(obj)

    def forget(self, namespace: str, name: str, uid: str | None = None) -> None:
        """A FineTuneJob is gone: drop what was remembered of it."""
        with self._guard:
            self._written.pop((namespace, name), None)
            self._created.pop((namespace, name), None)
            if uid:
                self._registered.pop((namespace, uid), None)
