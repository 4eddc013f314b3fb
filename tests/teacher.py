"""A fake teacher model: a real OpenAI-compatible HTTP server on 127.0.0.1, for tests.

It answers `POST /v1/chat/completions` the way real ones do: JSON lines wrapped in prose and
code fences, with some broken, invalid and repeated records among them; it can also fail with
5xx/429, answer too slowly, check the bearer token (and, like some real servers, echo a wrong
one in its error), or answer with a web page. Every request is kept in `Teacher.requests`.

Use the `serve` fixture: `teacher = serve(Teacher(api_key=...))`, then `teacher.url`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

PROMPT = "Write a support ticket about office hardware as instruction and its category as output."
SEED = {"instruction": "The printer on floor 2 is out of toner", "output": "hardware"}
API_KEY = "sk-test-0123456789abcdef"


def ticket(request: int, index: int) -> dict[str, str]:
    return {"instruction": f"Ticket {request}.{index}: the scanner in room {request}{index} shows error {index}", "output": f"hardware {request}.{index}"}


def tickets_with_junk(request: int, count: int) -> str:
    """`count` good records, wrapped the way chatty teachers answer, plus one of each kind of junk."""
    records = [json.dumps(ticket(request, i)) for i in range(count)]
    return "\n".join(
        [
            "Sure! Here are the records you asked for:",
            "```json",
            *records,
            '{"instruction": "This one was cut off',  # not JSON
            json.dumps({"question": "wrong keys", "answer": "x"}),  # invalid for the format
            json.dumps({"instruction": "No answer given", "output": "  "}),  # incomplete
            records[0],  # a repeat
            json.dumps(SEED),  # a copy of the seed example
            "```",
            "Let me know if you need more!",
        ]
    )


class Teacher:
    """What the fake teacher does; every request it received is kept in `requests`."""

    def __init__(
        self,
        *,
        write: Callable[[int, int], str] = tickets_with_junk,
        script: list[str] | None = None,
        api_key: str | None = None,
        slow_seconds: float = 1.0,
    ):
        self.write = write  # (request number, records asked for) -> message content
        self.script = list(script or [])  # answers before the normal ones: "500", "429", "slow", "html"
        self.api_key = api_key
        self.slow_seconds = slow_seconds
        self.requests: list[dict[str, Any]] = []
        self.answered = 0  # completions answered (the request number the teacher writes for)
        self.url = ""

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        body = json.loads(raw)
        self.requests.append({"path": path, "authorization": headers.get("Authorization"), "body": body})
        if path != "/v1/chat/completions":
            return 404, {}, b'{"error": {"message": "Not Found"}}'
        if self.api_key is not None and headers.get("Authorization") != f"Bearer {self.api_key}":
            given = headers.get("Authorization", "").removeprefix("Bearer ")
            # Like some real servers, the error echoes the key it got: it must not reach our messages.
            return 401, {}, json.dumps({"error": {"message": f"Incorrect API key provided: {given}"}}).encode()
        step = self.script.pop(0) if self.script else "ok"
        if step == "500":
            return 500, {}, b'{"error": {"message": "model overloaded"}}'
        if step == "429":
            return 429, {"Retry-After": "0"}, b'{"error": {"message": "rate limited"}}'
        if step == "html":
            return 200, {"Content-Type": "text/html"}, b"<html><body>Welcome to nginx!</body></html>"
        if step == "slow":
            time.sleep(self.slow_seconds)  # longer than the client's timeout: it gives up and retries
        self.answered += 1
        count = int(re.search(r"Write (\d+) new record", body["messages"][-1]["content"]).group(1))
        completion = {
            "id": f"chatcmpl-{self.answered}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.write(self.answered, count)}}],
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(completion).encode()


def _handler_for(teacher: Teacher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, headers, payload = teacher.handle(self.path, dict(self.headers), raw)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and hung up: that is the point of a "slow" answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[[Teacher], Teacher]]:
    servers: list[ThreadingHTTPServer] = []

    def start(teacher: Teacher) -> Teacher:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(teacher))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        teacher.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        return teacher

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
