"""Which registered versions' artifacts to delete: all but the newest N of a model.

A version keeps its artifact while it is among the `keep` newest of its model, or while it is
in Production (it serves traffic), or while any Rollout names it as stable or candidate. Older
ones lose their artifact (a cleanup Job removes the files) but keep their ModelVersion: the
record of what was trained, how it scored and where it came from stays in the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Registered:
    name: str
    model: str
    number: int
    phase: str | None
    artifact_deleted: bool


def expired(versions: Iterable[Registered], keep: int, in_use: Iterable[str] = ()) -> list[str]:
    """Names of the versions whose artifacts are past retention (never in use, never Production)."""
    protected = set(in_use)
    by_model: dict[str, list[Registered]] = {}
    for version in versions:
        by_model.setdefault(version.model, []).append(version)
    out = []
    for model_versions in by_model.values():
        newest_first = sorted(model_versions, key=lambda v: v.number, reverse=True)
        for version in newest_first[keep:]:
            if version.phase == "Production" or version.name in protected or version.artifact_deleted:
                continue
            out.append(version.name)
    return sorted(out)


def from_object(mv: Mapping) -> Registered:
    labels = mv["metadata"].get("labels") or {}
    spec = mv.get("spec") or {}
    version = spec.get("version", "")
    number = labels.get("finetune.ai/version-number") or (version[1:] if version[1:].isdigit() else "0")
    conditions = (mv.get("status") or {}).get("conditions") or []
    deleted = any(c.get("type") == "ArtifactRetained" and c.get("status") == "False" for c in conditions)
    return Registered(
        name=mv["metadata"]["name"],
        model=spec.get("modelName", ""),
        number=int(number),
        phase=(mv.get("status") or {}).get("phase"),
        artifact_deleted=deleted,
    )
