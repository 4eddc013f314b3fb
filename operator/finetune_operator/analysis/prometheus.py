"""The Prometheus provider: one instant query through the HTTP API, one number back.

`POST /api/v1/query` (form-encoded, so long queries fit) at the current time. The result
must be one number:

* `scalar` -> its value;
* `vector` with one sample -> its value; with none -> no data (None: inconclusive, never a
  failure); with several -> an error naming how many and which, because a threshold cannot
  judge several numbers at once: aggregate them (`sum(...)`, `max(...)`, `avg(...)`);
* `matrix` (a range vector) or `string` -> an error.

`NaN`, `+Inf` and `-Inf` are returned as floats; the analysis logic decides what they mean.
Connection failures, timeouts, HTTP errors and Prometheus' own error answers become
`MeasureResult.error` with the address and the cause, never an exception.
"""

from __future__ import annotations

import json
import math
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from finetune_operator.analysis import MeasureResult

DEFAULT_TIMEOUT_SECONDS = 10.0
SHOWN_SERIES = 3
SHOWN_BODY_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SECRETS = re.compile(
    r"(?i)(://[^/\s:@]+:)[^/\s@]+@"                       # user:password@ in a URL
    r"|(bearer\s+)[A-Za-z0-9._~+/=-]+"                      # Authorization: Bearer <token>
    r"|((?:token|password|passwd|secret|api[_-]?key)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;}]+"
)


def shown(text: object) -> str:
    """What of a Prometheus answer may reach a Rollout's status (and its Events and history): one
    line, control characters out, anything that looks like a credential redacted, at most
    SHOWN_BODY_CHARS characters. A proxy in front of Prometheus can answer with anything."""
    one_line = " ".join(_CONTROL.sub(" ", str(text)).split())
    redacted = _SECRETS.sub(lambda m: (m.group(1) or m.group(2) or m.group(3) or "") + "<redacted>" + ("@" if m.group(1) else ""),
                            one_line)
    return redacted if len(redacted) <= SHOWN_BODY_CHARS else redacted[: SHOWN_BODY_CHARS - 1] + "…"


def _labels(metric: Mapping[str, str]) -> str:
    name = metric.get("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{inner}}}"


def _number(text: object) -> float:
    # Prometheus sends sample values as strings: "0.5", "NaN", "+Inf", "-Inf".
    return float(str(text))


class PrometheusProvider:
    """Queries one Prometheus server; thread-safe (no state between queries)."""

    def __init__(
        self,
        address: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        headers: Mapping[str, str] | None = None,
    ):
        self.address = address.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"PrometheusProvider({self.address!r})"

    def measure(self, query: str) -> MeasureResult:
        try:
            payload = self._query(query)
        except _QueryError as exc:
            return MeasureResult(error=str(exc))
        return self._interpret(payload)

    def measure_histogram(self, query: str) -> MeasureResult:
        try:
            payload = self._query(query)
        except _QueryError as exc:
            return MeasureResult(error=str(exc))
        return self._interpret_histogram(payload)

    # ---- I/O

    def _query(self, query: str) -> dict:
        url = f"{self.address}/api/v1/query"
        body = urllib.parse.urlencode({"query": query}).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json",
                     **self.headers},
        )
        where = f"prometheus {self.address}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - configured URL
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        except (TimeoutError, socket.timeout):
            raise _QueryError(f"{where}: no answer within {self.timeout:g}s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _QueryError(f"{where}: no answer within {self.timeout:g}s") from None
            raise _QueryError(f"{where}: cannot connect ({reason}); is the address right and Prometheus up?") from None
        except (OSError, ValueError) as exc:
            raise _QueryError(f"{where}: request failed ({exc})") from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise _QueryError(f"{where}: HTTP {status} with a body that is not JSON: {shown(raw.decode(errors='replace'))!r}") from None
        if not isinstance(payload, dict):
            raise _QueryError(f"{where}: HTTP {status}: unexpected answer {shown(payload)!r}")
        if payload.get("status") != "success":
            kind = shown(payload.get("errorType") or f"HTTP {status}")
            message = shown(payload.get("error") or "no error message")
            raise _QueryError(f"{where} rejected the query ({kind}): {message}")
        return payload

    # ---- interpretation (pure)

    @staticmethod
    def _interpret(payload: dict) -> MeasureResult:
        data = payload.get("data") or {}
        kind = data.get("resultType")
        result: Any = data.get("result")  # Prometheus's JSON, unchecked: a wrong shape is caught below
        try:
            if kind == "scalar":
                return MeasureResult(value=_number(result[1]))
            if kind == "vector":
                if not result:
                    return MeasureResult()
                if len(result) > 1:
                    series = "; ".join(_labels(s.get("metric") or {}) for s in result[:SHOWN_SERIES])
                    more = f" and {len(result) - SHOWN_SERIES} more" if len(result) > SHOWN_SERIES else ""
                    return MeasureResult(
                        error=(
                            f"the query returned {len(result)} series ({series}{more}); a threshold needs one "
                            "number: aggregate them, e.g. sum(...), max(...) or avg(...)"
                        )
                    )
                return MeasureResult(value=_number(result[0]["value"][1]))
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            return MeasureResult(error=f"unexpected {kind} result from Prometheus ({exc!r}): {shown(result)}")
        if kind == "matrix":
            return MeasureResult(
                error="the query returned a range vector (matrix); use an instant query, e.g. rate(x[1m]) not x[1m]"
            )
        return MeasureResult(error=f"the query returned a {kind or 'missing'} result; it must return a number")


    @staticmethod
    def _interpret_histogram(payload: dict) -> MeasureResult:
        data = payload.get("data") or {}
        kind, result = data.get("resultType"), data.get("result")
        if kind != "vector":
            return MeasureResult(error=f"the query returned a {kind or 'missing'} result; a histogram needs a vector by le")
        buckets: dict[float, float] = {}
        try:
            for series in result or []:
                le = (series.get("metric") or {}).get("le")
                if le is None:
                    return MeasureResult(
                        error=(
                            f"a series without an le label ({_labels(series.get('metric') or {})}); aggregate "
                            "histogram buckets with sum by (le) (increase(x_bucket{...}[5m]))"
                        )
                    )
                value = _number(series["value"][1])
                bound = _number(le)
                if bound in buckets:
                    return MeasureResult(error=f"the query returned bucket le={le} twice; aggregate with sum by (le)")
                buckets[bound] = 0.0 if math.isnan(value) else value
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            return MeasureResult(error=f"unexpected histogram result from Prometheus ({exc!r}): {shown(result)}")
        return MeasureResult(buckets=buckets or None)


class _QueryError(Exception):
    pass
