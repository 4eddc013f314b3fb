"""Creating and applying child objects, with one field manager for the whole operator.

`builders/` renders each desired child as a plain dict; this is the single place that sends
them. Children have deterministic names, so `create` of one that exists is a no-op (409) and a
restarted operator never duplicates work. Jobs are created, not re-applied: their Pod template
is immutable, and fields like `suspend` are changed by an explicit patch (Kueue owns it while a
queue admits the Job).

Independent requests of one reconcile (a job's setup objects, the dry runs of all its children)
go out together (`concurrently`): a new FineTuneJob waits for one round trip per group instead
of one per object. One small pool serves the whole operator, so the number of connections stays
bounded (`client.CONCURRENT_REQUEST_THREADS`) however many reconciles run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kubernetes
from kubernetes.dynamic import DynamicClient

from finetune_operator.k8s import client
from finetune_operator.k8s.resources import FIELD_MANAGER

_lock = threading.Lock()
_discovery_lock = threading.Lock()
_dynamic: DynamicClient | None = None
_pool = ThreadPoolExecutor(max_workers=client.CONCURRENT_REQUEST_THREADS, thread_name_prefix="api-request")

T = TypeVar("T")
R = TypeVar("R")


def concurrently(call: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`call` of each item, the requests in flight together; results in the items' order.

    Every call runs to its end before this returns; the first exception (in the items' order)
    is then raised, so a caller never leaves requests running behind its back.
    """
    items = list(items)
    if len(items) <= 1:
        return [call(item) for item in items]
    futures = [_pool.submit(call, item) for item in items]
    errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error
    return [future.result() for future in futures]


def _dynamic_client() -> DynamicClient:
    global _dynamic
    with _lock:
        if _dynamic is None:
            _dynamic = DynamicClient(client.api_client())
        return _dynamic


def _resource(obj: Mapping[str, Any]):
    # One lookup at a time: the client discovers a group's resources on its first use and caches
    # them, and concurrent first uses (`concurrently`) would each send the same discovery requests.
    client_ = _dynamic_client()
    with _discovery_lock:
        return client_.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])


def apply(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply `obj` (apiVersion, kind, metadata.name[, metadata.namespace], ...)."""
    metadata = obj["metadata"]
    applied = _resource(obj).server_side_apply(
        body=dict(obj),
        name=metadata["name"],
        namespace=metadata.get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
    )
    return applied.to_dict()


def create(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """Create `obj` unless an object of that name exists: the object as created, or None."""
    try:
        created = _resource(obj).create(body=dict(obj), namespace=obj["metadata"].get("namespace"), field_manager=FIELD_MANAGER)
    except kubernetes.dynamic.exceptions.ConflictError:
        return None
    except kubernetes.client.ApiException as exc:
        if exc.status == 409:
            return None
        raise
    return created.to_dict()


def create_if_absent(obj: Mapping[str, Any]) -> bool:
    """Create `obj` unless an object of that name exists. Returns True when it was created."""
    return create(obj) is not None


def set_job_suspended(namespace: str, name: str, suspend: bool) -> None:
    client.batch().patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}}, field_manager=FIELD_MANAGER)


def delete(api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background") -> None:
    try:
        _dynamic_client().resources.get(api_version=api_version, kind=kind).delete(
            name=name, namespace=namespace, body={"propagationPolicy": propagation}
        )
    except kubernetes.dynamic.exceptions.NotFoundError:
        pass
    except kubernetes.client.ApiException as exc:
        if exc.status != 404:
            raise
