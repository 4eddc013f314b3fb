"""ModelVersion: its gates judged from its own (immutable) evaluation record, and its model card.

The spec never changes (a CEL rule), so create and resume are the causes; a slow timer keeps the
status honest, and the Rollout controller calls `reconcile_object` after it wrote a version's
serving record (`status.serving`) and `Serving` condition. Each writer of a ModelVersion's status applies only its own fields under its
own field manager (see k8s.status): this controller the verdict and phase, retention the
`ArtifactRetained` condition, the artifact check the `ArtifactVerified` condition. Deleting a
version in Production is refused by a ValidatingAdmissionPolicy (config/admission), not here.

The artifact check: when a version is registered a Job `<version>-verify` (the trainer image's
`verify-artifact`, as the serving Pods' init container) recomputes the digest of the mounted
artifact; its outcome becomes `ArtifactVerified` under the field manager
`finetune-operator-verify`, written once. The create/resume handlers start the Job, the Job's
watch event records its outcome, and the resume handler (and the slow timer) record an outcome
a killed operator missed (the Job's name is deterministic: never two checks).
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Mapping
from typing import Any

import kopf

from finetune_operator import config as operator_config
from finetune_operator import metrics
from finetune_operator.builders import modelversion as mv_builders

from finetune_operator.k8s import apply, client, events, modelcache, status, watchcache
from finetune_operator.k8s.resources import FIELD_MANAGER, MODELVERSIONS
from finetune_operator.logic import conditions, modelversion
from finetune_operator.logic import retention as retention_logic
from finetune_operator.logic.spec import InvalidSpec

KIND = MODELVERSIONS.kind
RESOURCE = (MODELVERSIONS.group, MODELVERSIONS.version, MODELVERSIONS.plural)
BACKOFF_SECONDS = 10
ARTIFACT_RETAINED = "ArtifactRetained"  # condition owned by retention
RETENTION_SECONDS = 300


# --- watch indexes: what this controller (and the Rollout controller) reads of versions, checks
# and Rollouts, kept from the watch streams (see k8s.modelcache): no LIST per timer or event.


@kopf.index(*RESOURCE)
def modelversion_bodies(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(namespace, name): modelcache.project_body(body)}


@kopf.index(*RESOURCE)
def modelversions_by_model(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str | None, Any], str]:
    return {(namespace, spec.get("modelName")): name}


@kopf.index("batch", "v1", "jobs", labels={mv_builders.VERIFY_LABEL: kopf.PRESENT})
def verify_jobs(body: kopf.Body, namespace: str | None, **_: Any) -> dict[tuple[str | None, str], dict[str, Any]] | None:
    owner = next((o for o in body["metadata"].get("ownerReferences") or [] if o.get("kind") == KIND), None)
    if owner is None:
        return None
    return {(namespace, owner["name"]): watchcache.project_job(body)}


def reconcile_object(body: Mapping[str, Any]) -> modelversion.Decision:
    """Judge one ModelVersion and apply the status fields this controller owns.

    Also called by the Rollout controller right after it wrote a version's serving record,
    so the phase that follows from it (Production, Deprecated) shows at once.
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with metrics.reconciling(KIND):
        spec = modelversion.parse_spec(body.get("spec"))
        card = f"{name}-model-card" if not isinstance(spec, InvalidSpec) else None
        current = modelversion.parse_status(body.get("status"))
        decision = modelversion.decide(
            spec,
            current,
            now=datetime.datetime.now(datetime.UTC),
            generation=meta["generation"],
            card_config_map=card,
            awaiting_artifact_check=_artifact_checkable(body, spec, current),
        )
        if card and (current.model_card_config_map != card or decision.status_changed):
            # The card is written once (create-if-absent): its first time, or when the verdict it
            # reports moved; a settled version's slow timer sends no request for it.
            apply.create_if_absent(mv_builders.model_card_config_map(dict(body), list(decision.status.gates)))
        # Events first (named by the transition): a kill before the apply repeats the same
        # decision, whose Events exist already; never a transition without its Event.
        for event in decision.events:
            events.record(body, event.type, event.reason, event.message)
        if decision.status_changed:
            status.apply(MODELVERSIONS, namespace, name, decision.owned_status, FIELD_MANAGER)
        return decision


def _verify_job(body: Mapping[str, Any]) -> dict[str, Any] | None:
    cfg = operator_config.current()
    return mv_builders.verify_job(body, cfg.trainer_image, cfg.allowed_host_paths)


def _artifact_checkable(body: Mapping[str, Any], spec, current) -> bool:
    """Whether the artifact check is still to say its word on this version."""
    if isinstance(spec, InvalidSpec) or conditions.find_condition(current.conditions, modelversion.ARTIFACT_VERIFIED):
        return False
    return _verify_job(body) is not None


def verify_artifact(body: Mapping[str, Any]) -> bool:
    """Check the registered bytes once: start the check's Job, and when it finished write
    `ArtifactVerified` (own field manager) and judge the version again. Returns whether the
    condition is written (False: the check runs, come back)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    current = modelversion.parse_status(body.get("status"))
    if conditions.find_condition(current.conditions, modelversion.ARTIFACT_VERIFIED) is not None:
        return True
    spec = modelversion.parse_spec(body.get("spec"))
    if isinstance(spec, InvalidSpec):
        return True  # Ready=False/InvalidSpec says why; there is nothing to check
    job = _verify_job(body)
    outcome = None
    if job is not None:
        outcome = _verify_outcome(namespace, name, job["metadata"]["name"])
        if outcome is None:
            apply.create_if_absent(job)
            return False
    found = modelversion.artifact_verified(outcome, uri=spec.artifact.uri, digest=spec.artifact.digest)
    if found is None:
        return False
    value, reason, message = found
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    updated = conditions.set_condition(current.conditions, modelversion.ARTIFACT_VERIFIED, value, reason, message, meta.get("generation"), now)
    owned = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in updated if c.type == modelversion.ARTIFACT_VERIFIED]
    if value == "False":
        events.record(body, "Warning", modelversion.REASON_DIGEST_MISMATCH, message)
    written = status.apply(MODELVERSIONS, namespace, name, {"conditions": owned}, status.VERIFY_MANAGER)
    if written is not None:
        reconcile_object(written)
    return True


def _verify_outcome(namespace: str, version: str, job_name: str) -> modelversion.VerifyOutcome | None:
    """The check's Job as the Job index has it; None when it does not exist (yet)."""
    job = modelcache.indexes.verify_job(namespace, version)
    if job is None or job["metadata"].get("name") != job_name:
        return None
    done = {c.get("type"): c for c in job["status"].get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in done:
        return modelversion.VerifyOutcome(finished=True, succeeded=True)
    if "Failed" not in done:
        return modelversion.VerifyOutcome()
    # The check's own verdict is the exit code and termination message of its Pod (read once:
    # the condition written from it ends the check). A label-selected LIST, not an index: only
    # a failed check reads its Pods, once per version, so keeping every verify Pod in memory
    # would cost more than this one read.
    selector = f"{mv_builders.VERIFY_LABEL}={(job['metadata'].get('labels') or {}).get(mv_builders.VERIFY_LABEL, '')}"
    for pod in client.core().list_namespaced_pod(namespace, label_selector=selector).items:
        for container in (pod.status.container_statuses or []) if pod.status else []:
            terminated = container.state.terminated if container.state else None
            if terminated is not None and terminated.exit_code == mv_builders.VERIFY_EXIT_MISMATCH:
                return modelversion.VerifyOutcome(finished=True, mismatch=True, message=(terminated.message or "").strip())
    failed = done["Failed"]
    return modelversion.VerifyOutcome(finished=True, message=f"{failed.get('reason')}: {failed.get('message')}")


@kopf.on.resume(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.create(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.timer(*RESOURCE, interval=120, initial_delay=60, idle=None)
def reconcile(body: kopf.Body, **kwargs: Any) -> None:
    modelcache.indexes.bind(kwargs)
    reconcile_object(dict(body))
    verify_artifact(dict(body))


@kopf.on.event("batch", "v1", "jobs", labels={mv_builders.VERIFY_LABEL: kopf.PRESENT})
def verify_job_event(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    """The artifact check's Job changed: once it finished, its version records the outcome
    (the version from the index; one that has its `ArtifactVerified` already is left alone)."""
    assert namespace is not None, "a Job is namespaced: kopf passes its namespace"
    modelcache.indexes.bind(kwargs)
    conditions_now = {c.get("type") for c in (body.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    if not conditions_now & {"Complete", "Failed"}:
        return
    owner = next((o for o in body["metadata"].get("ownerReferences") or [] if o.get("kind") == KIND), None)
    if owner is None:
        return
    mv = modelcache.indexes.model_version(namespace, owner["name"])
    if mv is None or mv["metadata"].get("uid") != owner.get("uid"):
        return
    if conditions.find_condition(modelversion.parse_status(mv.get("status")).conditions, modelversion.ARTIFACT_VERIFIED) is None:
        verify_artifact(mv)


class _Passes:
    """When retention last looked at a model: every version's timer fires, one pass per model acts."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}
        self._guard = threading.Lock()

    def due(self, key: tuple[str, str], interval: float, now: float) -> bool:
        with self._guard:
            if now - self._last.get(key, float("-inf")) < interval:
                return False
            self._last[key] = now
            return True


_retention_passes = _Passes()


@kopf.timer(*RESOURCE, interval=RETENTION_SECONDS, initial_delay=30, idle=None)
def retention(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    """Past the newest N versions of a model, remove the artifact files (the record stays).

    Runs on each version's timer but acts once per namespace and model and interval, from the
    indexes (the model's versions, the Rollouts of the model); the cleanup Job's name is
    deterministic, so overlapping passes create it once, and a version already marked is not
    written again. What Rollouts still reference (stable, candidate, pinned, rollback target) is
    read from the Rollouts themselves.
    """
    assert namespace is not None, "a ModelVersion is namespaced: kopf passes its namespace"
    modelcache.indexes.bind(kwargs)
    model = (body.get("spec") or {}).get("modelName")
    if not model or not _retention_passes.due((namespace, model), RETENTION_SECONDS / 2, time.monotonic()):
        return
    cfg = operator_config.current()
    versions = modelcache.indexes.model_versions(namespace, model)
    rollouts = modelcache.indexes.rollouts(namespace, kwargs["rollouts_by_model"].get((namespace, model), ()))
    in_use = retention_logic.referenced(rollouts, versions)
    by_name = {mv["metadata"]["name"]: mv for mv in versions}
    for name in retention_logic.expired([retention_logic.from_object(mv) for mv in versions], cfg.retain_versions, in_use):
        mv = by_name[name]
        job = mv_builders.artifact_cleanup_job(mv, cfg.trainer_image, cfg.allowed_host_paths, cfg.s3_endpoint)
        if job is None:
            continue
        apply.create_if_absent(job)
        condition = conditions.set_condition(
            modelversion.parse_status(mv.get("status")).conditions, ARTIFACT_RETAINED, "False", "RetentionExpired",
            f"artifact removed: older than the newest {cfg.retain_versions} versions of {model}",
            mv["metadata"].get("generation"), datetime.datetime.now(datetime.UTC).replace(microsecond=0),
        )
        owned = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in condition if c.type == ARTIFACT_RETAINED]
        status.apply(MODELVERSIONS, namespace, name, {"conditions": owned}, status.RETENTION_MANAGER)
        events.record(mv, "Normal", "ArtifactDeleted", f"artifact {mv['spec']['artifact']['uri']} removed by retention (newest {cfg.retain_versions} kept)")
