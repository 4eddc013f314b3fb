"""Writing `status` through the status subresource, never touching `spec`.

Two ways, one per kind of writer:

- `patch`: a JSON merge patch (RFC 7386) of the fields one controller owns alone on its own
  kind (a FineTuneJob's or a Rollout's status: `logic.status.merge_patch` computes it from the
  old and the new status).
- `apply`: server-side apply of the status subresource under a field manager of the writer's
  own. Used where several controllers write one object's status — a ModelVersion's — so that
  each owns exactly its fields: `conditions` is a list-map keyed by `type` in the CRD, so the
  API server merges each writer's conditions by type and keeps the others'; a writer sends all
  the fields it owns every time (a field it leaves out is released). No read-modify-write of
  the whole list, so two writers never lose each other's updates.

    | writer (field manager)          | ModelVersion status fields it owns                      |
    |---------------------------------|---------------------------------------------------------|
    | finetune-operator               | phase, gates, comparison, evaluationTime, message,      |
    |   (the ModelVersion controller) | modelCardConfigMap, observedGeneration,                 |
    |                                 | conditions Ready, GatesPassed                           |
    | finetune-operator-rollout       | condition Serving                                       |
    | finetune-operator-retention     | condition ArtifactRetained                              |
    | finetune-operator-verify        | condition ArtifactVerified                              |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes

from finetune_operator.k8s import client
from finetune_operator.k8s.resources import FIELD_MANAGER, Resource

ROLLOUT_MANAGER = f"{FIELD_MANAGER}-rollout"
RETENTION_MANAGER = f"{FIELD_MANAGER}-retention"
VERIFY_MANAGER = f"{FIELD_MANAGER}-verify"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


def patch(resource: Resource, namespace: str, name: str, status_patch: Mapping[str, Any]) -> dict[str, Any] | None:
    """Merge-patch `status` of one object: the object as written, or None when it is already gone."""
    try:
        return client.custom_objects().patch_namespaced_custom_object_status(
            resource.group,
            resource.version,
            namespace,
            resource.plural,
            name,
            {"status": dict(status_patch)},
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def apply(
    resource: Resource, namespace: str, name: str, owned_status: Mapping[str, Any], field_manager: str
) -> dict[str, Any] | None:
    """Server-side apply of the status fields `field_manager` owns; the object as written, or
    None when it is gone. `force`: these fields are this writer's, whoever wrote them before
    (an older operator's merge patches, a person's `kubectl patch`)."""
    body = {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": name, "namespace": namespace},
        "status": dict(owned_status),
    }
    try:
        return client.custom_objects().patch_namespaced_custom_object_status(
            resource.group,
            resource.version,
            namespace,
            resource.plural,
            name,
            body,
            field_manager=field_manager,
            force=True,
            _content_type=APPLY_CONTENT_TYPE,
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
