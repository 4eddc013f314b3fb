"""FineTuneJob: observe -> decide (`logic.finetunejob.decide`) -> act (`k8s`).

A spec that cannot be parsed or makes no sense is a *permanent* problem: it becomes an
`Accepted=False/InvalidSpec` condition and a Warning Event, and the handler succeeds, so kopf
does not retry it in a loop. API errors while acting are transient: they propagate and kopf
retries after `backoff` seconds. Deleting a FineTuneJob needs no handler: children carry
ownerReferences and are garbage-collected, and no finalizer is added.
"""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from finetune_operator import metrics
from finetune_operator.k8s import children, events, status
from finetune_operator.k8s.resources import FINETUNEJOBS
from finetune_operator.logic import finetunejob

KIND = FINETUNEJOBS.kind
RESOURCE = (FINETUNEJOBS.group, FINETUNEJOBS.version, FINETUNEJOBS.plural)
BACKOFF_SECONDS = 10


@kopf.on.resume(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.create(*RESOURCE, backoff=BACKOFF_SECONDS)
@kopf.on.update(*RESOURCE, backoff=BACKOFF_SECONDS)
def reconcile(body: kopf.Body, meta: kopf.Meta, namespace: str, name: str, **_: Any) -> None:
    with metrics.reconciling(KIND):
        spec = finetunejob.parse_spec(body.get("spec"))
        decision = finetunejob.decide(
            spec,
            finetunejob.parse_status(body.get("status")),
            children.of_finetunejob(namespace, name),
            now=datetime.datetime.now(datetime.UTC),
            generation=meta["generation"],
        )
        if decision.status_changed:
            status.patch(FINETUNEJOBS, namespace, name, decision.status_patch)
        for event in decision.events:
            events.record(body, event.type, event.reason, event.message)
        metrics.finetunejob_phases.observe(namespace, name, decision.status.phase)


def _deleted(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(*RESOURCE, when=_deleted)
def forget(namespace: str, name: str, **_: Any) -> None:
    """Drop a deleted FineTuneJob from the by-phase gauge (reconcile keeps it current otherwise)."""
    metrics.finetunejob_phases.forget(namespace, name)
