"""API request counting: the verb and resource of each path, and the client's one choke point."""

from __future__ import annotations

import kubernetes
import pytest

from finetune_operator import metrics
from finetune_operator.k8s import client

HOST = "https://127.0.0.1:6443"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/apis/finetune.ai/v1alpha1/namespaces/ns/finetunejobs/a", None, ("get", "finetunejobs")),
        ("GET", "/apis/batch/v1/namespaces/ns/jobs", [("labelSelector", "x=y")], ("list", "jobs")),
        ("GET", "/api/v1/namespaces/ns/pods", [("watch", True)], ("watch", "pods")),
        ("GET", "/api/v1/pods", {"watch": "true", "resourceVersion": "5"}, ("watch", "pods")),
        ("GET", "/apis/finetune.ai/v1alpha1/finetunejobs", {"watch": "false"}, ("list", "finetunejobs")),
        ("PATCH", "/apis/finetune.ai/v1alpha1/namespaces/ns/finetunejobs/a/status", None, ("patch", "finetunejobs")),
        ("POST", "/api/v1/namespaces/ns/events", None, ("create", "events")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", None, ("update", "leases")),
        ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j", None, ("delete", "jobs")),
        ("DELETE", "/apis/batch/v1/namespaces/ns/jobs", None, ("deletecollection", "jobs")),
        ("GET", "/api/v1/namespaces", None, ("list", "namespaces")),
        ("GET", "/api/v1/namespaces/ns", None, ("get", "namespaces")),
        ("PUT", "/api/v1/namespaces/ns/finalize", None, ("update", "namespaces")),
        ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.y", None, ("get", "customresourcedefinitions")),
        ("post", HOST + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", None, ("create", "selfsubjectaccessreviews")),
        ("GET", HOST + "/api/v1/namespaces/ns/configmaps?labelSelector=a", None, ("list", "configmaps")),
        ("GET", "/apis", None, ("list", "")),
        ("GET", "/version", None, ("list", "")),
    ],
)
def test_verb_and_resource_of_a_path(method, path, query, expected):
    assert metrics.api_request_kind(method, path, query) == expected


def counted(verb: str, resource: str, code: str) -> float:
    return metrics.API_REQUESTS.labels(verb=verb, resource=resource, code=code)._value.get()  # noqa: SLF001


class FakeRest:
    """Answers like the REST client: a response with a status, or ApiException."""

    def __init__(self, status: int) -> None:
        self.status = status

    def _answer(self, url, **_):
        if self.status >= 400:
            raise kubernetes.client.ApiException(status=self.status, reason="Nope")
        return type("Response", (), {"status": self.status, "data": b"{}"})()

    GET = POST = PATCH = PUT = DELETE = HEAD = OPTIONS = _answer


def test_the_operator_client_counts_every_request_once_with_its_code():
    api = client.CountingApiClient(kubernetes.client.Configuration())
    before = {
        key: counted(*key)
        for key in (("get", "jobs", "200"), ("list", "pods", "200"), ("get", "jobs", "404"), ("watch", "pods", "200"))
    }
    api.rest_client = FakeRest(200)
    api.request("GET", HOST + "/apis/batch/v1/namespaces/ns/jobs/j")
    api.request("GET", HOST + "/api/v1/namespaces/ns/pods", [("labelSelector", "a=b")])
    api.request("GET", HOST + "/api/v1/namespaces/ns/pods", [("watch", True)])
    api.rest_client = FakeRest(404)
    with pytest.raises(kubernetes.client.ApiException):
        api.request("GET", HOST + "/apis/batch/v1/namespaces/ns/jobs/j")
    assert counted("get", "jobs", "200") == before[("get", "jobs", "200")] + 1
    assert counted("list", "pods", "200") == before[("list", "pods", "200")] + 1
    assert counted("watch", "pods", "200") == before[("watch", "pods", "200")] + 1
    assert counted("get", "jobs", "404") == before[("get", "jobs", "404")] + 1


def test_the_shared_client_is_the_counting_one(monkeypatch):
    monkeypatch.setattr(client, "_client", None)
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda **_: None)
    assert isinstance(client.api_client(), client.CountingApiClient)


def test_kopfs_session_counts_its_requests():
    """The session `kopf_login` hands kopf counts each request (a local HTTP server answers)."""
    import asyncio

    import kopf
    from aiohttp import web

    async def scenario() -> None:
        async def pods(request: web.Request) -> web.Response:
            return web.json_response({"items": []})

        app = web.Application()
        app.router.add_get("/api/v1/namespaces/ns/pods", pods)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port picked by the OS
        context = client.counted_session(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", insecure=True))
        try:
            session = context.aiohttp_session
            async with session.get(f"{context.server}/api/v1/namespaces/ns/pods", params={"watch": "true"}) as response:
                assert response.status == 200
            async with session.get(f"{context.server}/api/v1/namespaces/ns/pods/missing") as response:
                assert response.status == 404
        finally:
            await context.aiohttp_session.close()
            await runner.cleanup()

    watches, missing = counted("watch", "pods", "200"), counted("get", "pods", "404")
    asyncio.run(scenario())
    assert counted("watch", "pods", "200") == watches + 1
    assert counted("get", "pods", "404") == missing + 1


def test_the_operator_client_keeps_a_connection_for_every_worker(tmp_path, monkeypatch):
    """More workers than pooled connections would open (and drop) a TLS connection per request."""
    from finetune_operator import config

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    # The library reads KUBECONFIG when it is imported: point its default at the file instead.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.setenv("FINETUNE_WORKERS", "40")
    monkeypatch.setattr(config, "_current", None)
    monkeypatch.setattr(client, "_client", None)
    api = client.api_client()
    assert api.configuration.connection_pool_maxsize == 40 + client.OTHER_CALLING_THREADS
    assert api.rest_client.pool_manager.connection_pool_kw["maxsize"] == 40 + client.OTHER_CALLING_THREADS
