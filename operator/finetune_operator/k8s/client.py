"""One shared, lazily configured Kubernetes API client.

In a Pod the service-account token is used; elsewhere the kubeconfig (`KUBECONFIG`, else
~/.kube/config), the same order kopf's default login follows, so kopf and this client always
talk to the same cluster as the same user.
"""

from __future__ import annotations

import threading

import kubernetes

USER_AGENT = "finetune-operator"
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
            _client = kubernetes.client.ApiClient(with_bearer_token(configuration))
            # Audit logs tell the operator's calls apart from other clients of the same library.
            _client.user_agent = USER_AGENT
        return _client


def with_bearer_token(configuration: kubernetes.client.Configuration) -> kubernetes.client.Configuration:
    """Make token credentials actually be sent.

    The client's config loaders (in-cluster and kubeconfig) store a token under
    api_key['authorization'], while the generated client only sends api_key['BearerToken']: without
    this, every request of a Pod's ServiceAccount (or a token kubeconfig) would go out anonymous.
    """
    token = configuration.api_key.get("authorization")
    if token and "BearerToken" not in configuration.api_key:
        configuration.api_key["BearerToken"] = token
    return configuration


def custom_objects() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client())


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client())


def batch() -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(api_client())


def apps() -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api_client())
