"""Fixtures for the examples: the dev cluster (top-level conftest) and an operator configured as
`make demo` configures it: the offline model hub mounted in trainer Pods (FINETUNE_MODEL_CACHE,
FINETUNE_HUB_OFFLINE), so `hf://HuggingFaceTB/SmolLM2-135M-Instruct` resolves as written.

This operator watches every namespace, so it must not share a session with the integration
tests' operator (two operators would reconcile the same objects): run tests/examples in its own
pytest session, as `make test` and `make test-examples` do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devcluster import hubcache, teacher
from tests.helpers import environ
from tests.integration.conftest import LOG_TAIL_LINES, OperatorProcess, _start_operator, _stop_operator

HERE = os.path.dirname(__file__)


# The examples' operator mounts the offline model hub into every trainer Pod from a node path
# (FINETUNE_MODEL_CACHE, as `make demo` does): a hostPath volume, refused under "restricted".
HOST_MODEL_CACHE = pytest.mark.pod_security(
    "privileged", reason="the examples' operator mounts the offline model hub from a node path (FINETUNE_MODEL_CACHE)"
)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(HOST_MODEL_CACHE)
    if any(not str(item.fspath).startswith(HERE) for item in items):
        skip = pytest.mark.skip(reason="tests/examples runs in its own pytest session (make test-examples): "
                                       "its operator would fight the integration tests' operator")
        for item in items:
            if str(item.fspath).startswith(HERE) and "cluster" in item.fixturenames:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def hub() -> str:
    """The dev cluster's hub with SmolLM2-135M-Instruct (materialized once under the cache root)."""
    return str(hubcache.ensure_smollm2())


@pytest.fixture(scope="session")
def dev_teacher() -> Iterator[str]:
    """The stand-in teacher `make demo` starts (examples with synthetic data name its address),
    served here unless something already answers there (a running demo's)."""
    import threading
    import urllib.request

    url = f"http://127.0.0.1:{teacher.DEFAULT_PORT}/v1"
    try:
        with urllib.request.urlopen(url + "/models", timeout=2):
            yield url
            return
    except OSError:
        pass
    server = teacher.make_server(teacher.DEFAULT_PORT)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def examples_operator(cluster, hub, tmp_path_factory) -> Iterator[OperatorProcess]:
    with environ({"FINETUNE_MODEL_CACHE": hub, "FINETUNE_HUB_OFFLINE": "true"}):
        operator = _start_operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    yield operator
    _stop_operator(operator)


@pytest.fixture
def operator(examples_operator: OperatorProcess, request) -> Iterator[OperatorProcess]:
    assert examples_operator.process.poll() is None, examples_operator.log_tail()
    yield examples_operator
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"----- operator log (last {LOG_TAIL_LINES} lines) -----\n{examples_operator.log_tail()}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    setattr(item, "rep_" + outcome.get_result().when, outcome.get_result())
