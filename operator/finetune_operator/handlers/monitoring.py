"""Metrics of the custom resources, from the watch events kopf already delivers.

Every event of a FineTuneJob, ModelVersion or Rollout carries the whole object: its body goes to
`metrics.resource_metrics`, which keeps one summary per object and renders the series when
Prometheus scrapes. No API reads, no status writes, no finalizers (a DELETED event, not an
on.delete handler, drops the object's series), and nothing here touches the reconcile handlers.
The handlers are coroutines: they only update memory, so they run in the event loop and never
wait for (or occupy) a reconcile thread.

Training throughput is the one figure status does not carry: it comes from the trainer's progress
ConfigMap, whose events the operator watches already (kopf keeps one watch per resource).
"""

from __future__ import annotations

import math
from typing import Any

import kopf

from finetune_operator import metrics
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders.labels import FINETUNEJOB_LABEL
from finetune_operator.k8s.resources import FINETUNEJOBS, MODELVERSIONS, ROLLOUTS
from finetune_operator.logic import finetunejob_children

OBSERVE = {
    FINETUNEJOBS.kind: metrics.resource_metrics.observe_finetunejob,
    MODELVERSIONS.kind: metrics.resource_metrics.observe_modelversion,
    ROLLOUTS.kind: metrics.resource_metrics.observe_rollout,
}


def record(kind: str, event_type: str | None, body: dict[str, Any]) -> None:
    """Update (or, for a DELETED event, drop) the series of one object."""
    meta = body.get("metadata") or {}
    if event_type == "DELETED":
        metrics.resource_metrics.forget(kind, meta.get("namespace", ""), meta.get("name", ""))
    else:
        OBSERVE[kind](body)


@kopf.on.event(FINETUNEJOBS.group, FINETUNEJOBS.version, FINETUNEJOBS.plural)
async def finetunejob_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    record(FINETUNEJOBS.kind, type, dict(body))


@kopf.on.event(MODELVERSIONS.group, MODELVERSIONS.version, MODELVERSIONS.plural)
async def modelversion_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    record(MODELVERSIONS.kind, type, dict(body))


@kopf.on.event(ROLLOUTS.group, ROLLOUTS.version, ROLLOUTS.plural)
async def rollout_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    record(ROLLOUTS.kind, type, dict(body))


def tokens_per_second(progress_map: dict[str, Any] | None) -> float | None:
    """The trainer's latest training throughput, when its progress line can be trusted."""
    line, _problem = finetunejob_children.read_progress(progress_map)
    if not line or line.get("stage") == "evaluate":
        return None
    value = line.get("tokens_per_second")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


@kopf.on.event("", "v1", "configmaps", labels={FINETUNEJOB_LABEL: kopf.PRESENT, builders.STAGE_LABEL: "progress"})
async def progress_event(type: str | None, labels: kopf.Labels, namespace: str | None, body: kopf.Body, **_: Any) -> None:
    assert namespace is not None, "a ConfigMap is namespaced: kopf passes its namespace"
    job = labels[FINETUNEJOB_LABEL]
    if type == "DELETED":
        metrics.resource_metrics.observe_throughput(namespace, job, None)
        return
    value = tokens_per_second(dict(body))
    if value is not None:
        metrics.resource_metrics.observe_throughput(namespace, job, value)
