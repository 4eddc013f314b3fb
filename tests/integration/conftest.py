"""Fixtures for integration tests: the operator as a real process.

`cluster` and `namespace` come from the top-level conftest (the local dev control plane, one
fresh namespace per test); polling uses `tests.helpers.wait_for`. `operator` runs `python -m finetune_operator` against that cluster,
watching every namespace, on free ports; it is started once per session and its log is printed
under any failing test, so a failure shows what the operator saw.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import finetune_operator
from tests.helpers import NOOP_HOST_OUTPUT_ROOT, wait_for

OPERATOR_START_TIMEOUT = 90
# Node paths the test operator may mount as a FineTuneJob's output (FINETUNE_ALLOWED_HOST_PATHS):
# a node-path root for no-op jobs and pytest's temporary directories, where tests put real outputs.
ALLOWED_HOST_PATHS = ",".join(
    [NOOP_HOST_OUTPUT_ROOT, str(Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}")]
)
LOG_TAIL_LINES = 200


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local test URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclasses.dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_url: str
    health_url: str

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def restart(self, kubeconfig: str) -> None:
        """Kill the operator without warning (as a crash or OOM would) and start it again."""
        self.process.kill()
        self.process.wait(timeout=30)
        fresh = _start_operator(kubeconfig, self.log_path, append=True)
        self.process, self.metrics_url, self.health_url = fresh.process, fresh.metrics_url, fresh.health_url

    def metrics(self) -> str:
        status, body = http_get(self.metrics_url)
        assert status == 200, f"GET {self.metrics_url} -> {status}"
        return body


def _start_operator(kubeconfig: str, log_path: Path, append: bool = False) -> OperatorProcess:
    metrics_port, health_port = free_port(), free_port()
    package_root = Path(finetune_operator.__file__).resolve().parent.parent
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PYTHONPATH": os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "FINETUNE_WATCH_NAMESPACES": "",
        "FINETUNE_LOG_FORMAT": "text",
        "FINETUNE_LOG_LEVEL": "DEBUG",
        "FINETUNE_METRICS_HOST": "127.0.0.1",
        "FINETUNE_METRICS_PORT": str(metrics_port),
        "FINETUNE_HEALTH_HOST": "127.0.0.1",
        "FINETUNE_HEALTH_PORT": str(health_port),
        "FINETUNE_PEERING": "off",
        "FINETUNE_ALLOWED_HOST_PATHS": os.environ.get("FINETUNE_ALLOWED_HOST_PATHS", ALLOWED_HOST_PATHS),
    }
    log = log_path.open("ab" if append else "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "finetune_operator"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    operator = OperatorProcess(
        process=process,
        log_path=log_path,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        health_url=f"http://127.0.0.1:{health_port}/healthz",
    )

    def healthy() -> bool:
        if process.poll() is not None:
            # pytest.fail is not an Exception, so wait_for stops polling at once.
            pytest.fail(f"operator exited with {process.returncode}:\n{operator.log_tail()}")
        return http_get(operator.health_url, timeout=2)[0] == 200

    try:
        wait_for(healthy, OPERATOR_START_TIMEOUT, f"the operator's liveness endpoint {operator.health_url}")
    except BaseException:
        _stop_operator(operator)
        print(operator.log_tail())
        raise
    return operator


def _stop_operator(operator: OperatorProcess) -> None:
    if operator.process.poll() is None:
        operator.process.send_signal(signal.SIGTERM)
        try:
            operator.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.process.kill()
            operator.process.wait(timeout=10)


# The session's operator once started (at most one), for `session_operator_stopped`.
_session_operators: list[OperatorProcess] = []


@contextlib.contextmanager
def session_operator_stopped(kubeconfig: str) -> Iterator[None]:
    """For a test that runs operators of its own against the same cluster (test_failover.py): the
    session's operator, if one was started, is stopped for the test and started again afterwards
    (same log, fresh process), so that no two operators act on the same objects."""
    running = [operator for operator in _session_operators if operator.process.poll() is None]
    for operator in running:
        _stop_operator(operator)
    try:
        yield
    finally:
        for operator in running:
            fresh = _start_operator(kubeconfig, operator.log_path, append=True)
            operator.process, operator.metrics_url, operator.health_url = fresh.process, fresh.metrics_url, fresh.health_url


@pytest.fixture(scope="session")
def _operator_process(cluster, tmp_path_factory) -> Iterator[OperatorProcess]:
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    operator = _start_operator(cluster.kubeconfig, log_path)
    _session_operators.append(operator)
    yield operator
    _session_operators.remove(operator)
    _stop_operator(operator)


@pytest.fixture
def operator(_operator_process: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """The running operator; its log is printed when the test using it fails."""
    assert _operator_process.process.poll() is None, (
        f"operator is not running (exit {_operator_process.process.returncode}):\n{_operator_process.log_tail()}"
    )
    yield _operator_process
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"----- operator log (last {LOG_TAIL_LINES} lines) -----\n{_operator_process.log_tail()}")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "runs_last: runs after every other test of the session (it reads what they did)")


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
