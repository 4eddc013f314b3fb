"""Small factories for the child objects decide() observes: Jobs, Pods, the progress ConfigMap.

They return plain dicts shaped like what the Kubernetes API returns (only the fields the
operator reads), so a test row reads as the situation it describes:

    job("ft-train", conditions=["Complete"])
    pod("ft-train", terminated=dict(exitCode=137, reason="OOMKilled"))
    pod("ft-prepare", phase="Pending", unschedulable="0/3 nodes are available: ...")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

CREATED = "2025-01-01T11:00:00Z"


def job(
    name: str,
    *,
    conditions: Sequence[str | tuple[str, str] | tuple[str, str, str]] = (),
    failed: int = 0,
    succeeded: int = 0,
    active: int = 0,
    suspend: bool | None = None,
    active_deadline_seconds: int | None = None,
    created: str = CREATED,
) -> dict[str, Any]:
    """A batch/v1 Job. A condition is "Complete", or (type, reason) or (type, reason, message)."""
    spec: dict[str, Any] = {}
    if suspend is not None:
        spec["suspend"] = suspend
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    status: dict[str, Any] = {}
    if conditions:
        status["conditions"] = [_job_condition(c) for c in conditions]
    for key, value in (("failed", failed), ("succeeded", succeeded), ("active", active)):
        if value:
            status[key] = value
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "team", "creationTimestamp": created},
        "spec": spec,
        "status": status,
    }


def _job_condition(condition: str | tuple[str, ...]) -> dict[str, str]:
    if isinstance(condition, str):
        condition = (condition,)
    type_, reason, message = (*condition, "", "")[:3]
    out = {"type": type_, "status": "True"}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def pod(
    job_name: str,
    name: str | None = None,
    *,
    phase: str | None = None,
    terminated: Mapping[str, Any] | None = None,
    waiting: Mapping[str, Any] | None = None,
    unschedulable: str | None = None,
    started: str | None = None,
    finished: str | None = None,
    created: str = CREATED,
    container: str = "trainer",
    index: int | None = None,
) -> dict[str, Any]:
    """A Pod of `job_name`'s Job, with the trainer container in one state.

    index: its completion index in an Indexed Job (the node rank of a multi-node run).

    terminated: dict(exitCode=..., reason=..., message=...) -> state.terminated (phase Failed,
        or Succeeded for exit code 0); started/finished become its startedAt/finishedAt.
    waiting: dict(reason=..., message=...) -> state.waiting (phase Pending).
    unschedulable: the scheduler's message -> PodScheduled=False/Unschedulable (phase Pending).
    otherwise running since `started` (phase Running).
    """
    conditions: list[dict[str, str]] = []
    container_status: dict[str, Any] = {"name": container}
    if unschedulable is not None:
        phase = phase or "Pending"
        conditions.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
        container_status = {}
    elif terminated is not None:
        state = dict(terminated)
        if started:
            state["startedAt"] = started
        if finished:
            state["finishedAt"] = finished
        container_status["state"] = {"terminated": state}
        phase = phase or ("Succeeded" if state.get("exitCode") == 0 else "Failed")
    elif waiting is not None:
        container_status["state"] = {"waiting": dict(waiting)}
        phase = phase or "Pending"
    else:
        container_status["state"] = {"running": {"startedAt": started} if started else {}}
        phase = phase or "Running"
    status: dict[str, Any] = {"phase": phase, "conditions": conditions}
    if container_status:
        status["containerStatuses"] = [container_status]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or f"{job_name}-abcde",
            "namespace": "team",
            "creationTimestamp": created,
            "labels": {"job-name": job_name},
            **({"annotations": {"batch.kubernetes.io/job-completion-index": str(index)}} if index is not None else {}),
        },
        "status": status,
    }


def progress_map(name: str, **line: Any) -> dict[str, Any]:
    """The `<name>-progress` ConfigMap after the trainer patched data.progress with `line`."""
    data = {"progress": json.dumps({"event": "progress", **line})} if line else {}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "team"}, "data": data}


def termination(**summary: Any) -> str:
    """A termination message as the trainer writes it: compact JSON."""
    return json.dumps(summary, separators=(",", ":"), sort_keys=True)
