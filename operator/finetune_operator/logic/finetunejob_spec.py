"""FineTuneJob spec validation beyond the CRD schema and CEL rules (locations per scheme,
settings that make no sense together): each problem names the field and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from finetune_operator.api import common as api_common
from finetune_operator.api.finetunejob import AdaptationType, FineTuneJobSpec
from finetune_operator.logic.spec import InvalidSpec, SpecProblem

# --- semantic validation: what the CRD schema and CEL rules do not express -------------------

_HF_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
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
    if spec.base_model.token_secret_ref is not None and not spec.base_model.uri.startswith("hf://"):
        problems.append(
            SpecProblem(
                "spec.baseModel.tokenSecretRef",
                "a Hub token only applies to hf:// models",
                "remove it, or point baseModel.uri at an hf:// model",
            )
        )
    if spec.dataset.uri is not None:
        problems += location_problems("spec.dataset.uri", spec.dataset.uri, DATA_SCHEMES)
    for index, source in enumerate(spec.dataset.sources or []):
        if source.uri is not None:
            problems += location_problems(f"spec.dataset.sources[{index}].uri", source.uri, DATA_SCHEMES)
    if spec.output.uri is not None:
        problems += location_problems("spec.output.uri", spec.output.uri, ARTIFACT_SCHEMES, writable=True)
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


def location_problems(
    field_path: str, uri: str, schemes: Sequence[str], *, writable: bool = False
) -> list[SpecProblem]:
    """Problems with a model/dataset/artifact location: its scheme, the shape each scheme needs,
    and what `api.common.parse_location` refuses ('.' and '..' segments, file:// with a host, a
    claim that is not a claim name and, for `writable` locations, the bare root of a claim or
    bucket: a run writes and cleans up below what it names, never the whole of it)."""
    allowed = ", ".join(f"{scheme}://" for scheme in schemes) + " or an absolute path"
    scheme, separator, rest = uri.partition("://")
    if not separator:
        if not uri.startswith("/"):
            return [SpecProblem(field_path, f"{uri!r} is neither a URI nor an absolute path", f"use {allowed}")]
    elif scheme not in schemes:
        return [SpecProblem(field_path, f"scheme {scheme}:// is not supported here", f"use {allowed}")]
    form = _LOCATION_FORMS.get(scheme, f"{scheme}://...")
    if scheme == "hf":
        segments = rest.split("/")
        if len(segments) > 2 or not all(_HF_SEGMENT.match(segment) for segment in segments):
            return [SpecProblem(field_path, f"{uri!r} is not a Hugging Face repository id", f"use {form}")]
        return []
    try:
        api_common.parse_location(uri, allow_root=not writable)
    except api_common.LocationError as exc:
        return [SpecProblem(field_path, exc.problem, exc.fix)]
    return []


# --- references to other objects: resolved from the watch caches before rendering -------------

MSG_NO_VERSION = "ModelVersion {name} does not exist in this namespace"
FIX_NO_VERSION = "name an existing version (kubectl get modelversions), or wait until its FineTuneJob registered it and apply again"


def prepared_data_of(model_version: Mapping[str, Any]) -> str | None:
    """Where a ModelVersion's training run left its prepared data: its lineage says so (versions
    registered before it did: beside the artifact, <run>/data), never in object storage."""
    spec = model_version.get("spec") or {}
    recorded = (spec.get("lineage") or {}).get("preparedDataUri")
    if recorded:
        return str(recorded)
    artifact = str((spec.get("artifact") or {}).get("uri") or "")
    if not artifact or artifact.startswith("s3://") or "/" not in artifact.rstrip("/"):
        return None
    return artifact.rstrip("/").rsplit("/", 1)[0] + "/data"


def resolve_references(
    spec: FineTuneJobSpec, model_version: Callable[[str], Mapping[str, Any] | None]
) -> FineTuneJobSpec | InvalidSpec:
    """The spec with every ModelVersion it names resolved (the adapter it continues from, the data
    a replay source reads), or the references that cannot be: a missing version, one whose data
    is not kept, one that cannot be continued."""
    problems = _resolve_starting_point(spec, model_version)
    for index, source in enumerate(spec.dataset.sources or []):
        if source.replay is None:
            continue
        field_path = f"spec.dataset.sources[{index}].replay.modelVersion"
        name = source.replay.model_version
        found = model_version(name)
        if found is None:
            problems.append(SpecProblem(field_path, MSG_NO_VERSION.format(name=name), FIX_NO_VERSION))
            continue
        data = prepared_data_of(found)
        if data is None:
            problems.append(SpecProblem(
                field_path,
                f"ModelVersion {name} keeps no prepared data to replay (its run wrote to object storage)",
                "replay a version trained to a claim or node path, or add its data as a uri source",
            ))
            continue
        source.replay._data_uri = data
    return InvalidSpec(tuple(problems)) if problems else spec


def _resolve_starting_point(
    spec: FineTuneJobSpec, model_version: Callable[[str], Mapping[str, Any] | None]
) -> list[SpecProblem]:
    start = spec.base_model
    if start.model_version is None:
        return []
    field_path, name = "spec.baseModel.modelVersion", start.model_version
    found = model_version(name)
    if found is None:
        return [SpecProblem(field_path, MSG_NO_VERSION.format(name=name), FIX_NO_VERSION)]
    parent = found.get("spec") or {}
    artifact = parent.get("artifact") or {}
    parent_base = str((parent.get("baseModel") or {}).get("uri") or "")
    if spec.adaptation.type == AdaptationType.FULL:
        return [SpecProblem("spec.adaptation.type", f"full fine-tuning cannot continue the adapter of ModelVersion {name}",
                            "use lora or qlora to continue it, or remove baseModel.modelVersion")]
    if artifact.get("type") != "adapter":
        return [SpecProblem(field_path, f"ModelVersion {name} holds full weights, not an adapter to continue",
                            f"set baseModel.uri to its artifact ({artifact.get('uri', '?')}) and remove baseModel.modelVersion")]
    if parent_base != start.uri:
        return [SpecProblem("spec.baseModel.uri", f"ModelVersion {name} was trained on {parent_base}, not on {start.uri}",
                            f"set baseModel.uri to {parent_base}: an adapter fits only the base it was trained on")]
    uri = str(artifact.get("uri") or "")
    if not uri or uri.startswith("s3://"):
        return [SpecProblem(field_path, f"ModelVersion {name}'s adapter is in object storage, which continuing does not read yet",
                            "continue a version trained to a claim or node path")]
    start._adapter_uri = uri
    start._parent_data_uri = prepared_data_of(found)  # None: judged without the parent's test split
    return []
