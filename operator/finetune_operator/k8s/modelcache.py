"""What the ModelVersion and Rollout controllers read, served from kopf indexes.

The operator watches ModelVersions and Rollouts (their handlers), the serving Deployments and
the artifact-check Jobs (events that trigger reconciles), and the serving Pods. kopf's indexes
(`@kopf.index`, declared in `handlers.modelversion` and `handlers.rollout`) keep from those same
streams what the two controllers read, so neither LISTs the API per reconcile or per timer:

- `modelversion_bodies`: (namespace, name) -> a ModelVersion without managedFields and the
  annotations nobody reads; `modelversions_by_model`: (namespace, modelName) -> names, the versions of a model;
- `rollout_bodies`: (namespace, name) -> a Rollout, same projection (what retention reads to know
  which versions a Rollout still references);
- `rollout_deployments`: (namespace, rollout) -> its serving Deployments, projected to what
  "is this version Available" reads;
- `rollout_pods`: (namespace, rollout) -> its serving Pods, projected to the artifact check's
  init-container states;
- `verify_jobs`: (namespace, version) -> the version's artifact-check Job (status only);
- `rollout_services`: (namespace, Service name) -> a Rollout's Service, projected to its selector
  and ports (which version `<rollout>-stable`/`-canary` selects, and whether it needs an apply).

kopf updates an index before it runs the handlers of the same event, and starts no handler
before every index has its first full listing. What the operator itself just wrote shows up
after the watch delivers it (milliseconds); the readers here tolerate that: a version's phase
read a moment late is read again on the event that changes it (every ModelVersion event
reconciles the Rollouts of its model), a Deployment not yet seen is created again idempotently
(server-side apply), and retention skips what it marked a moment ago on its next pass.

The Rollout itself is still read from the API once per reconcile (`handlers.rollout._read`):
a promote, abort or rollback the CLI wrote into its status must never be handled from an older
copy. Registration's "does this job have a version" stays an authoritative LIST too (once per job).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from finetune_operator.api.rollout import FORCE_VERSION_ANNOTATION
from finetune_operator.builders.rollout import APPLIED_DIGEST_ANNOTATION
from finetune_operator.k8s import watchcache

MODELVERSION_BODIES = "modelversion_bodies"
MODELVERSIONS_BY_MODEL = "modelversions_by_model"
ROLLOUT_BODIES = "rollout_bodies"
ROLLOUT_DEPLOYMENTS = "rollout_deployments"
ROLLOUT_PODS = "rollout_pods"
VERIFY_JOBS = "verify_jobs"
ROLLOUT_SERVICES = "rollout_services"
INDEXES = (MODELVERSION_BODIES, MODELVERSIONS_BY_MODEL, ROLLOUT_BODIES, ROLLOUT_DEPLOYMENTS, ROLLOUT_PODS, VERIFY_JOBS,
           ROLLOUT_SERVICES)

# The one annotation the controllers read (a Rollout's one-off "serve this version anyway"). Every
# other annotation - our own last-handled configuration, kubectl's last-applied-configuration,
# users' notes - can be as large as the spec and is never read here, so it is not kept in memory.
_READ_ANNOTATIONS = (FORCE_VERSION_ANNOTATION,)


def project_body(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A ModelVersion or Rollout as the controllers read it: identity, labels, owners, the
    annotations they read, spec and status - no managedFields, no bookkeeping annotations."""
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": watchcache.project_meta(obj, annotations=_READ_ANNOTATIONS),
        "spec": dict(obj.get("spec") or {}),
        "status": dict(obj.get("status") or {}),
    }




def project_deployment(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A serving Deployment: name, labels, generation, the digest of what was applied, and the
    status fields of availability."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    digest = (meta.get("annotations") or {}).get(APPLIED_DIGEST_ANNOTATION)
    return {
        "metadata": {
            **{key: meta[key] for key in ("name", "namespace", "uid", "generation", "labels") if key in meta},
            **({"annotations": {APPLIED_DIGEST_ANNOTATION: digest}} if digest else {}),
        },
        "status": {
            **{key: status[key] for key in ("observedGeneration", "readyReplicas", "availableReplicas") if key in status},
            "conditions": [{key: c.get(key) for key in ("type", "status")} for c in status.get("conditions") or []],
        },
    }


def project_service(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A Rollout's Service: its name and labels, the selector and the ports."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return {
        "metadata": {key: meta[key] for key in ("name", "namespace", "labels") if key in meta},
        "spec": {"selector": dict(spec.get("selector") or {}),
                 "ports": [{key: p.get(key) for key in ("name", "port", "targetPort")} for p in spec.get("ports") or []]},
    }


def project_serving_pod(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A serving Pod: its labels and how its init containers (the artifact check) ended."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return {
        "metadata": {key: meta[key] for key in ("name", "namespace", "uid", "labels") if key in meta},
        "status": {
            "initContainerStatuses": [
                {key: c[key] for key in ("name", "state", "lastState") if key in c}
                for c in status.get("initContainerStatuses") or []
            ],
        },
    }


class Indexes(watchcache.IndexViews):
    """The ModelVersion and Rollout controllers' index views, taken once from any handler's kwargs."""

    names = INDEXES

    def model_version(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._lookup(MODELVERSION_BODIES, (namespace, name))
        return found[0] if found else None

    def model_versions(self, namespace: str, model: str) -> list[dict[str, Any]]:
        """Every version of `model` in `namespace` (by name, so the order is stable)."""
        names = sorted(set(self._lookup(MODELVERSIONS_BY_MODEL, (namespace, model))))
        return [mv for mv in (self.model_version(namespace, name) for name in names) if mv is not None]

    def rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._lookup(ROLLOUT_BODIES, (namespace, name))
        return found[0] if found else None

    def rollouts(self, namespace: str, names: Iterable[str]) -> list[dict[str, Any]]:
        return [ro for ro in (self.rollout(namespace, name) for name in sorted(set(names))) if ro is not None]

    def deployments(self, namespace: str, rollout: str) -> list[dict[str, Any]]:
        return self._lookup(ROLLOUT_DEPLOYMENTS, (namespace, rollout))

    def deployment(self, namespace: str, rollout: str, name: str) -> dict[str, Any] | None:
        return next((d for d in self.deployments(namespace, rollout) if d["metadata"].get("name") == name), None)

    def serving_pods(self, namespace: str, rollout: str) -> list[dict[str, Any]]:
        return self._lookup(ROLLOUT_PODS, (namespace, rollout))

    def verify_job(self, namespace: str, version: str) -> dict[str, Any] | None:
        found = self._lookup(VERIFY_JOBS, (namespace, version))
        return found[0] if found else None

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._lookup(ROLLOUT_SERVICES, (namespace, name))
        return found[0] if found else None


indexes = Indexes()
