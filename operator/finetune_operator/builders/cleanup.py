"""A Job that removes one artifact location: a FineTuneJob's output, or a version past retention.

pvc:// locations mount their claim, node-local paths are mounted where they are; s3:// is left
to the bucket's lifecycle rules and the root of a claim is never removed (both: None).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from finetune_trainer import config as trainer_config

PVC_MOUNT_ROOT = "/mnt/pvc"
RUN_AS = 10001  # the trainer image's user
_RMTREE = "import shutil, sys; shutil.rmtree(sys.argv[1], ignore_errors=True)"


def removal_job(
    *,
    name: str,
    namespace: str,
    location: str,
    image: str,
    labels: Mapping[str, str],
    owner_references: list[dict[str, Any]] | None = None,
    ttl_seconds: int = 300,
) -> dict[str, Any] | None:
    if location.startswith("s3://"):
        return None
    parts = urlsplit(location)
    if location.startswith("pvc://"):
        if not parts.path.strip("/"):
            return None
        path = str(trainer_config.local_path(location, PVC_MOUNT_ROOT))
        volume = {"name": "output", "persistentVolumeClaim": {"claimName": parts.netloc}}
        mount = {"name": "output", "mountPath": f"{PVC_MOUNT_ROOT}/{parts.netloc}"}
    else:
        path = str(trainer_config.local_path(location, PVC_MOUNT_ROOT))
        volume = {"name": "output", "hostPath": {"path": path, "type": "DirectoryOrCreate"}}
        mount = {"name": "output", "mountPath": path}
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
                    "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS},
                    "containers": [
                        {"name": "cleanup", "image": image, "command": ["python", "-c", _RMTREE, path], "volumeMounts": [mount]}
                    ],
                    "volumes": [volume],
                }
            },
        },
    }
