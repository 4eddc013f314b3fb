"""A Job that removes files from one artifact location: a run's scratch, or a version past retention.

Removal is the one thing the operator does that cannot be undone, so a location is used only in
its normalised form (`api.common.parse_location`) and refused (None: no Job) when it is
- the root of a claim, a bucket or the filesystem (`pvc://store/.` once removed a whole store),
- a node path (absolute or file://) outside the host path prefixes the operator allows: a
  hostPath mount of anything else would let a manifest delete files on a node.

`entries` narrows the removal to names under the location: a FineTuneJob's cleanup removes only
its run's scratch (checkpoints, prepared data, progress log), never the registered adapter or
model beside them. Without `entries` the whole location goes (retention of a version's artifact).

An s3:// location gets the same guarantees: its Job runs the trainer image's
`python -m finetune_trainer.storage remove` on the same normalised prefixes (the object named and
those under `<prefix>/`, never a sibling sharing its name's prefix; a bucket root is refused there
too), with the location's credentials Secret as secretKeyRefs and the operator's S3 endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from finetune_trainer import storage

from finetune_operator.api.common import Location, LocationError, parse_location
from finetune_operator.builders.security import RUN_AS_USER, restricted_pod_security_context, restricted_security_context

PVC_MOUNT_ROOT = "/mnt/pvc"
RUN_AS = RUN_AS_USER  # the trainer image's user
# Removes each path given; a symlink is unlinked, never followed.
_REMOVE = (
    "import os, shutil, sys\n"
    "for path in sys.argv[1:]:\n"
    "    if os.path.isdir(path) and not os.path.islink(path):\n"
    "        shutil.rmtree(path, ignore_errors=True)\n"
    "    elif os.path.lexists(path):\n"
    "        os.remove(path)\n"
)


def host_path_allowed(location: Location, allowed_prefixes: Sequence[str]) -> bool:
    """Whether a node path lies under one of the allowed prefixes (normalised absolute paths)."""
    if not location.is_host_path:
        return True
    for prefix in allowed_prefixes:
        try:
            allowed = parse_location(prefix)
        except LocationError:
            continue
        if allowed.is_host_path and not allowed.is_root and Location("", "", allowed.path).contains(Location("", "", location.path)):
            return True
    return False


def removal_job(
    *,
    name: str,
    namespace: str,
    location: str,
    image: str,
    labels: Mapping[str, str],
    owner_references: list[dict[str, Any]] | None = None,
    ttl_seconds: int = 300,
    entries: Sequence[str] | None = None,
    allowed_host_paths: Sequence[str] = (),
    s3_endpoint: str = "",
    credentials_secret: str | None = None,
) -> dict[str, Any] | None:
    """The Job removing `location` (or only `entries` under it), or None when it must not be removed.

    For s3://, `credentials_secret` names the Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    optional AWS_SESSION_TOKEN) the Job reads the bucket with; None: the workload identity."""
    try:
        target = parse_location(location, allow_root=False)
        removed = [target.child(entry) for entry in entries] if entries is not None else [target]
    except LocationError:
        return None
    if not removed:
        return None
    if target.scheme == "s3":
        container = {
            "name": "cleanup",
            "image": image,
            "command": ["python", "-m", "finetune_trainer.storage", "remove",
                        *(f"s3://{item.authority}/{item.path}" for item in removed)],
            "env": [{"name": "HOME", "value": "/tmp"}, *s3_env(s3_endpoint, credentials_secret)],
            "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": restricted_security_context(RUN_AS),
        }
        return _job(name, namespace, labels, owner_references, ttl_seconds, container, {"name": "scratch", "emptyDir": {}})
    if target.is_host_path and not host_path_allowed(target, allowed_host_paths):
        return None
    parent = Location(target.scheme, target.authority, target.path.rpartition("/")[0])
    if entries is None and target.is_host_path and (parent.is_root or not host_path_allowed(parent, allowed_host_paths)):
        return None  # removing it whole mounts its parent, which must be allowed too
    if target.scheme == "pvc":
        volume = {"name": "output", "persistentVolumeClaim": {"claimName": target.authority}}
        mount = {"name": "output", "mountPath": f"{PVC_MOUNT_ROOT}/{target.authority}"}
        paths = [f"{PVC_MOUNT_ROOT}/{target.authority}/{item.path}" for item in removed]
    else:
        # Entries are removed from inside the mounted location; a whole location from its parent.
        mounted = target.host_path if entries is not None else parent.host_path
        volume = {"name": "output", "hostPath": {"path": mounted, "type": "DirectoryOrCreate"}}
        mount = {"name": "output", "mountPath": mounted}
        paths = [item.host_path for item in removed]
    container = {
        "name": "cleanup",
        "image": image,
        "command": ["python", "-c", _REMOVE, *paths],
        "volumeMounts": [mount],
        "securityContext": restricted_security_context(RUN_AS),
    }
    return _job(name, namespace, labels, owner_references, ttl_seconds, container, volume)


def s3_env(endpoint: str, credentials_secret: str | None) -> list[dict[str, Any]]:
    """The removal container's object-store access, as the trainer's storage module reads it for
    an output location: the endpoint, and the Secret's keys as secretKeyRefs (never values)."""
    env: list[dict[str, Any]] = []
    if endpoint:
        env.append({"name": storage.ENDPOINT_ENV, "value": endpoint})
    if credentials_secret:
        for key in storage.CREDENTIAL_KEYS:
            ref: dict[str, Any] = {"name": credentials_secret, "key": key}
            if key == "AWS_SESSION_TOKEN":
                ref["optional"] = True
            env.append({"name": storage.credential_env("output", key), "valueFrom": {"secretKeyRef": ref}})
    return env


def _job(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    owner_references: list[dict[str, Any]] | None,
    ttl_seconds: int,
    container: dict[str, Any],
    volume: dict[str, Any],
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "finetune-operator", **labels},
    }
    if owner_references:
        metadata["ownerReferences"] = owner_references
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": ttl_seconds,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": restricted_pod_security_context(RUN_AS),
                    "containers": [container],
                    "volumes": [volume],
                }
            },
        },
    }
