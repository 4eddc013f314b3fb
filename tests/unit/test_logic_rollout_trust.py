"""decide() for Rollout: nothing refused is served, and a router that cannot route stops the canary.

Each story is reached the way the handler reaches it (rollout_fixtures.Cluster); a row compares
only the fields its situation is about. The first rows are the bug seen live on the dev cluster:
after the analysis rolled a broken v3 back to v2, `kubectl finetune rollback` made v3 stable.
"""

from __future__ import annotations

import pytest

from finetune_operator.logic import rollout as logic
from tests.unit.rollout_fixtures import BAD, GOOD, ONE_METRIC, Cluster, abort, rollback, spec, version, view

ROLLED_BACK = ("Warning", "RolledBack")
FORCED = ("Warning", "ForcedVersion")
REFUSED = ("Warning", "RollbackRefused")


# ---- stories


def promote_through_analysis(c: Cluster, number: int, start: float) -> float:
    """Approve `number` (ready) and walk its canary with good measurements until it is stable."""
    c.approve(number, ready=True)
    t = start
    c.reconcile(t)
    while c.status.candidate_version is not None:
        t += 10
        c.reconcile(t, GOOD)
        assert t < start + 1000, c.status.message
    return t


def v1_v2_promoted() -> Cluster:
    c = Cluster(spec(analysis=ONE_METRIC), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    promote_through_analysis(c, 2, 10)
    return c


def v3_rolled_back_by_analysis() -> Cluster:
    c = v1_v2_promoted()
    c.approve(3, ready=True)
    c.reconcile(1000)
    c.reconcile(1001, BAD)
    assert c.status.phase == "Degraded" and c.status.stable_version == "v2"
    return c


def seen_live_rollback_after_analysis_rollback() -> Cluster:
    c = v3_rolled_back_by_analysis()
    c.request(**rollback(1100))
    c.reconcile(1100)
    return c


def v3_aborted_v4_rolled_back() -> Cluster:
    c = v1_v2_promoted()
    c.approve(3, ready=True)
    c.reconcile(1000)
    c.request(**abort(1005))
    c.reconcile(1005)
    c.approve(4, ready=True)
    c.reconcile(1010)
    c.reconcile(1011, BAD)
    assert c.status.candidate_version is None and c.status.stable_version == "v2"
    return c


def rollback_after_abort_and_analysis_rollback() -> Cluster:
    c = v3_aborted_v4_rolled_back()
    c.request(**rollback(1100))
    c.reconcile(1100)
    return c


def second_rollback_goes_further_back() -> Cluster:
    c = v1_v2_promoted()
    promote_through_analysis(c, 3, 1000)
    c.request(**rollback(2000))
    c.reconcile(2000)
    c.request(**rollback(2010))
    c.reconcile(2010)
    return c


def rollback_to_aborted_candidate() -> Cluster:
    c = v3_aborted_v4_rolled_back()
    c.request(**rollback(1100, to="v3"))
    c.reconcile(1100)
    return c


def rollback_to_analysis_failed_candidate() -> Cluster:
    c = v3_aborted_v4_rolled_back()
    c.request(**rollback(1100, to="v4"))
    c.reconcile(1100)
    return c


def forced_rollback_to_aborted_candidate() -> Cluster:
    c = v3_aborted_v4_rolled_back()
    c.request(**rollback(1100, to="v3"))
    c.status.rollback_request.force = True
    c.reconcile(1100)
    return c


def rollback_to_rejected_version() -> Cluster:
    c = v1_v2_promoted()
    c.versions.append(version(0, "Rejected"))
    c.request(**rollback(1100, to="v0"))
    c.reconcile(1100)
    return c


def rollback_to_missing_version() -> Cluster:
    c = v1_v2_promoted()
    c.request(**rollback(1100, to="v9"))
    c.reconcile(1100)
    return c


def rollback_with_only_refused_earlier_versions() -> Cluster:
    c = Cluster(spec(analysis=ONE_METRIC), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    c.approve(2, ready=True)
    c.reconcile(10)
    c.request(**abort(15))
    c.reconcile(15)
    c.request(**rollback(100))
    c.reconcile(100)
    return c


def pinned_v2_aborted() -> Cluster:
    c = Cluster(spec(version="v1", analysis=ONE_METRIC), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    c.approve(2, ready=True)
    c.edit_spec(spec(version="v2", analysis=ONE_METRIC))
    c.reconcile(10)
    c.request(**abort(15))
    c.reconcile(15)
    return c


def pin_to_aborted_version_after_spec_edit() -> Cluster:
    c = pinned_v2_aborted()
    c.edit_spec(spec(version="v2", analysis=ONE_METRIC, scaleDownDelaySeconds=60))
    c.reconcile(100)
    return c


def pin_to_aborted_version_forced() -> Cluster:
    c = pin_to_aborted_version_after_spec_edit()
    c.force_version = "v2"
    c.reconcile(110)
    return c


def pin_earlier_aborted_version() -> Cluster:
    """v2's canary aborted, v3 promoted; then Git pins v2, older than the stable v3."""
    c = Cluster(spec(analysis=ONE_METRIC), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    c.approve(2, ready=True)
    c.reconcile(10)
    c.request(**abort(15))
    c.reconcile(15)
    promote_through_analysis(c, 3, 100)
    c.edit_spec(spec(version="v2", analysis=ONE_METRIC))
    c.reconcile(1100)
    return c


def pin_earlier_aborted_version_forced() -> Cluster:
    c = pin_earlier_aborted_version()
    c.force_version = "v2"
    c.reconcile(1110)
    return c


def canary_router_not_yet_at_weight() -> Cluster:
    c = Cluster(spec(), versions=[version(1)], ready={"v1"}, routing=logic.Routing(weight=None))
    c.reconcile(0)
    c.approve(2, ready=True)
    c.reconcile(10)
    return c


def canary_router_carries_weight() -> Cluster:
    c = canary_router_not_yet_at_weight()
    c.routing = logic.Routing(weight=10)
    c.reconcile(11)
    return c


def canary_router_fails() -> Cluster:
    c = canary_router_not_yet_at_weight()
    c.routing = logic.Routing(weight=None, error="HTTPRoute ns/chat not found")
    c.reconcile(11)
    c.reconcile(12)
    return c


def canary_router_fails_then_recovers() -> Cluster:
    c = canary_router_fails()
    c.routing = logic.Routing(weight=10)
    c.reconcile(20)
    return c


def stable_router_fails() -> Cluster:
    c = Cluster(spec(), versions=[version(1)], ready={"v1"}, routing=logic.Routing(error="403 Forbidden: httproutes"))
    c.reconcile(0)
    return c


def candidate_digest_mismatch() -> Cluster:
    c = Cluster(spec(), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    c.approve(2)
    c.serving_failures = {"v2": ("ArtifactDigestMismatch", "artifact of v2 has digest sha256:bb.., registered sha256:aa..")}
    c.reconcile(10)
    c.reconcile(20)
    return c


def first_version_digest_mismatch() -> Cluster:
    c = Cluster(spec(), versions=[version(1)], serving_failures={"v1": ("ArtifactDigestMismatch", "digest differs")})
    c.reconcile(0)
    return c


# ---- the table


@pytest.mark.parametrize(
    ("story", "expected", "message_has"),
    [
        pytest.param(
            seen_live_rollback_after_analysis_rollback,
            dict(phase="RolledBack", stable="v1", candidate=None, weight=0,
                 history=[("promote", "v1", "v2"), ("rollback", "v3", "v2"), ("rollback", "v2", "v1")],
                 rollback_accepted=("True", "RolledBack"), events=[ROLLED_BACK]),
            ["rolled back from v2 to v1"],
            id="seen-live-rollback-after-an-analysis-rollback-goes-to-the-stable-before-never-the-candidate",
        ),
        pytest.param(
            rollback_after_abort_and_analysis_rollback,
            dict(phase="RolledBack", stable="v1",
                 history=[("promote", "v1", "v2"), ("abort", "v3", "v2"), ("rollback", "v4", "v2"), ("rollback", "v2", "v1")]),
            [],
            id="rollback-after-abort-and-analysis-rollback-skips-both-candidates",
        ),
        pytest.param(
            second_rollback_goes_further_back,
            dict(phase="RolledBack", stable="v1"),
            [],
            id="a-second-rollback-goes-further-back-not-forward",
        ),
        pytest.param(
            rollback_to_aborted_candidate,
            dict(phase="Degraded", stable="v2", candidate=None, rollback_accepted=("False", "VersionRefused"),
                 events=[REFUSED], changed=True),
            [],
            id="rollback-to-an-aborted-candidate-is-refused",
        ),
        pytest.param(
            rollback_to_analysis_failed_candidate,
            dict(stable="v2", rollback_accepted=("False", "VersionRefused"), events=[REFUSED]),
            [],
            id="rollback-to-an-analysis-failed-candidate-is-refused",
        ),
        pytest.param(
            forced_rollback_to_aborted_candidate,
            dict(phase="RolledBack", stable="v3", rollback_accepted=("True", "ForcedVersion"),
                 forced=[None, None, None, True], events=[ROLLED_BACK, FORCED],
                 version_phases={"chat-v3": "Production", "chat-v2": "Deprecated"}),
            [],
            id="forced-rollback-to-an-aborted-candidate-is-served-and-recorded",
        ),
        pytest.param(
            rollback_to_rejected_version,
            dict(phase="Healthy", stable="v2", rollback_accepted=("False", "VersionUnusable"), events=[REFUSED]),
            [],
            id="rollback-to-a-rejected-version-is-refused",
        ),
        pytest.param(
            rollback_to_missing_version,
            dict(stable="v2", rollback_accepted=("False", "VersionNotFound"), events=[REFUSED]),
            [],
            id="rollback-to-a-missing-version-is-refused",
        ),
        pytest.param(
            rollback_with_only_refused_earlier_versions,
            dict(stable="v1", rollback_accepted=("False", "NoEarlierVersion"), events=[REFUSED]),
            [],
            id="rollback-with-no-earlier-servable-version-is-refused",
        ),
        pytest.param(
            pin_to_aborted_version_after_spec_edit,
            dict(phase="Degraded", ready=("False", "VersionRefused"), stable="v1", candidate=None, weight=0,
                 serve=("v1",)),
            ["spec.version v2 is refused", "v2 was aborted", "finetune.ai/force-version=v2"],
            id="pinning-an-aborted-version-is-refused",
        ),
        pytest.param(
            pin_to_aborted_version_forced,
            dict(phase="Progressing", stable="v1", candidate="v2", events=[FORCED, ("Normal", "CanaryStarted"),
                                                                          ("Normal", "Progressing")]),
            [],
            id="pinning-an-aborted-version-with-the-force-annotation-starts-its-canary",
        ),
        pytest.param(
            pin_earlier_aborted_version,
            dict(phase="Degraded", ready=("False", "VersionRefused"), stable="v3", candidate=None),
            ["spec.version v2 is refused", "v3 keeps serving"],
            id="pinning-an-earlier-aborted-version-is-not-a-rollback",
        ),
        pytest.param(
            pin_earlier_aborted_version_forced,
            dict(phase="RolledBack", stable="v2", forced=[None, None, True], events=[FORCED, ROLLED_BACK],
                 history=[("abort", "v2", "v1"), ("promote", "v1", "v3"), ("rollback", "v3", "v2")]),
            [],
            id="pinning-an-earlier-aborted-version-with-force-rolls-back-and-is-recorded",
        ),
        pytest.param(
            canary_router_not_yet_at_weight,
            dict(phase="Progressing", candidate="v2", step=0, weight=10, requeue=1),
            ["routing 10% of traffic to v2"],
            id="a-setweight-step-waits-until-the-router-carries-the-weight",
        ),
        pytest.param(
            canary_router_carries_weight,
            dict(phase="Progressing", candidate="v2", step=2, weight=25),
            ["routing 25% of traffic to v2"],
            id="the-step-is-done-once-the-router-carries-the-weight",
        ),
        pytest.param(
            canary_router_fails,
            dict(phase="Degraded", ready=("False", "TrafficRoutingFailed"), stable="v1", candidate="v2", step=0,
                 weight=10, history=[]),
            ["HTTPRoute ns/chat not found", "held at step 1/7"],
            id="a-router-that-cannot-apply-weights-holds-the-canary-degraded",
        ),
        pytest.param(
            canary_router_fails_then_recovers,
            dict(phase="Progressing", candidate="v2", step=2),
            [],
            id="the-canary-goes-on-once-the-router-works",
        ),
        pytest.param(
            stable_router_fails,
            dict(phase="Degraded", ready=("False", "TrafficRoutingFailed"), stable="v1"),
            ["403 Forbidden"],
            id="a-router-failure-without-canary-is-degraded",
        ),
        pytest.param(
            candidate_digest_mismatch,
            dict(phase="Degraded", ready=("False", "ArtifactDigestMismatch"), stable="v1", candidate=None, weight=0,
                 history=[("rollback", "v2", "v1")]),
            ["v2 cannot be served"],
            id="a-candidate-whose-artifact-digest-differs-is-never-served-and-not-retried",
        ),
        pytest.param(
            first_version_digest_mismatch,
            dict(phase="Degraded", ready=("False", "ArtifactDigestMismatch"), weight=0),
            ["digest differs"],
            id="a-first-version-whose-artifact-digest-differs-is-degraded",
        ),
    ],
)
def test_trust(story, expected, message_has):
    decision = story().last
    assert view(decision, expected) == expected
    for text in message_has:
        assert text in decision.status.message


def test_refused_rollback_names_the_version_and_why():
    status = rollback_to_aborted_candidate().status
    condition = next(c for c in status.conditions if c.type == "RollbackAccepted")
    assert "rollback by carol to v3 refused" in condition.message
    assert "v3 was aborted" in condition.message and "bad answers" in condition.message
    assert "--force" in condition.message
    analysis = rollback_to_analysis_failed_candidate().status
    condition = next(c for c in analysis.conditions if c.type == "RollbackAccepted")
    assert "v4 was rolled back by analysis" in condition.message and "error-rate" in condition.message


def test_history_says_what_caused_each_entry():
    status = rollback_after_abort_and_analysis_rollback().status
    assert [str(h.trigger) for h in status.history] == ["Steps", "Abort", "Analysis", "Request"]


def test_rollback_never_serves_a_refused_candidate_from_any_history():
    """Whatever the order of promotions, aborts and analysis rollbacks, a plain rollback never
    makes a refused candidate stable."""
    for story in (seen_live_rollback_after_analysis_rollback, rollback_after_abort_and_analysis_rollback,
                  rollback_with_only_refused_earlier_versions):
        status = story().status
        refused = {h.from_version for h in status.history if str(h.trigger) in ("Abort", "Analysis")}
        assert status.stable_version not in refused


def test_legacy_history_without_trigger_is_read_by_action():
    c = v3_rolled_back_by_analysis()
    c.status.history = [h.model_copy(update={"trigger": None}) for h in c.status.history]
    c.request(**rollback(1100))
    c.reconcile(1100)
    assert c.status.stable_version == "v1"
