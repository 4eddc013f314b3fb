"""Every metric the operator registers is in docs/metrics.md's table, under the name Prometheus shows."""

from __future__ import annotations

import re
from pathlib import Path

import prometheus_client

import finetune_operator.metrics  # noqa: F401 - registers the operator's metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def _exposed_names() -> set[str]:
    names = set()
    for family in prometheus_client.REGISTRY.collect():
        if not family.name.startswith("finetune_operator_"):
            continue
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names.add(family.name + suffix)
    return names


def test_every_registered_operator_metric_is_documented():
    documented = set(re.findall(r"^\| `(finetune_operator_[a-z_]+)`", DOC.read_text(), flags=re.MULTILINE))
    exposed = _exposed_names()
    assert "finetune_operator_api_requests_total" in exposed and len(exposed) >= 5
    assert exposed - documented == set(), "registered but not in docs/metrics.md"
