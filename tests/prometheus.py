"""A real Prometheus per test: fixtures that start it, point it at targets and stop it.

`prometheus_factory` (function scope) returns `start(...)`, which runs the `prometheus` binary
(Debian's package; `hack/prometheus/install.sh` installs it) on a free 127.0.0.1 port with its
own config file and TSDB directory, a 1 s scrape interval and `--web.enable-lifecycle`, waits
for `/-/ready`, and stops it at teardown; a failing test gets the tail of its log printed.

Targets come from either or both of

* `static=True`: a file_sd file the test rewrites at run time (`set_targets`), job `static`;
* `kubernetes=cluster`: the serving scrape job of `hack/prometheus/serving-scrape-config.yaml`
  (keep Pods labelled `finetune.ai/serve=true`, scrape their `http` port at the Pod IP, add
  `namespace`, `pod`, `rollout`, `model_version`, `track`) against the dev cluster's admin
  kubeconfig, limited to `namespaces`. When the binary has no `kubernetes_sd_configs` (Debian
  builds it without), the same job runs over `http_sd_configs` on the Pod-discovery bridge of
  `hack/prometheus/kubernetes_sd.py`, which produces the same meta labels.

Use it from a test module with `from tests.prometheus import prometheus_factory  # noqa: F401`
(or list `tests.prometheus` in the root conftest's `pytest_plugins`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from hack.prometheus import kubernetes_sd
from hack.prometheus.server import (  # noqa: F401 - re-exported for the test modules
    INSTALL_HINT,
    LOG_TAIL_LINES,
    SERVING_SCRAPE_CONFIG,
    STATIC_JOB,
    PrometheusServer,
    prometheus_binary,
    serving_scrape_job,
    supports_kubernetes_sd,
)

StartPrometheus = Callable[..., PrometheusServer]


@pytest.fixture
def prometheus_factory(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[StartPrometheus]:
    """`start(static=True, kubernetes=None, namespaces=(), scrape_interval="1s") -> PrometheusServer`."""
    binary = prometheus_binary()
    if binary is None:
        pytest.skip(INSTALL_HINT)
    servers: list[PrometheusServer] = []
    bridges: list[kubernetes_sd.KubernetesSDBridge] = []
    failed_before = request.session.testsfailed

    def start(static: bool = True, kubernetes=None, namespaces=(), scrape_interval: str = "1s") -> PrometheusServer:
        workdir = tmp_path_factory.mktemp("prometheus")
        scrape_configs: list[dict] = []
        if static:
            scrape_configs.append({
                "job_name": STATIC_JOB,
                "file_sd_configs": [{"files": [str(workdir / "targets.json")], "refresh_interval": "1s"}],
            })
        if kubernetes is not None:
            job = serving_scrape_job(kubernetes.kubeconfig, list(namespaces), scrape_interval)
            if not supports_kubernetes_sd():
                bridge = kubernetes_sd.KubernetesSDBridge(kubernetes_sd.kubeconfig_pod_lister(kubernetes.kubeconfig))
                bridges.append(bridge.start())
                job = kubernetes_sd.to_http_sd(job, bridge.url)
            scrape_configs.append(job)
        server = PrometheusServer(binary, workdir, scrape_configs, scrape_interval)
        servers.append(server)
        return server.start()

    yield start

    report = getattr(request.node, "rep_call", None)
    failed = report.failed if report is not None else request.session.testsfailed > failed_before
    for server in servers:
        if failed:
            print(f"----- prometheus {server.url} log (last {LOG_TAIL_LINES} lines) -----\n{server.log_tail()}")
            print(f"----- prometheus config -----\n{server.config_path.read_text()}")
        server.stop()
    for bridge in bridges:
        if failed and bridge.last_error:
            print(f"----- kubernetes SD bridge last error: {bridge.last_error}")
        bridge.stop()
