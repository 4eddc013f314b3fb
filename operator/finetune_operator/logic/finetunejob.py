"""What a FineTuneJob's status should be, decided from its spec, its status and its children.

`decide` is the whole brain of the FineTuneJob controller and is pure: the handler observes
(spec, status, child objects, the clock), `decide` returns the status the object should have
and the Events worth recording, and the handler acts (patches the status when it changed,
records the Events). Re-running it on the same inputs returns the same status and no Events,
which is what makes a restarted operator, a resync or a duplicate watch event harmless.

The phase is derived in a fixed order, as argo-rollouts does (and extended as the pipeline
grows): an invalid spec -> Failed (no work starts; fixing the spec re-evaluates it), otherwise
Pending until data preparation starts (a later issue adds Preparing, Training, Evaluating, ...).

Conditions:
- `Accepted`: whether the spec is usable. False with reason InvalidSpec names every problem with
  the field and the fix. This covers what the CRD schema and CEL rules cannot express (the shape
  of a model or dataset location per scheme, settings that make no sense together) and, as a
  second line, anything the API server let through that the pydantic model rejects.
- `Succeeded`: the summary condition of a bounded job (Unknown while it runs).

Each reason has its message next to it, so what users read is reviewed in one place.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from finetune_operator.api import common as api_common
from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.finetunejob import (
    MSG_DPO_FORMAT,
    MSG_QLORA_GPUS,
    AdaptationType,
    FineTuneJobPhase,
    FineTuneJobSpec,
    FineTuneJobStatus,
)
from finetune_operator.logic import conditions
from finetune_operator.logic import spec as spec_problems
from finetune_operator.logic.events import Event
from finetune_operator.logic.spec import InvalidSpec, SpecProblem
from finetune_operator.logic.status import merge_patch

# Condition types.
ACCEPTED = "Accepted"
SUCCEEDED = "Succeeded"

# Reasons, each with its message.
REASON_SPEC_VALID = "SpecValid"
MSG_SPEC_VALID = "the spec is valid"
REASON_INVALID_SPEC = "InvalidSpec"
MSG_INVALID_SPEC = "the spec is invalid, no work starts until it is fixed: {problems}"
REASON_PENDING = "Pending"
MSG_PENDING = "waiting for data preparation to start"

# Events, emitted on transitions only.
EVENT_ACCEPTED = "Accepted"
MSG_EVENT_ACCEPTED = "spec accepted; waiting for data preparation to start"
EVENT_INVALID_SPEC = REASON_INVALID_SPEC

KIND = "FineTuneJob"

# Cross-field rules of the model whose pydantic error has no field: where the CEL rule points.
_FIELD_OF_RULE = {
    MSG_QLORA_GPUS: "spec.resources.gpusPerNode",
    MSG_DPO_FORMAT: "spec.dataset.format",
}


@dataclass(frozen=True)
class Children:
    """The FineTuneJob's child objects as observed (Jobs and their Pods, later ConfigMaps)."""

    jobs: tuple[Mapping[str, Any], ...] = ()
    pods: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Decision:
    """The status the object should have, the merge patch to get there, the Events to record."""

    status: FineTuneJobStatus
    status_patch: dict[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()

    @property
    def status_changed(self) -> bool:
        return bool(self.status_patch)


def parse_spec(raw: Mapping[str, Any] | None) -> FineTuneJobSpec | InvalidSpec:
    """The typed spec, or every problem with it (schema errors first, then semantic ones)."""
    try:
        spec = FineTuneJobSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        return InvalidSpec(spec_problems.problems_from_validation_error(exc, KIND, _FIELD_OF_RULE))
    problems = semantic_problems(spec)
    return InvalidSpec(problems) if problems else spec


def parse_status(raw: Mapping[str, Any] | None) -> FineTuneJobStatus:
    """The status as last written; an unreadable one counts as empty and gets rewritten."""
    try:
        return FineTuneJobStatus.model_validate(dict(raw or {}))
    except ValidationError:
        return FineTuneJobStatus()


def decide(
    spec: FineTuneJobSpec | InvalidSpec,
    status: FineTuneJobStatus,
    children: Children,
    now: datetime.datetime,
    *,
    generation: int,
) -> Decision:
    """The status a FineTuneJob should have now, and the Events its transitions are worth."""
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    conds = list(status.conditions)
    if isinstance(spec, InvalidSpec):
        message = MSG_INVALID_SPEC.format(problems=spec.message)
        phase = FineTuneJobPhase.FAILED
        conds = conditions.set_condition(
            conds, ACCEPTED, ConditionStatus.FALSE, REASON_INVALID_SPEC, message, generation, now
        )
        conds = conditions.set_condition(
            conds, SUCCEEDED, ConditionStatus.FALSE, REASON_INVALID_SPEC, message, generation, now
        )
    else:
        message = MSG_PENDING
        phase = FineTuneJobPhase.PENDING
        conds = conditions.set_condition(
            conds, ACCEPTED, ConditionStatus.TRUE, REASON_SPEC_VALID, MSG_SPEC_VALID, generation, now
        )
        conds = conditions.set_condition(
            conds, SUCCEEDED, ConditionStatus.UNKNOWN, REASON_PENDING, MSG_PENDING, generation, now
        )
    new_status = status.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "conditions": conds,
            "message": message,
        }
    )
    return Decision(
        status=new_status,
        status_patch=merge_patch(_dump(status), _dump(new_status)),
        events=_events(status, new_status),
    )


def _events(old: FineTuneJobStatus, new: FineTuneJobStatus) -> tuple[Event, ...]:
    before = conditions.find_condition(old.conditions, ACCEPTED)
    after = conditions.find_condition(new.conditions, ACCEPTED)
    if after is None:
        return ()
    if after.status == ConditionStatus.TRUE:
        if conditions.transitioned(before, after):
            return (Event("Normal", EVENT_ACCEPTED, MSG_EVENT_ACCEPTED),)
        return ()
    # A different problem after an edit is news too, not only the flip to invalid.
    if conditions.transitioned(before, after) or before.message != after.message:
        return (Event("Warning", EVENT_INVALID_SPEC, after.message),)
    return ()


def _dump(status: FineTuneJobStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)


# --- semantic validation: what the CRD schema and CEL rules do not express -------------------

_HF_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LOCATION_FORMS = {
    "hf": "hf://<org>/<name>",
    "s3": "s3://<bucket>/<prefix>",
    "pvc": "pvc://<claim>/<path>",
    "file": "file://<path>",
}


def _schemes(uri_pattern: str) -> tuple[str, ...]:
    """The URI schemes an API pattern like `^((hf|s3)://.+|/.*)$` allows: the API is the source."""
    match = re.search(r"\(\(([a-z0-9|]+)\)://", uri_pattern)
    return tuple(match.group(1).split("|")) if match else ()


MODEL_SCHEMES = _schemes(api_common.MODEL_URI_PATTERN)
DATA_SCHEMES = _schemes(getattr(api_common, "DATA_URI_PATTERN", api_common.MODEL_URI_PATTERN))
ARTIFACT_SCHEMES = _schemes(api_common.ARTIFACT_URI_PATTERN)


def semantic_problems(spec: FineTuneJobSpec) -> tuple[SpecProblem, ...]:
    """Problems a schema-valid spec can still have; empty when it can be worked on."""
    problems: list[SpecProblem] = []
    problems += location_problems("spec.baseModel.uri", spec.base_model.uri, MODEL_SCHEMES)
    if spec.base_model.revision and not spec.base_model.uri.startswith("hf://"):
        problems.append(
            SpecProblem(
                "spec.baseModel.revision",
                "a revision only applies to hf:// models",
                "remove it, or point baseModel.uri at an hf:// model",
            )
        )
    if spec.dataset.uri is not None:
        problems += location_problems("spec.dataset.uri", spec.dataset.uri, DATA_SCHEMES)
    if spec.output.uri is not None:
        problems += location_problems("spec.output.uri", spec.output.uri, ARTIFACT_SCHEMES)
    if spec.adaptation.type == AdaptationType.FULL and spec.adaptation.target_modules:
        problems.append(
            SpecProblem(
                "spec.adaptation.targetModules",
                "target modules only apply to lora and qlora (full trains every weight)",
                "remove targetModules, or set adaptation.type to lora",
            )
        )
    if spec.hyperparameters.precision == "fp16" and spec.resources.gpus_per_node == 0:
        problems.append(
            SpecProblem(
                "spec.hyperparameters.precision",
                "fp16 training needs GPUs, and resources.gpusPerNode is 0",
                "use precision auto or fp32 on CPUs, or request GPUs",
            )
        )
    return tuple(problems)


def location_problems(field_path: str, uri: str, schemes: Sequence[str]) -> list[SpecProblem]:
    """Problems with a model/dataset/artifact location: scheme, and the shape each scheme needs."""
    allowed = ", ".join(f"{scheme}://" for scheme in schemes) + " or an absolute path"
    scheme, separator, rest = uri.partition("://")
    if not separator:
        if not uri.startswith("/"):
            return [SpecProblem(field_path, f"{uri!r} is neither a URI nor an absolute path", f"use {allowed}")]
        if ".." in PurePosixPath(uri).parts:
            return [SpecProblem(field_path, f"{uri!r} contains '..'", "use an absolute path without '..'")]
        return []
    if scheme not in schemes:
        return [SpecProblem(field_path, f"scheme {scheme}:// is not supported here", f"use {allowed}")]
    form = _LOCATION_FORMS.get(scheme, f"{scheme}://...")
    head, _, tail = rest.partition("/")
    if scheme == "file":
        tail = rest
    elif scheme == "hf":
        segments = rest.split("/")
        if len(segments) > 2 or not all(_HF_SEGMENT.match(segment) for segment in segments):
            return [SpecProblem(field_path, f"{uri!r} is not a Hugging Face repository id", f"use {form}")]
    elif scheme == "s3":
        if not _S3_BUCKET.match(head):
            return [
                SpecProblem(
                    field_path,
                    f"{head!r} is not a valid S3 bucket name",
                    f"use {form} with a bucket of 3-63 lowercase letters, digits, dots or hyphens",
                )
            ]
    elif scheme == "pvc":
        if not _DNS_SUBDOMAIN.match(head) or len(head) > 253:
            return [
                SpecProblem(
                    field_path,
                    f"{head!r} is not a PersistentVolumeClaim name",
                    f"use {form} with the claim's name (lowercase letters, digits, '-' and '.')",
                )
            ]
    if ".." in PurePosixPath("/" + tail).parts:
        return [SpecProblem(field_path, f"{uri!r} contains '..'", f"use {form} without '..'")]
    return []
