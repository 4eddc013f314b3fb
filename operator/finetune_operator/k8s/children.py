"""Reading the child objects of a custom resource, found by the label every child carries."""

from __future__ import annotations

import kubernetes

from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders.labels import FINETUNEJOB_LABEL
from finetune_operator.k8s import client
from finetune_operator.logic.finetunejob import Children


def of_finetunejob(namespace: str, name: str) -> Children:
    """The Jobs, Pods and progress ConfigMap of a FineTuneJob, as plain dicts (what `logic` reads)."""
    selector = f"{FINETUNEJOB_LABEL}={name}"
    api = client.api_client()
    jobs = client.batch().list_namespaced_job(namespace, label_selector=selector).items
    pods = client.core().list_namespaced_pod(namespace, label_selector=selector).items
    try:
        progress = client.core().read_namespaced_config_map(builders.progress_name(name), namespace)
    except kubernetes.client.ApiException as exc:
        if exc.status != 404:
            raise
        progress = None
    return Children(
        jobs=tuple(api.sanitize_for_serialization(job) for job in jobs),
        pods=tuple(api.sanitize_for_serialization(pod) for pod in pods),
        progress=api.sanitize_for_serialization(progress) if progress is not None else None,
    )
