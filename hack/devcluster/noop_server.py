"""A stand-in for the model server that serves no model: `python -m devcluster.noop_server --port N`.

Benchmarks that run many Rollouts need serving Pods that pass their readiness probe and can be
scraped, but cost next to nothing: the real dev server (`finetune_trainer serve`) loads a model
with torch in every Pod. This one answers `GET /health` (200) and `GET /metrics` (the server's
request counters, all zero: it is sent no traffic) from the standard library, and ignores the
model arguments the Rollout's serving spec passes. It never imports torch.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    version = ""

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        if self.path == "/health":
            self._send(200, "ok\n")
        elif self.path == "/metrics":
            labels = f'model_version="{self.version}"'
            self._send(200, f"finetune_serve_requests_total{{{labels}}} 0\nfinetune_serve_request_errors_total{{{labels}}} 0\n")
        else:
            self._send(404, "this stand-in serves no model\n")

    def _send(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the hook's signature
        return  # probes every 2 s: no log line each


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="noop_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("POD_IP") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--version", default=os.environ.get("MODEL_VERSION", ""))
    args, _model_arguments = parser.parse_known_args(argv)
    _Handler.version = args.version
    server = ThreadingHTTPServer((args.host, args.port), _Handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
