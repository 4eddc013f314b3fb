"""Retention: the newest N versions of each model keep their artifacts, plus anything serving."""

from __future__ import annotations

import pytest

from finetune_operator.logic.retention import Registered, expired, from_object, referenced


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
    assert from_object(mv) == Registered("m-v7", "m", 7, "Approved", True, "v7")


# ---- what Rollouts reference, read from the Rollouts (never from object names)


def mv(model: str, version: str, name: str | None = None, phase: str = "Deprecated") -> dict:
    """A ModelVersion whose object name need not be `<model>-<version>` (registered by hand, renamed)."""
    number = version.lstrip("v")
    return {
        "metadata": {"name": name or f"{model}-{version}", "labels": {"finetune.ai/version-number": number}},
        "spec": {"modelName": model, "version": version},
        "status": {"phase": phase},
    }


def ro(model: str, *, stable=None, candidate=None, pinned=None, history=()) -> dict:
    status = {"history": [{"action": a, "from": f, "to": t, "trigger": trig} for a, f, t, trig in history]}
    if stable:
        status["stableVersion"] = stable
    if candidate:
        status["candidateVersion"] = candidate
    spec = {"modelName": model, **({"version": pinned} if pinned else {"track": "LatestApproved"})}
    return {"metadata": {"name": f"{model}-ro"}, "spec": spec, "status": status}


SIX = [mv("m", f"v{i}") for i in range(1, 7)]
PROMOTED_1_2_3 = [("promote", "v1", "v2", "Steps"), ("promote", "v2", "v3", "Steps")]


@pytest.mark.parametrize(
    ("rollouts", "modelversions", "expected"),
    [
        pytest.param([], SIX, set(), id="no-rollouts-reference-nothing"),
        pytest.param([ro("m", stable="v3", history=PROMOTED_1_2_3)], SIX, {"m-v3", "m-v2"},
                     id="stable-and-the-previous-stable-rollback-target"),
        pytest.param([ro("m", stable="v3", candidate="v5", history=PROMOTED_1_2_3)], SIX, {"m-v3", "m-v2", "m-v5"},
                     id="the-candidate-too"),
        pytest.param([ro("m", stable="v3", pinned="v1", history=PROMOTED_1_2_3)], SIX, {"m-v3", "m-v2", "m-v1"},
                     id="the-pinned-version-too"),
        pytest.param([ro("m", stable="v3", history=[*PROMOTED_1_2_3, ("rollback", "v4", "v3", "Analysis")])], SIX,
                     {"m-v3", "m-v2"}, id="the-rollback-target-skips-a-refused-candidate"),
        pytest.param([ro("m", stable="v2")], [mv("m", "v1", name="legacy-one"), mv("m", "v2", name="second")],
                     {"second", "legacy-one"}, id="names-come-from-the-modelversions-not-from-a-pattern"),
        pytest.param([ro("other", stable="v2")], SIX, set(), id="another-models-rollout-references-nothing-here"),
        pytest.param([{"metadata": {"name": "x"}, "spec": {"modelName": "m"}, "status": {"history": "garbage"}}], SIX,
                     {f"m-v{i}" for i in range(1, 7)}, id="an-unreadable-status-protects-the-whole-model"),
    ],
)
def test_referenced(rollouts, modelversions, expected):
    assert referenced(rollouts, modelversions) == expected


@pytest.mark.parametrize(
    ("rollouts", "keep", "expected"),
    [
        pytest.param([ro("m", stable="v3", history=PROMOTED_1_2_3)], 2, ["m-v1", "m-v4"],
                     id="previous-stable-v2-survives-past-keep"),
        pytest.param([ro("m", stable="v3", pinned="v1", history=PROMOTED_1_2_3)], 1, ["m-v4", "m-v5"],
                     id="pinned-stable-and-rollback-target-survive"),
    ],
)
def test_expired_with_what_rollouts_reference(rollouts, keep, expected):
    registered = [from_object(m) for m in SIX]
    assert expired(registered, keep, referenced(rollouts, SIX)) == expected
