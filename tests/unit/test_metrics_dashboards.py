"""The generated dashboards: committed JSON matches the generator, and every panel queries something."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dashboards import generate

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = {"__rate_interval", "__interval", "__range"}


def test_committed_json_is_what_the_generator_writes():
    assert generate.main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(generate.render()))
def test_every_panel_has_queries_over_defined_variables(name):
    board = json.loads(generate.render()[name])
    defined = {v["name"] for v in board["templating"]["list"]} | BUILTIN
    assert board["panels"], name
    for panel in board["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        assert exprs and all(exprs), panel["title"]
        for expr in exprs:
            used = set(re.findall(r"\$(\w+)", expr))
            assert used <= defined, (panel["title"], used - defined)
