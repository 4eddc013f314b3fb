"""Reading the child objects of a custom resource, found by the label every child carries."""

from __future__ import annotations

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
    config_maps = {
        cm.metadata.name: api.sanitize_for_serialization(cm)
        for cm in client.core().list_namespaced_config_map(namespace, label_selector=selector).items
    }
    return Children(
        jobs=tuple(api.sanitize_for_serialization(job) for job in jobs),
        pods=tuple(api.sanitize_for_serialization(pod) for pod in pods),
        progress=config_maps.get(builders.progress_name(name)),
        config=config_maps.get(builders.config_map_name(name)),
    )
