"""The dev cluster's stand-in teacher: an OpenAI-compatible endpoint that writes support tickets.

    python -m devcluster.teacher [--port 18900] [--host 127.0.0.1]

`make demo` starts it on 127.0.0.1:18900 so that examples with synthetic data run on the dev cluster
as written (examples/finetunejob-case-study.yaml); as a Pod (image
`ghcr.io/finetune-operator/dev-teacher`, hack/devcluster/teacher.yaml) it is the Service
`teacher.models.svc:8000` that examples/finetunejob-synthetic.yaml names. It answers
`POST /v1/chat/completions` the way a teacher model answers the trainer's requests: "Write N new
records" gets N JSON lines. It is not a language model: it composes tickets from templates (a
product, a problem, a detail, an urgency) and their {"summary", "priority"} answers -- or, when the
prompt asks for SQL, questions about an orders table and their SQLite queries --
deterministically from the request's number and position, so every record is new and valid. On a real cluster the teacher is a served
model (vLLM, TGI or a hosted API) behind the same endpoint shape.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import string
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_PORT = 18900
INSTRUCTION = "Summarize the support ticket as JSON with the keys summary and priority."
PRODUCTS = ("the mobile app", "the web dashboard", "the billing page", "the API", "the desktop client", "the admin console",
            "the reporting module", "the search page", "the checkout", "the calendar sync", "the file uploader", "the SSO login")
PROBLEMS = (
    ("crashes when I open it", "crashes on open", "high"),
    ("shows a blank screen after the update", "blank screen since the update", "high"),
    ("is very slow in the afternoon", "slow in the afternoon", "medium"),
    ("logs me out every few minutes", "logs users out every few minutes", "medium"),
    ("charges my card twice", "double charge on the card", "high"),
    ("does not show last month's data", "last month's data missing", "medium"),
    ("has a typo on the settings page", "typo on the settings page", "low"),
    ("could use a dark mode", "feature request: dark mode", "low"),
    ("returns error 500 for every request", "error 500 on every request", "high"),
    ("exports CSV files with the wrong encoding", "CSV export uses the wrong encoding", "medium"),
    ("sends each notification twice", "duplicate notifications", "low"),
    ("cannot find invoices older than a year", "invoices older than a year not found", "medium"),
)
DETAILS = ("since Monday", "for our whole team", "on two of my devices", "after I changed my password",
           "only in Firefox", "since this morning", "for about half of our users", "when I am on VPN")
URGENCY = ("", " We have a board meeting tomorrow.", " Nobody on my team can work.", " No rush.",
           " Our customers are complaining.", " It is not blocking us.")
URGENT = {" We have a board meeting tomorrow.": "high", " Nobody on my team can work.": "high",
          " Our customers are complaining.": "high", " No rush.": "low", " It is not blocking us.": "low"}
_COMBINATIONS = list(itertools.product(PRODUCTS, PROBLEMS, DETAILS, URGENCY))


def ticket(number: int) -> dict[str, str]:
    """The `number`-th ticket of a fixed sequence (no two alike within 6,912)."""
    product, (problem, summary, priority), detail, urgency = _COMBINATIONS[(number * 7919) % len(_COMBINATIONS)]
    priority = URGENT.get(urgency, priority)
    text = f"{product[0].upper()}{product[1:]} {problem} {detail}.{urgency}"
    answer = {"summary": f"{product[0].upper()}{product[1:]}: {summary} {detail}.", "priority": priority}
    return {"instruction": INSTRUCTION, "input": text, "output": json.dumps(answer)}


CUSTOMERS = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Soylent", "Tyrell",
             "Cyberdyne", "Aperture", "Massive", "Vandelay", "Pied Piper", "Oscorp", "Gringotts", "Dunder", "Monarch", "Nakatomi")
YEARS = tuple(range(2019, 2027))
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
AMOUNTS = (50, 100, 250, 500, 1000)
# (question, query) templates for the orders(id, customer, total, created_at) table; {c} a
# customer, {y} a year, {m} a month ({mm} its number), {n} a count, {a} an amount.
SQL = (
    ("How many orders were placed in {m} {y}?",
     "SELECT COUNT(*) FROM orders WHERE strftime('%Y-%m', created_at) = '{y}-{mm}';"),
    ("What was the total order value in {y}?", "SELECT SUM(total) FROM orders WHERE strftime('%Y', created_at) = '{y}';"),
    ("How many orders did {c} place in {y}?",
     "SELECT COUNT(*) FROM orders WHERE customer = '{c}' AND strftime('%Y', created_at) = '{y}';"),
    ("What is the average order total of {c}?", "SELECT AVG(total) FROM orders WHERE customer = '{c}';"),
    ("List the {n} largest orders of {c}.", "SELECT * FROM orders WHERE customer = '{c}' ORDER BY total DESC LIMIT {n};"),
    ("Which {n} customers spent the most in {y}?",
     "SELECT customer, SUM(total) AS spent FROM orders WHERE strftime('%Y', created_at) = '{y}' "
     "GROUP BY customer ORDER BY spent DESC LIMIT {n};"),
    ("When did {c} place its first order?", "SELECT MIN(created_at) FROM orders WHERE customer = '{c}';"),
    ("How many orders over {a} did {c} place?", "SELECT COUNT(*) FROM orders WHERE customer = '{c}' AND total > {a};"),
    ("What did {c} spend in total in {m} {y}?",
     "SELECT SUM(total) FROM orders WHERE customer = '{c}' AND strftime('%Y-%m', created_at) = '{y}-{mm}';"),
    ("Which orders in {m} {y} were over {a}?",
     "SELECT * FROM orders WHERE total > {a} AND strftime('%Y-%m', created_at) = '{y}-{mm}';"),
)


def _sql_records() -> list[dict[str, str]]:
    """Every distinct question the templates make: each template over the slots it names."""
    slots = {"c": CUSTOMERS, "y": YEARS, "m": tuple(enumerate(MONTHS, 1)), "n": tuple(range(2, 10)), "a": AMOUNTS}
    records = []
    for question, query in SQL:
        named = sorted({field for _, field, _, _ in string.Formatter().parse(question + query) if field} - {"mm"})
        for values in itertools.product(*(slots[name] for name in named)):
            fill = dict(zip(named, values))
            if "m" in fill:
                fill["mm"], fill["m"] = f"{fill['m'][0]:02d}", fill["m"][1]
            records.append({"instruction": question.format(**fill), "output": query.format(**fill)})
    return records


_SQL_RECORDS = _sql_records()


def sql_question(number: int) -> dict[str, str]:
    """The `number`-th question about the orders table and its SQLite query (prompts asking for
    SQL get these instead of tickets; no two alike within len(_SQL_RECORDS), about 3,000)."""
    return _SQL_RECORDS[(number * 7919) % len(_SQL_RECORDS)]


class Teacher:
    def __init__(self) -> None:
        self.answered = 0

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = str((body.get("messages") or [{}])[-1].get("content", ""))
        match = re.search(r"Write (\d+) new record", prompt)
        count = min(int(match.group(1)), 100) if match else 10
        first = self.answered * 100
        self.answered += 1
        write = sql_question if re.search(r"\bSQL", prompt) else ticket
        content = "\n".join(json.dumps(write(first + i)) for i in range(count))
        return {
            "id": f"chatcmpl-dev-{self.answered}",
            "object": "chat.completion",
            "model": body.get("model", "dev-teacher"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        }


def handler_for(teacher: Teacher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's hook name
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "dev-teacher", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "Not Found"}})

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": "Not Found"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {"error": {"message": "the body is not JSON"}})
                return
            self._send(200, teacher.complete(body))

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write("teacher: " + (format % args) + "\n")

    return Handler


def make_server(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), handler_for(Teacher()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.teacher", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (in a Pod: its POD_IP)")
    args = parser.parse_args(argv)
    server = make_server(args.port, args.host)
    print(f"teacher: serving http://{args.host}:{args.port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
