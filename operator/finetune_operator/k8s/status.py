"""Writing `status` through the status subresource, never touching `spec`.

A JSON merge patch (RFC 7386) of the status only: the API server ignores any other part of the
object on this endpoint, so the operator cannot fight a GitOps tool over user-owned fields.
`logic.status.merge_patch` computes the patch from the old and new status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes

from finetune_operator.k8s import client
from finetune_operator.k8s.resources import FIELD_MANAGER, Resource


def patch(resource: Resource, namespace: str, name: str, status_patch: Mapping[str, Any]) -> bool:
    """Merge-patch `status` of one object. Returns False when the object is already gone."""
    try:
        client.custom_objects().patch_namespaced_custom_object_status(
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
            return False
        raise
    return True
