"""One shared, lazily configured Kubernetes API client.

In a Pod the service-account token is used; elsewhere the kubeconfig (`KUBECONFIG`, else
~/.kube/config), the same order kopf's default login follows, so kopf and this client always
talk to the same cluster as the same user.

Every request through it is counted in `metrics.API_REQUESTS` (one choke point: the client's
`request`, below `call_api`, so watches, retries of callers and raw `_preload_content=False`
calls all count once per HTTP request). kopf's own requests (its watch streams, the patches of
its annotations and finalizers, its Events) go through an aiohttp session of kopf's: `kopf_login`
gives kopf that session, made as kopf makes it, plus a trace hook that counts the same way.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import aiohttp
import kopf
import kubernetes

from finetune_operator import metrics

USER_AGENT = "finetune-operator"
# Threads that send the independent requests of one reconcile together (`apply.concurrently`).
CONCURRENT_REQUEST_THREADS = 8
# Threads other than the reconcile workers that call the API: the concurrent requests above, the
# TTL deadlines, the leader election's renewals and the registry's artifact checks.
OTHER_CALLING_THREADS = CONCURRENT_REQUEST_THREADS + 8
_lock = threading.Lock()
_client: kubernetes.client.ApiClient | None = None


class CountingApiClient(kubernetes.client.ApiClient):
    """The generated client, counting each HTTP request by verb, resource and status code."""

    def request(self, method, url, query_params=None, *args, **kwargs):  # noqa: ANN001 - the library's signature
        code: int | str | None = None
        try:
            response = super().request(method, url, query_params, *args, **kwargs)
            code = getattr(response, "status", None)
            return response
        except kubernetes.client.ApiException as exc:
            code = exc.status
            raise
        finally:
            metrics.count_api_request(method, url, query_params, code)


def api_client() -> kubernetes.client.ApiClient:
    global _client
    with _lock:
        if _client is None:
            configuration = kubernetes.client.Configuration()
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(client_configuration=configuration)
            # One kept-alive connection per thread that may call at once. The library's default
            # (5 per CPU) is smaller than the worker pool on a small node: every request beyond
            # it would open a new TLS connection and throw it away afterwards.
            configuration.connection_pool_maxsize = max(
                configuration.connection_pool_maxsize, _workers() + OTHER_CALLING_THREADS
            )
            _client = CountingApiClient(with_bearer_token(configuration))
            # Audit logs tell the operator's calls apart from other clients of the same library.
            _client.user_agent = USER_AGENT
        return _client


def _workers() -> int:
    from finetune_operator import config

    try:
        return config.current().workers
    except config.ConfigError:  # the CLI runs without the operator's environment
        return 0


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


# --- kopf's own requests --------------------------------------------------------------------------


async def _on_request_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
    metrics.count_api_request(params.method, params.url.path, dict(params.url.query), params.response.status)


async def _on_request_exception(session: Any, context: Any, params: aiohttp.TraceRequestExceptionParams) -> None:
    metrics.count_api_request(params.method, params.url.path, dict(params.url.query), None)


def counted_session(info: kopf.ConnectionInfo) -> kopf.AiohttpSession:
    """kopf's session for `info` (the same connector, headers and auth as kopf's own), counted."""
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_on_request_end)
    trace.on_request_exception.append(_on_request_exception)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="kopf")
        auth = info.as_aiohttp_basic_auth()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=auth,
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        trace_configs=[trace],
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        priority=info.priority,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
    )


@kopf.on.login()
async def kopf_login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """kopf's default login (service account, else kubeconfig), with its requests counted.

    Async on purpose: the session must be made in kopf's event loop, which it is bound to.
    """
    info = kopf.login_via_client(**kwargs)
    return counted_session(info) if info is not None else None
