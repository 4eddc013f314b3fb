"""Retention: the newest N versions of each model keep their artifacts, plus anything serving."""

from __future__ import annotations

import pytest

from finetune_operator.logic.retention import Registered, expired, from_object


def versions(model: str, n: int, production: int | None = None, deleted=()) -> list[Registered]:
    return [
        Registered(f"{model}-v{i}", model, i, "Production" if i == production else "Deprecated", i in deleted)
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize(
    ("registered", "keep", "in_use", "expected"),
    [
        pytest.param(versions("m", 3), 5, (), [], id="fewer-than-keep-nothing-expires"),
        pytest.param(versions("m", 5), 3, (), ["m-v1", "m-v2"], id="oldest-beyond-keep-expire"),
        pytest.param(versions("m", 5, production=1), 3, (), ["m-v2"], id="production-is-never-expired"),
        pytest.param(versions("m", 5), 3, ("m-v2",), ["m-v1"], id="named-by-a-rollout-is-kept"),
        pytest.param(versions("m", 5, deleted=(1,)), 3, (), ["m-v2"], id="already-deleted-is-not-repeated"),
        pytest.param(versions("a", 3) + versions("b", 2), 2, (), ["a-v1"], id="per-model"),
    ],
)
def test_expired(registered, keep, in_use, expected):
    assert expired(registered, keep, in_use) == expected


def test_from_object_reads_number_phase_and_deletion():
    mv = {
        "metadata": {"name": "m-v7", "labels": {"finetune.ai/version-number": "7"}},
        "spec": {"modelName": "m", "version": "v7"},
        "status": {"phase": "Approved", "conditions": [{"type": "ArtifactRetained", "status": "False"}]},
    }
    assert from_object(mv) == Registered("m-v7", "m", 7, "Approved", True)
