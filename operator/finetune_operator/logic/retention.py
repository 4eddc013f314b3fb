"""Which registered versions' artifacts to delete: all but the newest N of a model.

A version keeps its artifact while it is among the `keep` newest of its model, or while it is
in Production (it serves traffic), or while any Rollout references it. Older ones lose their
artifact (a cleanup Job removes the files) but keep their ModelVersion: the record of what was
trained, how it scored and where it came from stays in the registry.

What a Rollout references is read from the Rollout itself, never guessed from object names:
its stable and candidate versions (status), its pinned version (spec.version), and the version
a rollback would go to (the previous stable, as `kubectl finetune rollback` would pick it).
Each is mapped to its ModelVersion by the ModelVersions' own spec (modelName, version).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from finetune_operator.api.rollout import RolloutStatus
from finetune_operator.logic import rollout as rollout_logic


@dataclass(frozen=True)
class Registered:
    name: str
    model: str
    number: int
    phase: str | None
    artifact_deleted: bool
    version: str = ""


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


def referenced(rollouts: Iterable[Mapping[str, Any]], modelversions: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of the ModelVersions that some Rollout references (see the module's docstring).

    A Rollout whose status cannot be read protects every version of its model: retention must
    never guess in the direction of deleting.
    """
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for mv in modelversions:
        by_model.setdefault((mv.get("spec") or {}).get("modelName", ""), []).append(mv)
    names: set[str] = set()
    for ro in rollouts:
        spec = ro.get("spec") or {}
        model_versions = by_model.get(spec.get("modelName", ""), [])
        if not model_versions:
            continue
        by_version = {(mv.get("spec") or {}).get("version"): mv["metadata"]["name"] for mv in model_versions}
        raw_status = ro.get("status") or {}
        try:
            status = RolloutStatus.model_validate(dict(raw_status))
        except ValueError:
            names |= set(by_version.values())
            continue
        wanted = {status.stable_version, status.candidate_version, spec.get("version")}
        observed = rollout_logic.Observed(versions=tuple(rollout_logic.VersionInfo.from_object(mv) for mv in model_versions))
        previous = rollout_logic.previous_stable(status, observed)
        if previous is not None:
            wanted.add(previous.version)
        names |= {by_version[v] for v in wanted if v in by_version}
    return names


def from_object(mv: Mapping[str, Any]) -> Registered:
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
        version=version,
    )
