"""ModelVersion: its gates judged from its own (immutable) evaluation record, and its model card.

The spec never changes (a CEL rule), so create and resume are the causes; a slow timer keeps the
status honest, and the Rollout controller calls `reconcile_object` after it wrote a version's
`Serving` condition. Each writer of a ModelVersion's status applies only its own fields under its
own field manager (see k8s.status): this controller the verdict and phase, retention the
`ArtifactRetained` condition. Deleting a version in Production is refused by a
ValidatingAdmissionPolicy (config/admission), not here.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import kopf

from finetune_operator import config as operator_config
from finetune_operator import metrics
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.k8s import apply, client, events, status
from finetune_operator.k8s.resources import FIELD_MANAGER, MODELVERSIONS, ROLLOUTS
from finetune_operator.logic import conditions, modelversion
from finetune_operator.logic import retention as retention_logic
from finetune_operator.logic.spec import InvalidSpec

KIND = MODELVERSIONS.kind
RESOURCE = (MODELVERSIONS.group, MODELVERSIONS.version, MODELVERSIONS.plural)
BACKOFF_SECONDS = 10
ARTIFACT_RETAINED = "ArtifactRetained"  # condition owned by retention


def reconcile_object(body: Mapping[str, Any]) -> modelversion.Decision:
    """Judge one ModelVersion and apply the status fields this controller owns.

    Also called by the Rollout controller right after it wrote a version's `Serving` condition,
    so the phase that follows from it (Production, Deprecated) shows at once.
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with metrics.reconciling(KIND):
        spec = modelversion.parse_spec(body.get("spec"))
        card = f"{name}-model-card" if not isinstance(spec, InvalidSpec) else None
        decision = modelversion.decide(
            spec,
            modelversion.parse_status(body.get("status")),
            now=datetime.datetime.now(datetime.UTC),
            generation=meta["generation"],
            card_config_map=card,
        )
        if card:
            apply.create_if_absent(mv_builders.model_card_config_map(dict(body), list(decision.status.gates)))
        if decision.status_changed:
            status.apply(MODELVERSIONS, namespace, name, decision.owned_status, FIELD_MANAGER)
        for event in decision.events:
            events.record(body, event.type, event.reason, event.message)
        return decision


@kopf.on.resume(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.create(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.timer(*RESOURCE, interval=120, initial_delay=60, idle=None)
def reconcile(body: kopf.Body, **_: Any) -> None:
    reconcile_object(dict(body))


@kopf.timer(*RESOURCE, interval=300, initial_delay=30, idle=None)
def retention(body: kopf.Body, namespace: str, **_: Any) -> None:
    """Past the newest N versions of a model, remove the artifact files (the record stays).

    Runs on each version's timer but acts per namespace and model; the cleanup Job's name is
    deterministic, so overlapping passes create it once. What Rollouts still reference (stable,
    candidate, pinned, rollback target) is read from the Rollouts themselves.
    """
    model = (body.get("spec") or {}).get("modelName")
    if not model:
        return
    cfg = operator_config.current()
    versions = [
        mv for mv in client.custom_objects().list_namespaced_custom_object(
            MODELVERSIONS.group, MODELVERSIONS.version, namespace, MODELVERSIONS.plural
        )["items"]
        if (mv.get("spec") or {}).get("modelName") == model
    ]
    rollouts = [
        ro for ro in client.custom_objects().list_namespaced_custom_object(
            ROLLOUTS.group, ROLLOUTS.version, namespace, ROLLOUTS.plural
        )["items"]
        if (ro.get("spec") or {}).get("modelName") == model
    ]
    in_use = retention_logic.referenced(rollouts, versions)
    by_name = {mv["metadata"]["name"]: mv for mv in versions}
    for name in retention_logic.expired([retention_logic.from_object(mv) for mv in versions], cfg.retain_versions, in_use):
        mv = by_name[name]
        job = mv_builders.artifact_cleanup_job(mv, cfg.trainer_image)
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
