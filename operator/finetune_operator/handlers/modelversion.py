"""ModelVersion: its gates judged from its own (immutable) evaluation record, and its model card.

The spec never changes (a CEL rule), so create and resume are the causes; a slow timer keeps the
status honest after a Rollout moved the phase. Deleting a version in Production is refused by a
ValidatingAdmissionPolicy (config/admission), not here.
"""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from finetune_operator import metrics
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.k8s import apply, events, status
from finetune_operator.k8s.resources import MODELVERSIONS
from finetune_operator.logic import modelversion
from finetune_operator.logic.spec import InvalidSpec

KIND = MODELVERSIONS.kind
RESOURCE = (MODELVERSIONS.group, MODELVERSIONS.version, MODELVERSIONS.plural)
BACKOFF_SECONDS = 10


@kopf.on.resume(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.create(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.timer(*RESOURCE, interval=120, initial_delay=60, idle=None)
def reconcile(body: kopf.Body, meta: kopf.Meta, namespace: str, name: str, **_: Any) -> None:
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
            status.patch(MODELVERSIONS, namespace, name, decision.status_patch)
        for event in decision.events:
            events.record(body, event.type, event.reason, event.message)
