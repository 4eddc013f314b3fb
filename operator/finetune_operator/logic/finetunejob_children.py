"""Reading a FineTuneJob's children: Jobs and Pods (what state they are in, why one failed, how
long it ran), the trainer's progress ConfigMap (untrusted input), and which child events matter.

Pure: the handler passes the objects as the API returns them (or their watch-cache projections).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from finetune_trainer import exitcodes

from finetune_operator.builders import finetunejob as builders

from finetune_operator.logic.finetunejob_reasons import (
    MSG_DEADLINE,
    MSG_IMAGE_PULL,
    MSG_OOM_KILLED,
    MSG_POD_CREATION_FAILED,
    MSG_UNSCHEDULABLE,
    REASON_IMAGE_PULL,
    REASON_POD_CREATION_FAILED,
    REASON_UNSCHEDULABLE,
    SHOWN_API_MESSAGE_CHARS,
)

def job_condition(job: Mapping[str, Any], type: str) -> Mapping[str, Any] | None:
    job_conditions: list[Mapping[str, Any]] = (job.get("status") or {}).get("conditions") or []
    for cond in job_conditions:
        if cond.get("type") == type and cond.get("status") == "True":
            return cond
    return None


def parse_time(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    if isinstance(value, datetime.datetime):
        return value
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def clamp_percent(value: Any) -> float | None:
    if value is None:
        return None
    return round(min(max(float(value), 0.0), 100.0), 1)


# --- progress: untrusted input ---------------------------------------------------------------------
# The trainer's Pod may patch its progress ConfigMap, so what is in it is whatever that Pod (or
# anything running in it) wrote. A line is used only when it is a small JSON object whose every
# field we read has the right type and a sane range; anything else is ignored as a whole, the
# status keeps the last valid progress, and the ProgressReported condition (with one Warning
# Event per distinct problem) says why. A real line is a few hundred bytes.
MAX_PROGRESS_BYTES = 8192
MAX_STEPS = 10**9
MAX_EPOCHS = 10**6
MAX_ETA_SECONDS = 10 * 365 * 24 * 3600
MAX_LOSS = 1e9
MAX_CHECKPOINT_URI = 2048
MAX_TIME_TEXT = 64


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _steps(value: Any) -> bool:
    return _whole(value) and 0 <= value <= MAX_STEPS


def _loss(value: Any) -> bool:
    return _number(value) and abs(value) <= MAX_LOSS


# What each field the status is built from must be: (check, words for the Warning).
_PROGRESS_FIELDS: dict[str, tuple[Any, str]] = {
    "step": (_steps, f"a whole number of steps from 0 to {MAX_STEPS}"),
    "total_steps": (_steps, f"a whole number of steps from 0 to {MAX_STEPS}"),
    "epoch": (lambda v: _number(v) and 0 <= v <= MAX_EPOCHS, f"a number of epochs from 0 to {MAX_EPOCHS}"),
    "percent": (_number, "a finite number"),
    "eta_seconds": (lambda v: _number(v) and 0 <= v <= MAX_ETA_SECONDS, f"seconds from 0 to {MAX_ETA_SECONDS}"),
    "loss": (_loss, "a finite number"),
    "eval_loss": (_loss, "a finite number"),
    "best_eval_loss": (_loss, "a finite number"),
    "stage": (lambda v: v in ("train", "evaluate"), "train or evaluate"),
    "suite": (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a suite name of at most 64 characters"),
    "model": (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a model label of at most 64 characters"),
    "prompts_done": (_steps, f"a whole number of prompts from 0 to {MAX_STEPS}"),
    "prompts_total": (_steps, f"a whole number of prompts from 0 to {MAX_STEPS}"),
}


def read_progress(progress_map: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the trainer's latest progress line, None) when it can be trusted; (None, why not) when
    it cannot; (None, None) when there is none yet."""
    if not isinstance(progress_map, Mapping):
        return None, None
    data = progress_map.get("data")
    raw = data.get(builders.PROGRESS_KEY) if isinstance(data, Mapping) else None
    if not raw:
        return None, None
    if not isinstance(raw, str):
        return None, f"data.progress is {_shown(raw)}, not text"
    if len(raw.encode("utf-8", "replace")) > MAX_PROGRESS_BYTES:
        return None, f"data.progress is {len(raw)} characters long, more than {MAX_PROGRESS_BYTES} bytes"
    try:
        line = json.loads(raw, parse_constant=lambda _: math.nan)
    except ValueError:
        return None, "data.progress is not JSON"
    if not isinstance(line, dict):
        return None, f"data.progress is a JSON {type(line).__name__}, not an object"
    for key, (valid, expected) in _PROGRESS_FIELDS.items():
        if line.get(key) is not None and not valid(line[key]):
            return None, f"{key} is {_shown(line[key])}, expected {expected}"
    if _whole(line.get("step")) and _whole(line.get("total_steps")) and line["step"] > line["total_steps"]:
        return None, f"step {line['step']} is past total_steps {line['total_steps']}"
    if _whole(line.get("prompts_done")) and _whole(line.get("prompts_total")) and line["prompts_done"] > line["prompts_total"]:
        return None, f"prompts_done {line['prompts_done']} is past prompts_total {line['prompts_total']}"
    checkpoint = line.get("checkpoint")
    if checkpoint is not None:
        problem = _checkpoint_problem(checkpoint)
        if problem:
            return None, f"checkpoint {problem}"
        if not checkpoint.get("uri"):
            line = {key: value for key, value in line.items() if key != "checkpoint"}
    return line, None


def _checkpoint_problem(checkpoint: Any) -> str | None:
    if not isinstance(checkpoint, dict):
        return f"is {_shown(checkpoint)}, expected an object with uri, step and time"
    uri, step, time = checkpoint.get("uri"), checkpoint.get("step"), checkpoint.get("time")
    if uri is not None and (not isinstance(uri, str) or len(uri) > MAX_CHECKPOINT_URI):
        return f"uri is {_shown(uri)}, expected a location of at most {MAX_CHECKPOINT_URI} characters"
    if step is not None and not _steps(step):
        return f"step is {_shown(step)}, expected a whole number of steps from 0 to {MAX_STEPS}"
    if time is not None and (not isinstance(time, str) or len(time) > MAX_TIME_TEXT or parse_time(time) is None):
        return f"time is {_shown(time)}, expected an RFC 3339 time"
    return None


def container_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses: list[Mapping[str, Any]] = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == builders.CONTAINER:
            return cs
    return {}


def termination_json(pods: Sequence[Mapping[str, Any]], *, succeeded: bool) -> dict[str, Any] | None:
    """The trainer's compact JSON from the newest Pod that ended (successfully, if asked).

    Of a multi-node run only node rank 0 (completion index 0) reports the run's results.
    """
    for pod in reversed(pods):
        if (pod["metadata"].get("annotations") or {}).get(builders.COMPLETION_INDEX_ANNOTATION, "0") != "0":
            continue
        terminated = container_status(pod).get("state", {}).get("terminated") or {}
        if not terminated or (succeeded and terminated.get("exitCode") != 0):
            continue
        try:
            message = json.loads(terminated.get("message") or "")
        except ValueError:
            continue
        if isinstance(message, dict):
            return message
    return None


def pod_run_seconds(pod: Mapping[str, Any], now: datetime.datetime) -> float:
    state = container_status(pod).get("state") or {}
    start: datetime.datetime | None
    end: datetime.datetime | None
    if "running" in state:
        start, end = parse_time(state["running"].get("startedAt")), now
    elif "terminated" in state:
        start, end = parse_time(state["terminated"].get("startedAt")), parse_time(state["terminated"].get("finishedAt"))
    else:
        return 0.0
    if not start or not end:
        return 0.0
    return max((end - start).total_seconds(), 0.0)


def waiting_cause(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """Why the newest Pod is not running yet: unschedulable, or an image it cannot pull."""
    active = [p for p in pods if (p.get("status") or {}).get("phase") == "Pending" and not p["metadata"].get("deletionTimestamp")]
    if not active:
        return None
    pod = active[-1]
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            return REASON_UNSCHEDULABLE, MSG_UNSCHEDULABLE.format(pod=pod["metadata"]["name"], detail=cond.get("message", ""))
    waiting = container_status(pod).get("state", {}).get("waiting") or {}
    if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
        return REASON_IMAGE_PULL, MSG_IMAGE_PULL.format(reason=waiting["reason"], detail=waiting.get("message", ""))
    if waiting.get("reason") in ("CreateContainerConfigError", "CreateContainerError"):
        return waiting["reason"], f"{waiting['reason']}: {waiting.get('message', '')}"
    return None


def _event_time(event: Mapping[str, Any]) -> datetime.datetime | None:
    """When an Event last happened: lastTimestamp (core/v1 recorders), else eventTime (events.k8s.io)."""
    series = event.get("series") or {}
    return parse_time(
        event.get("lastTimestamp") or series.get("lastObservedTime") or event.get("eventTime")
        or event.get("firstTimestamp") or (event.get("metadata") or {}).get("creationTimestamp")
    )


_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x1f\x7f]+")  # terminal escapes, then control characters


def shown_api_message(text: object) -> str:
    """An API server's or admission webhook's message as a status may carry it: one line, control
    characters out, at most SHOWN_API_MESSAGE_CHARS characters (a webhook can answer with anything)."""
    one_line = " ".join(_CONTROL.sub(" ", str(text)).split())
    one_line = one_line.removeprefix("Error creating: ")
    return one_line if len(one_line) <= SHOWN_API_MESSAGE_CHARS else one_line[: SHOWN_API_MESSAGE_CHARS - 1] + "…"


def creation_failure(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], failures: Sequence[Mapping[str, Any]]
) -> tuple[str, str] | None:
    """The API's refusal of this Job's Pod, when that is the latest thing to happen to it.

    The Job controller records a FailedCreate Event on the Job and retries with a backoff; the Job
    stays active=0 and no Pod appears, so nothing else would tell the user why. A refusal older than
    the Job's newest Pod is history: the cause went away (quota raised) and the Pod was created.
    Events of an earlier Job of the same name (another uid) are not this Job's.
    """
    meta = job.get("metadata") or {}
    mine = [
        e for e in failures
        if (e.get("involvedObject") or {}).get("name") == meta.get("name")
        and (not meta.get("uid") or (e.get("involvedObject") or {}).get("uid") in (None, meta.get("uid")))
    ]
    if not mine:
        return None
    newest = max(mine, key=lambda e: _event_time(e) or datetime.datetime.min.replace(tzinfo=datetime.UTC))
    refused_at = _event_time(newest)
    created = [t for t in (parse_time(p["metadata"].get("creationTimestamp")) for p in pods) if t is not None]
    if refused_at is None or (created and max(created) >= refused_at):
        return None
    detail = shown_api_message(newest.get("message") or "no message")
    return REASON_POD_CREATION_FAILED, MSG_POD_CREATION_FAILED.format(job=meta.get("name"), detail=detail)


def root_cause(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], stage: str) -> str:
    """Why a Job failed, in the words a user can act on: OOM, the trainer's error, a deadline."""
    failed = job_condition(job, "Failed") or {}
    reason = failed.get("reason", "")
    last = None
    for pod in reversed(pods):
        terminated = container_status(pod).get("state", {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            last = terminated
            break
    detail = ""
    if last:
        code = last.get("exitCode")
        if last.get("reason") == "OOMKilled":
            detail = MSG_OOM_KILLED
        else:
            trainer = None
            try:
                trainer = json.loads(last.get("message") or "")
            except ValueError:
                pass
            name = exitcodes.NAMES.get(code, f"exit code {code}")
            if isinstance(trainer, dict) and trainer.get("message"):
                detail = f"{trainer.get('reason', name)} (exit code {code}): {trainer['message']}"
            else:
                tail = (last.get("message") or "").strip().splitlines()[-1:] or [""]
                detail = f"{name} (exit code {code})" + (f": {tail[0][:500]}" if tail[0] else "")
    if reason == "DeadlineExceeded":
        limit = job.get("spec", {}).get("activeDeadlineSeconds")
        return MSG_DEADLINE.format(stage=stage, seconds=limit)
    if reason == "BackoffLimitExceeded":
        tries = int(job.get("status", {}).get("failed") or 0)
        return f"{stage} failed {tries} times; last attempt: {detail or failed.get('message', 'no details')}"
    return f"{stage} failed: {detail or failed.get('message') or reason or 'no details'}"


# --- which child events matter ---------------------------------------------------------------------


def child_fingerprint(kind: str, obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What `decide` can read of a child Job or Pod: an event that leaves it unchanged is noise.

    A Pod's life brings many events (scheduling, IP, container creation, kubelet heartbeats of
    its status); only its phase, conditions, container states and deletion change a decision.
    A Job's status and suspension do. Anything else (a progress ConfigMap) always matters.
    """
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if kind == "Pod":
        containers = tuple(
            (
                c.get("name"),
                tuple(sorted((c.get("state") or {}).keys())),
                _state_detail(c.get("state") or {}),
                c.get("restartCount", 0),
            )
            for c in status.get("containerStatuses") or []
        )
        conditions = tuple(
            (c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []
        )
        return ("Pod", status.get("phase"), bool(meta.get("deletionTimestamp")), conditions, containers)
    if kind == "Job":
        return ("Job", json.dumps(status, sort_keys=True), (obj.get("spec") or {}).get("suspend"),
                bool(meta.get("deletionTimestamp")))
    return (kind, meta.get("resourceVersion"))


def _state_detail(state: Mapping[str, Any]) -> tuple[Any, ...]:
    for key in ("terminated", "waiting"):
        if key in state:
            detail = state[key] or {}
            return (key, detail.get("reason"), detail.get("exitCode"), detail.get("message"))
    return ()
