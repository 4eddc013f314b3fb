"""Recording Kubernetes Events about the objects the operator manages.

core/v1 Events with `involvedObject`, so `kubectl describe` and `kubectl get events
--field-selector involvedObject.name=...` show them next to the object. kopf's own event posting
is limited to errors (see __main__); the operator's domain events come from here, and only on
transitions (logic decides which).
"""

from __future__ import annotations

import datetime
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import kubernetes

from finetune_operator.k8s import client
from finetune_operator.k8s.resources import COMPONENT

MAX_MESSAGE = 1024  # what events.k8s.io/v1 allows for `note`; kept for core/v1 too
INSTANCE = (os.environ.get("POD_NAME") or socket.gethostname())[:128]


def record(
    regarding: Mapping[str, Any],
    type: Literal["Normal", "Warning"],
    reason: str,
    message: str,
) -> None:
    """Create one Event about `regarding` (a resource body: apiVersion, kind, metadata)."""
    metadata = regarding["metadata"]
    namespace = metadata.get("namespace") or "default"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{metadata['name']}.{uuid.uuid4().hex[:16]}",
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": regarding["apiVersion"],
            "kind": regarding["kind"],
            "name": metadata["name"],
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "type": type,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": INSTANCE,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        client.core().create_namespaced_event(namespace, event)
    except kubernetes.client.ApiException as exc:
        # The namespace is being deleted: the object and its events go with it.
        if exc.status in (403, 404) and "being terminated" in (exc.body or ""):
            return
        raise
