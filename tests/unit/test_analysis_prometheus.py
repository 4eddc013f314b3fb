"""The Prometheus provider: result shapes to one number, and every failure to a clear error.

Result shapes are checked on the provider's pure interpretation; transport failures against
a small local HTTP server that answers as a broken or slow Prometheus would (the provider
against a real Prometheus is in tests/integration/test_prometheus_analysis.py).
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from finetune_operator.analysis import MeasureResult
from finetune_operator.analysis.prometheus import PrometheusProvider


def ok(result_type: str, result) -> dict:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


def sample(value: str, **labels) -> dict:
    return {"metric": labels, "value": [1735732800.0, value]}


@pytest.mark.parametrize(
    ("payload", "value", "error_has"),
    [
        pytest.param(ok("vector", [sample("0.25")]), 0.25, None, id="one-sample-is-its-value"),
        pytest.param(ok("scalar", [1735732800.0, "3"]), 3.0, None, id="scalar"),
        pytest.param(ok("vector", []), None, None, id="empty-vector-is-no-data"),
        pytest.param(ok("vector", [sample("+Inf")]), math.inf, None, id="plus-inf"),
        pytest.param(ok("vector", [sample("1", pod="a"), sample("2", pod="b")]), None,
                     'the query returned 2 series ({pod="a"}; {pod="b"}); a threshold needs one number: aggregate',
                     id="two-series-is-an-error-naming-them"),
        pytest.param(ok("vector", [sample("1", __name__="up", pod=str(i)) for i in range(5)]), None,
                     'returned 5 series (up{pod="0"}; up{pod="1"}; up{pod="2"} and 2 more)',
                     id="many-series-named-up-to-three"),
        pytest.param(ok("matrix", [{"metric": {}, "values": [[1, "1"]]}]), None, "range vector", id="matrix"),
        pytest.param(ok("string", [1, "x"]), None, "a string result", id="string"),
        pytest.param(ok("vector", [{"metric": {}}]), None, "unexpected vector result", id="malformed-sample"),
    ],
)
def test_interpret(payload, value, error_has):
    result = PrometheusProvider._interpret(payload)
    assert result.value == value
    if error_has is None:
        assert result.error is None
    else:
        assert error_has in result.error


def test_nan_passes_through_as_a_float():
    result = PrometheusProvider._interpret(ok("vector", [sample("NaN")]))
    assert result.error is None and math.isnan(result.value)


class StubPrometheus:
    """Answers /api/v1/query with a fixed status and body, optionally after a delay."""

    def __init__(self, status: int, body: bytes, delay: float = 0.0):
        stub = self
        self.status, self.body, self.delay = status, body, delay
        self.requests: list[tuple[str, str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                stub.requests.append((self.path, self.headers.get("Content-Type"), self.rfile.read(length).decode()))
                time.sleep(stub.delay)
                try:
                    self.send_response(stub.status)
                    self.send_header("Content-Length", str(len(stub.body)))
                    self.end_headers()
                    self.wfile.write(stub.body)
                except OSError:
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stub() -> Iterator[callable]:
    servers = []

    def make(status: int, body, delay: float = 0.0) -> StubPrometheus:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        servers.append(StubPrometheus(status, raw, delay))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_query_is_posted_form_encoded_to_the_query_api(stub):
    server = stub(200, ok("vector", [sample("0.5")]))
    assert PrometheusProvider(server.url + "/").measure('sum(rate(x{a="b"}[1m]))') == MeasureResult(value=0.5)
    [(path, content_type, body)] = server.requests
    assert path == "/api/v1/query"
    assert content_type == "application/x-www-form-urlencoded"
    assert body == "query=sum%28rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%29"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        pytest.param(400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"},
                     " rejected the query (bad_data): parse error at char 5", id="bad-query"),
        pytest.param(503, {"status": "error", "errorType": "unavailable", "error": "not ready"},
                     " rejected the query (unavailable): not ready", id="not-ready"),
        pytest.param(502, b"<html>Bad Gateway</html>", ": HTTP 502 with a body that is not JSON: '<html>Bad Gateway",
                     id="proxy-error-page"),
        pytest.param(200, b"[1, 2]", ": HTTP 200: unexpected answer", id="json-but-not-an-object"),
    ],
)
def test_http_failures_become_errors(stub, status, body, error):
    server = stub(status, body)
    result = PrometheusProvider(server.url).measure("up")
    assert result.value is None
    assert result.error.startswith(f"prometheus {server.url}{error}")


def test_timeout_becomes_an_error(stub):
    server = stub(200, ok("scalar", [0, "1"]), delay=2.0)
    started = time.monotonic()
    result = PrometheusProvider(server.url, timeout=0.3).measure("up")
    assert time.monotonic() - started < 1.5
    assert result == MeasureResult(error=f"prometheus {server.url}: no answer within 0.3s")


def test_connection_refused_becomes_an_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = PrometheusProvider(f"http://127.0.0.1:{port}").measure("up")
    assert result.value is None
    assert result.error.startswith(f"prometheus http://127.0.0.1:{port}: cannot connect (")
    assert "is the address right and Prometheus up?" in result.error


def test_what_prometheus_answers_reaches_status_sanitised(stub):
    """A proxy in front of Prometheus can answer anything: only one short, redacted line of it
    reaches the Rollout's status."""
    from finetune_operator.analysis.prometheus import SHOWN_BODY_CHARS, shown

    page = (b"<html>\n<body>login at https://admin:hunter2@sso.example/ Authorization: Bearer eyJabc.def "
            b"token=abc123 password: 's3cr3t'\x1b[31m" + b"x" * 5000 + b"</body></html>")
    server = stub(502, page)
    error = PrometheusProvider(server.url).measure("up").error
    for secret in ("hunter2", "eyJabc.def", "abc123", "s3cr3t", "\x1b", "\n"):
        assert secret not in error, error
    assert "admin:<redacted>@sso.example" in error and "Bearer <redacted>" in error
    assert len(shown(page.decode())) == SHOWN_BODY_CHARS and shown(page.decode()).endswith("…")
    rejected = stub(400, {"status": "error", "errorType": "bad_data", "error": "x" * 2000 + "\n\tend"})
    assert len(PrometheusProvider(rejected.url).measure("up").error) < SHOWN_BODY_CHARS * 2 + 200


@pytest.mark.parametrize("text", ["parse error at char 5: unexpected }", "vector(1) returned NaN", "no data for rollout=chat"])
def test_plain_messages_are_kept_as_they_are(text):
    from finetune_operator.analysis.prometheus import shown

    assert shown(text) == text
