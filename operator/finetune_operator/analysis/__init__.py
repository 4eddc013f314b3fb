"""Metric providers for canary analysis behind one small interface.

A provider turns one query into one number: `Provider.measure(query) -> MeasureResult`.
`value` is the number (NaN passes through: the analysis logic counts it as inconclusive);
`value is None and error is None` means the query matched nothing (no traffic yet, also
inconclusive); `error` says why there is no answer (Prometheus down, a bad query, a query
returning several series) and is recorded as an Error measurement.

Providers do blocking I/O with a timeout; call them from a thread (kopf runs sync handlers in
its executor) and never from the event loop. Which metric to measure when, and what the
numbers mean, is decided in `finetune_operator.logic.analysis`.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class MeasureResult:
    """The answer to one query: a value, no data (both None), or an error."""

    value: float | None = None
    error: str | None = None
    # For `measure_histogram`: upper bound (`le`) -> cumulative count; None with no data.
    buckets: dict[float, float] | None = None


class Provider(Protocol):
    def measure(self, query: str) -> MeasureResult:
        """Runs `query` now; never raises for a failed query (that is `MeasureResult.error`)."""
        ...

    def measure_histogram(self, query: str) -> MeasureResult:
        """Runs a query returning one series per histogram bucket (label `le`) into `buckets`."""
        ...


__all__ = ["MeasureResult", "Provider"]
