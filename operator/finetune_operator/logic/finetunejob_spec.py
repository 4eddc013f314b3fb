"""FineTuneJob spec validation beyond the CRD schema and CEL rules (locations per scheme,
settings that make no sense together): each problem names the field and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from finetune_operator.api import common as api_common
from finetune_operator.api.finetunejob import AdaptationType, FineTuneJobSpec
from finetune_operator.logic.spec import SpecProblem

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
