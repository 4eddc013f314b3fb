"""Scheduled retraining: a FineTuneJob made from a template, named for the day it runs.

"Retrain monthly on new data" is a manifest: the chart's `schedules` render, per schedule, a
ConfigMap holding a FineTuneJob template and a CronJob that runs `python -m
finetune_operator.retrain`, which renders the template with `render` and creates the job.

- `${DATE}` (2026-12-06), `${MONTH}` (2026-12) and `${STAMP}` (20261206) in the template's text are
  replaced by the run's date (UTC), so a dataset location can follow the calendar
  (`s3://data/tickets/${MONTH}/`).
- The job is named `<template name>-<STAMP>`: one job a day at most, and a CronJob retry on the
  same day finds it already there instead of making a second.
- Its versions belong to one model: `spec.output.modelName` defaults to the template's name, so
  each run registers the next version (v1, v2, ...) of the same model rather than a model of its own.
- Labels `finetune.ai/schedule` (the schedule) and an annotation with the time it was made.

Pure: text and a time in, a FineTuneJob body out, or a ScheduleError naming what is wrong.
"""

from __future__ import annotations

import datetime
from typing import Any

import yaml

from finetune_operator.api.finetunejob import NAME_MAX_LENGTH

SCHEDULE_LABEL = "finetune.ai/schedule"
SCHEDULED_AT_ANNOTATION = "finetune.ai/scheduled-at"
STAMP_LENGTH = len("-20261206")


class ScheduleError(ValueError):
    """The template cannot make a FineTuneJob; the message says what to change."""


def placeholders(now: datetime.datetime) -> dict[str, str]:
    now = now.astimezone(datetime.UTC)
    return {"${DATE}": f"{now:%Y-%m-%d}", "${MONTH}": f"{now:%Y-%m}", "${STAMP}": f"{now:%Y%m%d}"}


def render(template: str, now: datetime.datetime, schedule: str) -> dict[str, Any]:
    """The FineTuneJob the schedule makes at `now`."""
    values = placeholders(now)
    for key, value in values.items():
        template = template.replace(key, value)
    try:
        body = yaml.safe_load(template)
    except yaml.YAMLError as exc:
        raise ScheduleError(f"the template is not YAML: {exc}") from None
    if not isinstance(body, dict) or body.get("kind") != "FineTuneJob" or not str(body.get("apiVersion", "")).startswith("finetune.ai/"):
        raise ScheduleError("the template must be one FineTuneJob (apiVersion finetune.ai/v1alpha1, kind FineTuneJob)")
    meta = body.setdefault("metadata", {}) or {}
    base = meta.get("name")
    if not isinstance(base, str) or not base:
        raise ScheduleError("the template needs metadata.name: each run is named <metadata.name>-<YYYYMMDD>")
    if len(base) > NAME_MAX_LENGTH - STAMP_LENGTH:
        raise ScheduleError(
            f"the template's metadata.name {base!r} is longer than {NAME_MAX_LENGTH - STAMP_LENGTH} characters: "
            f"with the date appended it would pass the FineTuneJob limit of {NAME_MAX_LENGTH}"
        )
    meta.pop("namespace", None)  # the schedule's namespace decides
    meta["name"] = f"{base}-{values['${STAMP}']}"
    meta["labels"] = {**(meta.get("labels") or {}), SCHEDULE_LABEL: schedule}
    meta["annotations"] = {**(meta.get("annotations") or {}),
                           SCHEDULED_AT_ANNOTATION: now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    body["metadata"] = meta
    spec = body.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise ScheduleError("the template's spec must be an object")
    output = spec.setdefault("output", {}) or {}
    output.setdefault("modelName", base)
    spec["output"] = output
    return body
