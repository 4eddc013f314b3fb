"""One shared, lazily configured Kubernetes API client.

In a Pod the service-account token is used; elsewhere the kubeconfig (`KUBECONFIG`, else
~/.kube/config), the same order kopf's default login follows, so kopf and this client always
talk to the same cluster as the same user.
"""

from __future__ import annotations

import threading

import kubernetes

_lock = threading.Lock()
_client: kubernetes.client.ApiClient | None = None


def api_client() -> kubernetes.client.ApiClient:
    global _client
    with _lock:
        if _client is None:
            configuration = kubernetes.client.Configuration()
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(client_configuration=configuration)
            _client = kubernetes.client.ApiClient(configuration)
        return _client


def custom_objects() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client())


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client())


def batch() -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(api_client())


def apps() -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api_client())
