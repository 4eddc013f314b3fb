"""merge_patch: the RFC 7386 patch from the old status to the new one, empty when equal."""

from __future__ import annotations

import pytest

from finetune_operator.logic.status import merge_patch


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param({"phase": "Pending"}, {"phase": "Pending"}, {}, id="unchanged-is-empty"),
        pytest.param(None, {"phase": "Pending"}, {"phase": "Pending"}, id="first-status"),
        pytest.param({"phase": "Pending"}, {"phase": "Failed"}, {"phase": "Failed"}, id="changed-field"),
        pytest.param({"phase": "Pending", "message": "m"}, {"phase": "Pending"}, {"message": None}, id="removed-field-nulled"),
        pytest.param(
            {"progress": {"step": 1, "epoch": 0.1}},
            {"progress": {"step": 2, "epoch": 0.1}},
            {"progress": {"step": 2}},
            id="nested-only-changed-keys",
        ),
        pytest.param(
            {"conditions": [{"type": "A"}, {"type": "B"}]},
            {"conditions": [{"type": "A"}]},
            {"conditions": [{"type": "A"}]},
            id="lists-replaced-whole",
        ),
    ],
)
def test_merge_patch(old, new, expected):
    assert merge_patch(old, new) == expected
