"""Recording Kubernetes Events about the objects the operator manages.

core/v1 Events with `involvedObject`, so `kubectl describe` and `kubectl get events
--field-selector involvedObject.name=...` show them next to the object. kopf's own event posting
is limited to errors (see __main__); the operator's domain events come from here, and only on
transitions (logic decides which).

An Event is never lost nor doubled when the operator dies mid-reconcile: its name is derived
from the object's uid, the reason and the transition (`key`, by default the message), and it is
created, never updated — a second create of the same transition gets 409 and is ignored. So the
handlers record a transition's Events *before* the status patch that makes the transition: a
kill in between repeats the same decision from the same old status on restart, which names the
same Events (already there: ignored) and then writes the status. Callers whose transition text
can legitimately repeat pass a `key` that tells the occurrences apart (`transition_key` of the
status the decision started from).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from typing import Any, Literal

import kubernetes

from finetune_operator.k8s import client
from finetune_operator.k8s.resources import COMPONENT

MAX_MESSAGE = 1024  # what events.k8s.io/v1 allows for `note`; kept for core/v1 too
INSTANCE = (os.environ.get("POD_NAME") or socket.gethostname())[:128]
NAME_DIGEST_LENGTH = 20  # hex characters of sha256: collisions between transitions are negligible
MAX_OBJECT_NAME = 253 - NAME_DIGEST_LENGTH - 1
# Status fields that are not part of a transition (kopf's own bookkeeping).
_UNSTABLE_STATUS_KEYS = ("kopf",)


def event_name(regarding: Mapping[str, Any], reason: str, key: str) -> str:
    """The Event's name for one transition of one object: `<object>.<sha256(uid, reason, key)>`."""
    metadata = regarding["metadata"]
    identity = json.dumps([metadata.get("uid") or "", metadata.get("namespace") or "", metadata["name"], reason, key])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:NAME_DIGEST_LENGTH]
    return f"{metadata['name'][:MAX_OBJECT_NAME]}.{digest}"


def transition_key(old_status: Mapping[str, Any] | None, message: str) -> str:
    """A key naming one transition: the status it started from and what it says.

    The same decision re-run after a kill starts from the same status (the patch was never
    written) and gets the same key; a later occurrence of the same text starts from another one.
    """
    status = {k: v for k, v in dict(old_status or {}).items() if k not in _UNSTABLE_STATUS_KEYS}
    return hashlib.sha256(json.dumps([status, message], sort_keys=True, default=str).encode()).hexdigest()


def record(
    regarding: Mapping[str, Any],
    type: Literal["Normal", "Warning"],
    reason: str,
    message: str,
    *,
    key: str | None = None,
) -> bool:
    """Create the Event of one transition about `regarding` (a resource body: apiVersion, kind,
    metadata), unless it exists already. `key` names the transition (default: the message).
    Returns whether this call created it."""
    metadata = regarding["metadata"]
    namespace = metadata.get("namespace") or "default"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    name = event_name(regarding, reason, message if key is None else key)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": name,
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
        if exc.status == 409:
            return False  # this transition's Event was recorded before a restart
        # The namespace is being deleted: the object and its events go with it.
        if exc.status in (403, 404) and "being terminated" in (exc.body or ""):
            return False
        raise
    return True
