"""Server-side apply of child objects, with one field manager for the whole operator.

`builders/` renders each desired child as a plain dict; this is the single place that sends them.
Apply is idempotent, so a restarted operator re-applying the same deterministic names never
duplicates work, and `force=True` takes back fields another manager changed on our children.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from kubernetes.dynamic import DynamicClient

from finetune_operator.k8s import client
from finetune_operator.k8s.resources import FIELD_MANAGER

_lock = threading.Lock()
_dynamic: DynamicClient | None = None


def _dynamic_client() -> DynamicClient:
    global _dynamic
    with _lock:
        if _dynamic is None:
            _dynamic = DynamicClient(client.api_client())
        return _dynamic


def apply(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply `obj` (apiVersion, kind, metadata.name[, metadata.namespace], ...)."""
    resource = _dynamic_client().resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    metadata = obj["metadata"]
    applied = resource.server_side_apply(
        body=dict(obj),
        name=metadata["name"],
        namespace=metadata.get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
    )
    return applied.to_dict()

