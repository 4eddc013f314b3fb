"""Synthetic training data: records written by a teacher model behind an OpenAI-compatible API.

`dataset.synthetic` replaces reading a source. Prepare asks the teacher, one request after
another, for records in the dataset's format as JSON lines (`POST {endpoint}/chat/completions`
with a system message that spells out the fields and a user message made of `prompt`, the seed
examples and how many records to write). Every JSON object in an answer is taken, whatever code
fences or prose surround it; objects of the wrong shape, incomplete ones and exact copies of an
earlier record or of a seed example are rejected and counted. Requests go on until
`num_examples` records are accepted, or fail with a data error once `max_requests` answers did not
yield enough. What comes out then goes through the normal pipeline (filters, PII policy, dedup,
split), exactly like records read from a file.

Requests are sent in a fixed order and each one's body depends only on the config, its index and
how many records are still missing, so the same teacher answers always give the same dataset.
A request is retried with exponential backoff after HTTP 429, HTTP 5xx, a timeout or a lost
connection; any other HTTP error stops at once, naming the field to fix. The API key is read from
the environment variable `api_key_env` names (the operator fills it from the Secret of
`spec.dataset.synthetic.secretRef`) and never appears in messages, reports or logs.

Only the standard library speaks HTTP here (as in progress.py): one JSON POST needs no client
library in the image.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import dedup, formats
from .cli import emit
from .config import SyntheticSpec, TrainerConfig
from .exitcodes import ConfigError, DataError

ENDPOINT_FIELD = "spec.dataset.synthetic.endpoint"
MAX_BACKOFF_SECONDS = 60.0
_SNIPPET = 200  # characters of a server's answer quoted in an error

# What the teacher is told each record looks like.
RECORD_FIELDS = {
    "instruction": '"instruction" (the task or question, a string), optionally "input" (context '
    'for it, a string), and "output" (the ideal answer, a string)',
    "chat": '"messages": a list of {"role": "system" | "user" | "assistant", "content": string} '
    "turns with at least one user turn, ending with the assistant's reply",
    "preference": '"prompt" (a string), "chosen" (a good answer, a string) and "rejected" (a '
    "clearly worse answer, a string)",
}
RECORD_EXAMPLE = {
    "instruction": {"instruction": "...", "input": "", "output": "..."},
    "chat": {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]},
    "preference": {"prompt": "...", "chosen": "...", "rejected": "..."},
}


@dataclass
class Generated:
    """Accepted records (location, record), in the order the teacher wrote them, and the tally."""

    format: str
    records: list[tuple[str, dict]]
    report: dict[str, Any]


@dataclass
class _Tally:
    requests: int = 0
    retries: int = 0
    received: int = 0  # JSON objects (and unparseable fragments) found in the answers
    rejected: Counter[str] = field(default_factory=Counter)
    surplus: int = 0


# --- the record format ---------------------------------------------------------------------------


def target_format(config: TrainerConfig) -> str:
    """The format to ask for; the config's validator already checked the seed examples against it."""
    fmt = config.synthetic_format
    if fmt is None:  # pragma: no cover - TrainerConfig refuses such a config
        raise DataError("dataset.synthetic.seed_examples[0]: cannot tell the record format; set dataset.format")
    return fmt


def messages_for(spec: SyntheticSpec, fmt: str, count: int, batch: int) -> list[dict[str, str]]:
    """The system and user messages of one request."""
    system = (
        "You write training data for fine-tuning a language model. Reply with JSON Lines only: "
        "exactly one JSON object per line, no numbering, no commentary, no code fences. Each "
        f"object is one record with the fields {RECORD_FIELDS[fmt]}. Example of the shape: "
        f"{json.dumps(RECORD_EXAMPLE[fmt], ensure_ascii=False)}"
    )
    parts = [spec.prompt.strip()]
    if spec.seed_examples:
        examples = "\n".join(json.dumps(e, ensure_ascii=False, sort_keys=True) for e in spec.seed_examples)
        parts.append(f"Example records:\n{examples}")
    parts.append(
        f"Write {count} new record{'s' if count != 1 else ''} (batch {batch}). Make them varied, "
        "realistic, and different from the examples and from each other."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def request_body(config: TrainerConfig, fmt: str, count: int, index: int) -> dict[str, Any]:
    spec = config.dataset.synthetic
    assert spec is not None
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": messages_for(spec, fmt, count, index + 1),
        "temperature": spec.temperature,
        "n": 1,
        "seed": config.data_seed + index,  # reproducible where the server supports seeding
    }
    if spec.max_tokens is not None:
        body["max_tokens"] = spec.max_tokens
    return body


# --- parsing answers -----------------------------------------------------------------------------


def extract_objects(text: str) -> tuple[list[Any], int]:
    """(every JSON object in the text, fragments that start like one but do not parse).

    Code fences, bullets and prose around the objects are skipped; an array of objects yields its
    items. A broken object is counted once and the scan goes on at the next line.
    """
    decoder = json.JSONDecoder()
    objects: list[Any] = []
    broken = 0
    index = 0
    while (index := text.find("{", index)) >= 0:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            broken += 1
            newline = text.find("\n", index)
            index = len(text) if newline < 0 else newline + 1
            continue
        objects.append(value)
        index = end
    return objects, broken


def _unwrap(value: Any) -> list[Any]:
    """{"records": [...]} and similar one-key wrappers around a list of records -> the records."""
    if isinstance(value, dict) and formats.detect_format(value) is None and len(value) == 1:
        [inner] = value.values()
        if isinstance(inner, list) and inner and all(isinstance(v, dict) for v in inner):
            return inner
    return [value]


def _completion_text(response: Any) -> str | None:
    """choices[0].message.content of a chat completion; None when the answer is not one."""
    if not isinstance(response, dict):
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    return content if isinstance(content, str) else ("" if content is None else None)


# --- HTTP ----------------------------------------------------------------------------------------


def _snippet(data: bytes | str, secret: str | None) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    if secret:
        text = text.replace(secret, "[API_KEY]")
    return text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else "")


def _describe_connection_problem(exc: BaseException, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"host name not resolved ({reason.strerror})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class TeacherClient:
    """POSTs chat completions with retries; every failure it gives up on is a precise error."""

    def __init__(self, spec: SyntheticSpec, api_key: str | None, *, sleep: Callable[[float], None] = time.sleep):
        self.spec = spec
        self.url = spec.endpoint.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self.sleep = sleep
        self.retries = 0

    def where(self) -> str:
        return f"the teacher at {ENDPOINT_FIELD} {self.spec.endpoint}"

    def complete(self, body: dict[str, Any], number: int) -> Any:
        """The parsed JSON answer to request `number` (1-based, for messages)."""
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempts = self.spec.max_retries + 1
        timeout = self.spec.request_timeout_seconds
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            wait_hint: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    raw = response.read()
                return self._parse(raw)
            except urllib.error.HTTPError as exc:
                try:
                    detail = _snippet(exc.read() or b"", self.api_key)
                except (OSError, http.client.HTTPException):
                    detail = ""
                status = exc.code
                if status in (401, 403):
                    raise DataError(self._auth_message(status, detail)) from None
                if status != 429 and status < 500:
                    raise DataError(
                        f"synthetic data: {self.where()} answered HTTP {status} ({detail or exc.reason}) to "
                        f"POST {self.url}; check {ENDPOINT_FIELD} (the API base URL, e.g. "
                        f"http://host:8000/v1) and spec.dataset.synthetic.model {self.spec.model!r}"
                    ) from None
                problem = f"answered HTTP {status} ({detail or exc.reason})"
                wait_hint = _retry_after(exc.headers)
                unreachable = False
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                problem = _describe_connection_problem(exc, timeout)
                unreachable = True
            if attempt < attempts:
                self.retries += 1
                backoff = min(self.spec.retry_backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
                delay = min(max(backoff, wait_hint or 0.0), MAX_BACKOFF_SECONDS)
                emit({"event": "synthetic_retry", "request": number, "attempt": attempt, "problem": problem, "wait_seconds": round(delay, 3)})
                self.sleep(delay)
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if unreachable:
            raise DataError(
                f"synthetic data: {self.where()} is unreachable ({problem}; request {number}, {tries}); "
                "check the URL and that the teacher is serving and reachable from the cluster"
            )
        raise DataError(
            f"synthetic data: {self.where()} {problem} to request {number} ({tries}); check the "
            "teacher's health and capacity, then run the job again"
        )

    def _auth_message(self, status: int, detail: str) -> str:
        said = f"HTTP {status}" + (f": {detail}" if detail else "")
        if self.api_key:
            return (
                f"synthetic data: {self.where()} refused the API key ({said}); check the Secret key "
                "that spec.dataset.synthetic.secretRef names"
            )
        return (
            f"synthetic data: {self.where()} needs an API key ({said}); set "
            "spec.dataset.synthetic.secretRef to the Secret key that holds it"
        )

    def _parse(self, raw: bytes) -> Any:
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        if _completion_text(answer) is None:
            raise DataError(
                f"synthetic data: {self.where()} answered POST {self.url} with something that is "
                f"not a chat completion ({_snippet(raw, self.api_key) or 'an empty body'}); "
                f"{ENDPOINT_FIELD} must be the base URL of an OpenAI-compatible API (e.g. http://host:8000/v1)"
            )
        return answer


def api_key(spec: SyntheticSpec) -> str | None:
    if spec.api_key_env is None:
        return None
    key = os.environ.get(spec.api_key_env, "").strip()
    if not key:
        raise ConfigError(
            f"synthetic data: environment variable {spec.api_key_env} (the API key from "
            "spec.dataset.synthetic.secretRef) is unset or empty; check that the Secret exists and "
            "has that key"
        )
    return key


# --- generation ----------------------------------------------------------------------------------


def generate(config: TrainerConfig, *, sleep: Callable[[float], None] = time.sleep) -> Generated:
    """Ask the teacher until num_examples valid records are in hand; raise a DataError if it cannot."""
    spec = config.dataset.synthetic
    assert spec is not None, "generate() needs dataset.synthetic"
    fmt = target_format(config)
    client = TeacherClient(spec, api_key(spec), sleep=sleep)
    check_duplicates = config.dataset.dedup.exact
    seen = {dedup.exact_key(formats.joined_text(e, fmt)) for e in spec.seed_examples} if check_duplicates else set()
    tally = _Tally()
    accepted: list[tuple[str, dict]] = []
    wanted = spec.num_examples
    budget = spec.request_budget

    for index in range(budget):
        if len(accepted) >= wanted:
            break
        number = index + 1
        count = min(spec.records_per_request, wanted - len(accepted))
        answer = client.complete(request_body(config, fmt, count, index), number)
        tally.requests += 1
        objects, broken = extract_objects(_completion_text(answer) or "")
        tally.received += broken
        tally.rejected["not_json"] += broken
        position = 0
        for value in (item for obj in objects for item in _unwrap(obj)):
            position += 1
            tally.received += 1
            location = f"synthetic request {number}: record {position}"
            reason = _rejection(value, fmt, location)
            if reason is None and check_duplicates:
                key = dedup.exact_key(formats.joined_text(value, fmt))
                reason = "duplicate" if key in seen else None
                seen.add(key)
            if reason is not None:
                tally.rejected[reason] += 1
            elif len(accepted) < wanted:
                accepted.append((location, value))
            else:
                tally.surplus += 1
        emit({"event": "synthetic", "request": number, "accepted": len(accepted), "requested": wanted})

    tally.retries = client.retries
    report = {
        "endpoint": spec.endpoint,
        "model": spec.model,
        "requested": wanted,
        "generated": len(accepted),
        "received": tally.received,
        "rejected": {k: v for k, v in sorted(tally.rejected.items()) if v},
        "rejected_total": sum(tally.rejected.values()),
        "surplus": tally.surplus,
        "requests": tally.requests,
        "retries": tally.retries,
    }
    if len(accepted) < wanted:
        rejected = ", ".join(f"{k} {v}" for k, v in report["rejected"].items()) or "none"
        raise DataError(
            f"synthetic data: {client.where()} gave only {len(accepted)} valid {fmt} records of the "
            f"{wanted} in spec.dataset.synthetic.numExamples after {tally.requests} requests (the most "
            f"allowed; rejected: {rejected}); make spec.dataset.synthetic.prompt and seedExamples "
            "clearer, use a stronger model, or lower numExamples",
            details={"synthetic": report},
        )
    return Generated(fmt, accepted, report)


def _rejection(value: Any, fmt: str, location: str) -> str | None:
    """Why a teacher record is not used ('invalid', 'empty', 'incomplete', ...), None to keep it."""
    try:
        formats.validate(location, value, fmt)
    except DataError:
        return "invalid"
    return formats.incomplete_reason(value, fmt)
