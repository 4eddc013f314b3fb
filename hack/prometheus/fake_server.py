"""A stand-in for the model server: the serving metrics and an OpenAI-shaped API, no model.

For analysis tests, the load generator and demos: it answers `POST /v1/completions` and
`POST /v1/chat/completions` after a configurable latency, fails a configurable share of them
with HTTP 500, and exposes on `GET /metrics` the same series as the real server
(`python -m finetune_trainer serve`):

    finetune_serve_requests_total{model,status}        counter, status is the HTTP code
                                                       (200 and 500 created at 0)
    finetune_serve_request_errors_total{model}         counter, created at 0
    finetune_serve_request_duration_seconds{model}     histogram, created empty
    finetune_serve_info{model_version,served_model}    gauge, always 1

Errors are spread deterministically (with --error-rate 0.25 every 4th request fails), so a
test's expected error rate is exact. Listens on $POD_IP (set for every Pod of the dev
cluster) or 127.0.0.1; `GET /health` and `GET /v1/models` answer at once.

    python -m hack.prometheus.fake_server --port 8000 --model-version v2 --error-rate 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class FakeModelServer:
    def __init__(self, model: str, model_version: str, error_rate: float, latency: float):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"--error-rate {error_rate}: must be between 0 and 1")
        self.model, self.error_rate, self.latency = model, error_rate, latency
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "finetune_serve_requests", "Requests served, by HTTP status.", ["model", "status"], registry=self.registry
        )
        self.errors = Counter(
            "finetune_serve_request_errors", "Requests that failed.", ["model"], registry=self.registry
        )
        self.duration = Histogram(
            "finetune_serve_request_duration_seconds", "Request latency.", ["model"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        info = Gauge("finetune_serve_info", "The model version being served.", ["model_version", "served_model"],
                     registry=self.registry)
        info.labels(model_version=model_version, served_model=model).set(1)
        # Series exist at 0 before the first request: rate() cannot see the increase of a
        # counter whose first sample is already above 0, so it would miss the first requests.
        self.errors.labels(model=model)
        self.duration.labels(model=model)
        for status in ("200", "500"):
            self.requests.labels(model=model, status=status)
        self._lock = threading.Lock()
        self._served = 0

    def next_fails(self) -> bool:
        # Request n fails when it crosses the next multiple of 1/error_rate: exact shares.
        with self._lock:
            n = self._served
            self._served += 1
        return int((n + 1) * self.error_rate) > int(n * self.error_rate)

    def observe(self, status: int, seconds: float) -> None:
        self.requests.labels(model=self.model, status=str(status)).inc()
        if status >= 500:
            self.errors.labels(model=self.model).inc()
        self.duration.labels(model=self.model).observe(seconds)


def make_handler(server: FakeModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # one line per request would drown the Pod log
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/metrics":
                self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
            elif self.path in ("/health", "/healthz", "/ready"):
                self._send(200, b"ok\n", "text/plain")
            elif self.path == "/v1/models":
                self._send(200, json.dumps({"object": "list", "data": [{"id": server.model, "object": "model"}]}).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:  # noqa: N802
            started = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._send(404, b'{"error": "not found"}')
                return
            time.sleep(server.latency)
            if server.next_fails():
                status, body = 500, {"error": {"message": "injected failure", "type": "server_error"}}
            elif self.path == "/v1/completions":
                status, body = 200, {"object": "text_completion", "model": server.model,
                                     "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}]}
            else:
                status, body = 200, {"object": "chat.completion", "model": server.model,
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": "ok"}}]}
            server.observe(status, time.monotonic() - started)  # counted before the client sees its answer
            self._send(status, json.dumps(body).encode())

    return Handler


def serve(host: str, port: int, server: FakeModelServer) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer((host, port), make_handler(server))
    httpd.daemon_threads = True
    return httpd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("POD_IP") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--model-version", default="v1")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered with 500")
    parser.add_argument("--latency", type=float, default=0.01, help="seconds per request")
    args = parser.parse_args(argv)
    httpd = serve(args.host, args.port, FakeModelServer(args.model, args.model_version, args.error_rate, args.latency))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    print(f"fake model server {args.model}@{args.model_version} on http://{args.host}:{args.port} "
          f"(error rate {args.error_rate:g}, latency {args.latency:g}s)", flush=True)
    httpd.serve_forever()
    httpd.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
