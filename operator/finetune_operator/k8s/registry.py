"""Registering ModelVersions: race-free version numbers, one version per FineTuneJob.

Versions of a model are numbered v1, v2, ... per model name and namespace. The next number is
one past the highest registered; creating `<model>-v<N>` is atomic in the API server, so when
two jobs finish at once one create wins and the other gets 409 Conflict and tries N+1. A job
never registers twice: its ModelVersion carries the job's uid as a label and is found first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kubernetes

from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.k8s import client
from finetune_operator.k8s.resources import FIELD_MANAGER, MODELVERSIONS

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 50


def _list(namespace: str, selector: str) -> list[dict[str, Any]]:
    return client.custom_objects().list_namespaced_custom_object(
        MODELVERSIONS.group, MODELVERSIONS.version, namespace, MODELVERSIONS.plural, label_selector=selector
    )["items"]


def of_finetunejob(namespace: str, uid: str) -> dict[str, Any] | None:
    found = _list(namespace, f"{mv_builders.SOURCE_UID_LABEL}={uid}")
    return found[0] if found else None


def next_number(namespace: str, model: str) -> int:
    numbers = [
        int(mv["metadata"].get("labels", {}).get(mv_builders.VERSION_NUMBER_LABEL, "0") or 0)
        for mv in _list(namespace, f"{mv_builders.MODEL_LABEL}={model}")
    ]
    return max(numbers, default=0) + 1


def register(
    namespace: str, job_name: str, job_uid: str, model: str, version: str | None, spec: Mapping[str, Any]
) -> dict[str, Any]:
    """Create the job's ModelVersion (or return the one it already has)."""
    existing = of_finetunejob(namespace, job_uid)
    if existing is not None:
        return existing
    number = next_number(namespace, model)
    for _ in range(MAX_ATTEMPTS):
        name_version = version or mv_builders.version_name(number)
        body: dict[str, Any] = {
            "apiVersion": MODELVERSIONS.api_version,
            "kind": MODELVERSIONS.kind,
            "metadata": {
                "name": mv_builders.object_name(model, name_version),
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "finetune-operator",
                    mv_builders.MODEL_LABEL: model,
                    mv_builders.SOURCE_LABEL: job_name,
                    mv_builders.SOURCE_UID_LABEL: job_uid,
                    **({} if version else {mv_builders.VERSION_NUMBER_LABEL: str(number)}),
                },
            },
            "spec": {**spec, "version": name_version},
        }
        try:
            return client.custom_objects().create_namespaced_custom_object(
                MODELVERSIONS.group, MODELVERSIONS.version, namespace, MODELVERSIONS.plural, body,
                field_manager=FIELD_MANAGER,
            )
        except kubernetes.client.ApiException as exc:
            if exc.status != 409 or version:
                raise
            logger.info("ModelVersion %s exists (another job registered it first); trying the next number", body["metadata"]["name"])
            number += 1
    raise RuntimeError(f"no free version number for model {model} after {MAX_ATTEMPTS} attempts")
