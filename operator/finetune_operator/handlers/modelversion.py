"""ModelVersion: the first honest status of a registered version (Candidate, Ready=Unknown).

Its spec is immutable (a CEL rule), so create and resume are the only causes; gate verdicts and
promotion are written by the evaluation and rollout controllers.
"""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from finetune_operator import metrics
from finetune_operator.k8s import events, status
from finetune_operator.k8s.resources import MODELVERSIONS
from finetune_operator.logic import modelversion

KIND = MODELVERSIONS.kind
RESOURCE = (MODELVERSIONS.group, MODELVERSIONS.version, MODELVERSIONS.plural)
BACKOFF_SECONDS = 10


@kopf.on.resume(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.create(*RESOURCE, backoff=BACKOFF_SECONDS)
def reconcile(body: kopf.Body, meta: kopf.Meta, namespace: str, name: str, **_: Any) -> None:
    with metrics.reconciling(KIND):
        decision = modelversion.decide(
            modelversion.parse_spec(body.get("spec")),
            modelversion.parse_status(body.get("status")),
            now=datetime.datetime.now(datetime.UTC),
            generation=meta["generation"],
        )
        if decision.status_changed:
            status.patch(MODELVERSIONS, namespace, name, decision.status_patch)
        for event in decision.events:
            events.record(body, event.type, event.reason, event.message)
