"""decide() for Rollout: which versions serve, the canary weight, and the status, through time.

Each row is one situation a Rollout can be in, reached the way the handler reaches it: a story
of reconciles (see rollout_fixtures.Cluster) that feeds each returned status into the next
reconcile, with the versions the handler observes, which of them serve ready Pods, and the
measurements of the metrics that were due. A row compares only the fields its situation is
about (rollout_fixtures.view).
"""

from __future__ import annotations

import pytest

from finetune_operator.api.rollout import RolloutStatus
from finetune_operator.logic import rollout as logic
from finetune_operator.logic.spec import InvalidSpec
from tests.unit.rollout_fixtures import (
    BAD,
    GOOD,
    NO_DATA,
    ONE_METRIC,
    QUERY_ERROR,
    Cluster,
    abort,
    at,
    promote,
    rollback,
    spec,
    spec_dict,
    version,
    view,
)

ANALYSIS_WITH_INCONCLUSIVE_LIMIT = {
    **ONE_METRIC,
    "metrics": [{**ONE_METRIC["metrics"][0], "inconclusiveLimit": 1}],
}
PAUSE_STEPS = {
    "canary": {
        "steps": [
            {"setWeight": 10},
            {"pause": {"duration": "1m"}},
            {"setWeight": 50},
            {"pause": {}},
            {"setWeight": 100},
        ]
    }
}
UNKNOWN_METRIC_STEP = {
    "canary": {"steps": [{"setWeight": 10}, {"analysis": {"templates": ["latency"]}}, {"setWeight": 100}]}
}
PROMOTED = ("Normal", "Promoted")
HEALTHY = ("True", "Healthy")


# ---- stories: each returns the Cluster after its last reconcile (the decision is cluster.last)


def no_versions() -> Cluster:
    c = Cluster(spec())
    c.reconcile(0)
    return c


def only_unapproved_versions() -> Cluster:
    c = Cluster(spec(), versions=[version(1, "Candidate"), version(2, "Rejected")])
    c.reconcile(0)
    return c


def first_version_deploying(**spec_fields) -> Cluster:
    c = Cluster(spec(**spec_fields), versions=[version(1)])
    c.reconcile(0)
    return c


def first_version_ready() -> Cluster:
    c = first_version_deploying()
    c.ready.add("v1")
    c.reconcile(2)
    return c


def healthy_v1(**spec_fields) -> Cluster:
    c = Cluster(spec(**spec_fields), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    return c


def canary_waits_for_ready(**spec_fields) -> Cluster:
    c = healthy_v1(**spec_fields)
    c.approve(2)
    c.reconcile(10)
    return c


def canary_walks_to_promotion() -> Cluster:
    c = canary_waits_for_ready()
    c.ready.add("v2")
    c.reconcile(12)
    return c


def old_version_within_scale_down_delay() -> Cluster:
    c = canary_walks_to_promotion()
    c.reconcile(12 + 29)
    return c


def old_version_after_scale_down_delay() -> Cluster:
    c = canary_walks_to_promotion()
    c.reconcile(12 + 31)
    return c


def timed_pause_starts() -> Cluster:
    c = healthy_v1(strategy=PAUSE_STEPS)
    c.approve(2, ready=True)
    c.reconcile(10)
    return c


def timed_pause_before_it_ends() -> Cluster:
    c = timed_pause_starts()
    c.reconcile(69)
    return c


def untimed_pause_after_timed_pause() -> Cluster:
    c = timed_pause_starts()
    c.reconcile(70)
    return c


def untimed_pause_an_hour_later() -> Cluster:
    c = untimed_pause_after_timed_pause()
    c.reconcile(3670)
    return c


def promote_leaves_untimed_pause() -> Cluster:
    c = untimed_pause_an_hour_later()
    c.request(**promote(3700))
    c.reconcile(3701)
    return c


def analysis_starts(analysis=ONE_METRIC) -> Cluster:
    c = healthy_v1(analysis=analysis)
    c.approve(2, ready=True)
    c.reconcile(10)
    return c


def first_good_measurement() -> Cluster:
    c = analysis_starts()
    c.reconcile(11, GOOD)
    return c


def three_good_measurements() -> Cluster:
    c = analysis_starts()
    c.reconcile_every([11, 21, 31], GOOD)
    return c


def every_analysis_passes() -> Cluster:
    """Good measurements every 10 s until the candidate is promoted (stops at that reconcile)."""
    c = analysis_starts()
    for t in range(11, 200, 10):
        if c.reconcile(t, GOOD).status.candidate_version is None:
            break
    return c


def single_measurement_with_count_1() -> Cluster:
    c = analysis_starts({**ONE_METRIC, "metrics": [{**ONE_METRIC["metrics"][0], "count": 1}]})
    c.reconcile(11, GOOD)
    return c


def failed_measurement() -> Cluster:
    c = analysis_starts()
    c.reconcile(11, BAD)
    return c


def failed_then_resync() -> Cluster:
    c = failed_measurement()
    c.reconcile(12)
    return c


def failed_then_an_hour_later() -> Cluster:
    c = failed_measurement()
    c.reconcile(3600)
    return c


def failed_then_newer_version() -> Cluster:
    c = failed_measurement()
    c.approve(3)
    c.reconcile(3600)
    return c


def failed_then_spec_edited() -> Cluster:
    c = failed_measurement()
    c.edit_spec(spec(analysis=ONE_METRIC, scaleDownDelaySeconds=60))
    c.reconcile(20)
    return c


def empty_result_over_inconclusive_limit() -> Cluster:
    c = analysis_starts()
    c.reconcile(11, NO_DATA)
    return c


def empty_result_within_inconclusive_limit() -> Cluster:
    c = analysis_starts(ANALYSIS_WITH_INCONCLUSIVE_LIMIT)
    c.reconcile(11, NO_DATA)
    return c


def second_empty_result_over_inconclusive_limit() -> Cluster:
    c = empty_result_within_inconclusive_limit()
    c.reconcile(21, NO_DATA)
    return c


def query_error() -> Cluster:
    c = analysis_starts()
    c.reconcile(11, QUERY_ERROR)
    return c


def promote_leaves_inconclusive_pause() -> Cluster:
    c = empty_result_over_inconclusive_limit()
    c.request(**promote(20))
    c.reconcile(21)
    return c


def new_version_mid_analysis() -> Cluster:
    c = three_good_measurements()  # v2 at step 3 (analysis at 25%)
    c.reconcile(41, GOOD)
    c.approve(3)
    c.reconcile(45)
    return c


def new_version_at_a_pause() -> Cluster:
    c = untimed_pause_after_timed_pause()  # v2 at step 3 (paused at 50%)
    c.approve(3)
    c.reconcile(80)
    return c


def abort_mid_canary() -> Cluster:
    c = first_good_measurement()
    c.request(**abort(15))
    c.reconcile(16)
    return c


def same_abort_again() -> Cluster:
    c = abort_mid_canary()
    c.reconcile(17)
    return c


def abort_older_than_last_handled() -> Cluster:
    c = first_good_measurement()
    c.request(last_handled_request=at(20), **abort(15))
    c.reconcile(21)
    return c


def abort_without_canary() -> Cluster:
    c = healthy_v1()
    c.request(**abort(5))
    c.reconcile(6)
    return c


def promote_skips_analysis_step() -> Cluster:
    c = first_good_measurement()
    c.request(**promote(12))
    c.reconcile(12)
    return c


def full_promote() -> Cluster:
    c = first_good_measurement()
    c.request(**promote(12, full=True))
    c.reconcile(12)
    return c


def v3_promoted_after_v2() -> Cluster:
    c = canary_walks_to_promotion()
    c.approve(3, ready=True)
    c.reconcile(20)
    return c


def rollback_request_without_canary() -> Cluster:
    c = canary_walks_to_promotion()
    c.request(**rollback(100))
    c.reconcile(100)
    return c


def rollback_request_then_resync() -> Cluster:
    c = rollback_request_without_canary()
    c.reconcile(101)
    return c


def rollback_request_to_previous_stable() -> Cluster:
    c = v3_promoted_after_v2()
    c.request(**rollback(100))
    c.reconcile(100)
    return c


def rollback_request_to_named_version() -> Cluster:
    c = v3_promoted_after_v2()
    c.request(**rollback(100, to="v1"))
    c.reconcile(100)
    return c


def pinned_earlier_than_stable() -> Cluster:
    c = canary_walks_to_promotion()
    c.edit_spec(spec(version="v1", analysis=ONE_METRIC))
    c.reconcile(100)
    return c


def pinned_earlier_then_resync() -> Cluster:
    c = pinned_earlier_than_stable()
    c.reconcile(101)
    return c


def pinned_rejected_version() -> Cluster:
    c = healthy_v1(version="v1")
    c.versions.append(version(2, "Rejected"))
    c.edit_spec(spec(version="v2"))
    c.reconcile(10)
    return c


def pinned_missing_version_without_stable() -> Cluster:
    c = Cluster(spec(version="v9"), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    return c


def pinned_newer_version() -> Cluster:
    c = healthy_v1(version="v1")
    c.approve(2)
    c.edit_spec(spec(version="v2"))
    c.reconcile(10)
    return c


def pinned_stable_mid_canary() -> Cluster:
    c = canary_waits_for_ready()
    c.edit_spec(spec(version="v1"))
    c.ready.add("v2")
    c.reconcile(20)
    return c


def candidate_rejected_mid_canary() -> Cluster:
    c = canary_waits_for_ready()
    c.set_phase(2, "Rejected")
    c.ready.add("v2")
    c.reconcile(20)
    return c


def abort_while_pinned() -> Cluster:
    c = pinned_newer_version()
    c.request(**abort(15))
    c.reconcile(16)
    return c


def failed_analysis_while_pinned_then_resync() -> Cluster:
    c = healthy_v1(version="v1", analysis=ONE_METRIC)
    c.approve(2, ready=True)
    c.edit_spec(spec(version="v2", analysis=ONE_METRIC))
    c.reconcile(10)
    c.reconcile(11, BAD)
    c.reconcile(12)
    return c


def rollback_request_while_pinned() -> Cluster:
    c = healthy_v1(version="v1")
    c.approve(2, ready=True)
    c.edit_spec(spec(version="v2"))
    c.reconcile(10)  # promoted: no analysis, v2 ready
    c.request(**rollback(100))
    c.reconcile(100)
    return c


def invalid_spec_mid_canary() -> Cluster:
    c = first_good_measurement()
    c.edit_spec(spec(analysis=ONE_METRIC, strategy=UNKNOWN_METRIC_STEP))
    c.reconcile(12)
    return c


def invalid_spec_fixed() -> Cluster:
    c = invalid_spec_mid_canary()
    c.edit_spec(spec(analysis=ONE_METRIC))
    c.reconcile(13)
    return c


def version_and_track_both_set() -> Cluster:
    c = Cluster(logic.parse_spec({**spec_dict(), "version": "v1"}), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    return c


def weight_over_100() -> Cluster:
    c = Cluster(spec(strategy={"canary": {"steps": [{"setWeight": 150}]}}), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    return c


# ---- the tables


def check(story, expected, message_has=()):
    decision = story().last
    assert view(decision, expected) == expected
    for text in message_has:
        assert text in decision.status.message


@pytest.mark.parametrize(
    ("story", "expected", "message_has"),
    [
        pytest.param(
            no_versions,
            dict(phase="Progressing", ready=("False", "WaitingForVersion"), progressing=("True", "WaitingForVersion"),
                 stable=None, serve=(), weight=0, events=[("Normal", "Progressing")]),
            ["waiting for an Approved ModelVersion of model chat"],
            id="tracking-with-no-versions-waits",
        ),
        pytest.param(
            only_unapproved_versions,
            dict(phase="Progressing", ready=("False", "WaitingForVersion"), stable=None, serve=()),
            ["waiting for an Approved ModelVersion"],
            id="candidate-and-rejected-versions-are-not-served",
        ),
        pytest.param(
            first_version_deploying,
            dict(phase="Progressing", ready=("False", "Progressing"), stable="v1", canary="v1", candidate=None,
                 serve=("v1",), weight=0, version_phases={"chat-v1": "Production"}, history=[]),
            ["v1"],
            id="first-approved-version-becomes-stable-without-canary",
        ),
        pytest.param(
            first_version_ready,
            dict(phase="Healthy", ready=HEALTHY, progressing=("False", "Healthy"), stable="v1", serve=("v1",),
                 weight=0, events=[("Normal", "Healthy")], version_phases={}),
            ["v1 serves 100% of traffic"],
            id="first-version-healthy-once-ready",
        ),
        pytest.param(
            canary_waits_for_ready,
            dict(phase="Progressing", ready=("False", "Progressing"), stable="v1", candidate="v2", canary="v2",
                 step=0, weight=10, serve=("v1", "v2"), requeue=2,
                 events=[("Normal", "CanaryStarted"), ("Normal", "Progressing")]),
            ["step 1/7", "waiting for v2 to be ready"],
            id="newer-approved-version-starts-canary-and-set-weight-waits-for-ready",
        ),
        pytest.param(
            canary_walks_to_promotion,
            dict(phase="Healthy", ready=HEALTHY, stable="v2", candidate=None, canary="v2", weight=0,
                 version_phases={"chat-v2": "Production", "chat-v1": "Deprecated"},
                 history=[("promote", "v1", "v2")], events=[PROMOTED], serve=("v2", "v1"), requeue=30),
            ["v2 serves 100% of traffic"],
            id="default-steps-without-analysis-walk-to-promotion",
        ),
        pytest.param(
            old_version_within_scale_down_delay,
            dict(phase="Healthy", stable="v2", serve=("v2", "v1"), events=[]),
            [],
            id="old-version-keeps-pods-during-scale-down-delay",
        ),
        pytest.param(
            old_version_after_scale_down_delay,
            dict(phase="Healthy", stable="v2", serve=("v2",), requeue=None, events=[]),
            [],
            id="old-version-pods-go-after-scale-down-delay",
        ),
    ],
)
def test_tracking_latest_approved(story, expected, message_has):
    check(story, expected, message_has)


@pytest.mark.parametrize(
    ("story", "expected", "message_has"),
    [
        pytest.param(
            timed_pause_starts,
            dict(phase="Paused", ready=("False", "Paused"), progressing=("True", "Paused"), step=1, weight=10,
                 candidate="v2", requeue=60, events=[("Normal", "CanaryStarted"), ("Normal", "Paused")]),
            ["step 2/5", "until 2025-01-01T12:01:10+00:00"],
            id="timed-pause-pauses",
        ),
        pytest.param(
            timed_pause_before_it_ends,
            dict(phase="Paused", step=1, weight=10, requeue=1, events=[], changed=False),
            [],
            id="timed-pause-holds-until-its-time",
        ),
        pytest.param(
            untimed_pause_after_timed_pause,
            dict(phase="Paused", step=3, weight=50, candidate="v2", events=[]),
            ["step 4/5", "until promoted (kubectl finetune promote chat)"],
            id="timed-pause-ends-then-untimed-pause-waits",
        ),
        pytest.param(
            untimed_pause_an_hour_later,
            dict(phase="Paused", step=3, weight=50, events=[], changed=False),
            [],
            id="untimed-pause-still-waits-an-hour-later",
        ),
        pytest.param(
            promote_leaves_untimed_pause,
            dict(phase="Healthy", ready=HEALTHY, stable="v2", candidate=None, weight=0,
                 history=[("promote", "v1", "v2")], events=[PROMOTED, PROMOTED]),
            [],
            id="promote-request-leaves-untimed-pause",
        ),
    ],
)
def test_canary_steps(story, expected, message_has):
    check(story, expected, message_has)


MEASURED_FOR_ANOTHER_RUN = (
    "the measurements taken for one analysis step are recorded again in the run of the next "
    "analysis step reached in the same reconcile"
)


@pytest.mark.parametrize(
    ("story", "expected", "message_has"),
    [
        pytest.param(
            analysis_starts,
            dict(phase="Progressing", step=1, weight=10, analysis=(1, "Running"), requeue=0.5),
            ["step 2/7", "analysing v2 at 10%"],
            id="analysis-step-starts-a-run",
        ),
        pytest.param(
            first_good_measurement,
            dict(phase="Progressing", step=1, weight=10, analysis=(1, "Running"), requeue=10, events=[]),
            [],
            id="good-measurement-keeps-analysing-until-count",
        ),
        pytest.param(
            three_good_measurements,
            dict(phase="Progressing", step=3, weight=25, analysis=(3, "Running"), events=[]),
            ["analysing v2 at 25%"],
            id="count-good-measurements-advance-to-next-weight",
        ),
        pytest.param(
            three_good_measurements,
            dict(analysis=(3, "Running"), measurements=0, requeue=0.5),
            [],
            id="next-analysis-run-starts-without-measurements",
        ),
        pytest.param(
            single_measurement_with_count_1,
            dict(phase="Progressing", stable="v1", candidate="v2", step=3, weight=25, history=[]),
            [],
            id="one-measurement-passes-only-its-own-analysis-step",
        ),
        pytest.param(
            every_analysis_passes,
            dict(phase="Healthy", ready=HEALTHY, stable="v2", candidate=None, weight=0, analysis=None,
                 history=[("promote", "v1", "v2")], events=[PROMOTED],
                 version_phases={"chat-v2": "Production", "chat-v1": "Deprecated"}),
            [],
            id="every-analysis-passes-promotes",
        ),
        pytest.param(
            failed_measurement,
            dict(phase="Degraded", ready=("False", "AnalysisFailed"), progressing=("False", "AnalysisFailed"),
                 stable="v1", candidate=None, canary="v1", weight=0, step=None, analysis=(1, "Failed"),
                 history=[("rollback", "v2", "v1")], events=[("Warning", "AnalysisFailed")],
                 version_phases={}, serve=("v1", "v2")),
            ["rolled back v2 to v1", "error-rate", "0.2 > max 0.05"],
            id="failed-measurement-rolls-back-at-once",
        ),
        pytest.param(
            failed_then_resync,
            dict(phase="Degraded", ready=("False", "AnalysisFailed"), candidate=None, weight=0, events=[],
                 changed=False),
            ["error-rate"],
            id="rolled-back-by-analysis-stays-degraded-on-resync",
        ),
        pytest.param(
            failed_then_an_hour_later,
            dict(phase="Degraded", stable="v1", candidate=None, weight=0, serve=("v1",), events=[]),
            [],
            id="tracking-does-not-retry-the-failed-version",
        ),
        pytest.param(
            failed_then_newer_version,
            dict(phase="Progressing", ready=("False", "Progressing"), stable="v1", candidate="v3", step=0,
                 weight=10, analysis=None, events=[("Normal", "CanaryStarted"), ("Normal", "Progressing")]),
            [],
            id="newer-version-after-failure-starts-new-canary",
        ),
        pytest.param(
            failed_then_spec_edited,
            dict(phase="Healthy", ready=HEALTHY, stable="v1", candidate=None, weight=0),
            [],
            id="spec-edit-after-failure-clears-degraded-without-retrying",
        ),
        pytest.param(
            empty_result_over_inconclusive_limit,
            dict(phase="Paused", ready=("False", "Paused"), step=1, weight=10, candidate="v2",
                 analysis=(1, "Inconclusive"), events=[("Normal", "Paused")]),
            ["analysis inconclusive", "no data"],
            id="empty-result-over-inconclusive-limit-pauses",
        ),
        pytest.param(
            empty_result_within_inconclusive_limit,
            dict(phase="Progressing", step=1, analysis=(1, "Running"), events=[]),
            [],
            id="empty-result-within-inconclusive-limit-keeps-analysing",
        ),
        pytest.param(
            second_empty_result_over_inconclusive_limit,
            dict(phase="Paused", step=1, analysis=(1, "Inconclusive"), events=[("Normal", "Paused")]),
            ["inconclusiveLimit 1"],
            id="second-empty-result-over-inconclusive-limit-pauses",
        ),
        pytest.param(
            query_error,
            dict(phase="Progressing", step=1, weight=10, analysis=(1, "Running"), events=[]),
            [],
            id="query-error-is-retried-not-a-verdict",
        ),
        pytest.param(
            promote_leaves_inconclusive_pause,
            dict(phase="Progressing", step=3, weight=25, analysis=(3, "Running"), events=[PROMOTED]),
            [],
            id="promote-request-leaves-inconclusive-pause",
        ),
    ],
)
def test_analysis(story, expected, message_has):
    check(story, expected, message_has)


def test_failed_analysis_records_metric_value_and_threshold_in_history():
    entry = failed_measurement().status.history[-1]
    assert entry.reason.startswith("analysis failed: metric error-rate failed")
    assert "0.2 > max 0.05" in entry.reason
    assert entry.time == at(11)


def _at_step_with_stale_run() -> Cluster:
    c = first_good_measurement()  # run of step 1, measured at 11
    c.status = c.status.model_copy(update={"current_step_index": 3})
    return c


def _at_analysis_step_without_spec_analysis() -> Cluster:
    c = healthy_v1()
    c.status = c.status.model_copy(update={"candidate_version": "v2", "current_step_index": 1})
    return c


@pytest.mark.parametrize(
    ("story", "seconds", "due"),
    [
        pytest.param(lambda: canary_waits_for_ready(analysis=ONE_METRIC), 11, [],
                     id="set-weight-step-measures-nothing"),
        pytest.param(analysis_starts, 10, ["error-rate"], id="new-run-measures-every-metric"),
        pytest.param(first_good_measurement, 11, [], id="just-measured"),
        pytest.param(first_good_measurement, 20, [], id="before-the-interval"),
        pytest.param(first_good_measurement, 21, ["error-rate"], id="after-the-interval"),
        pytest.param(_at_step_with_stale_run, 12, ["error-rate"], id="run-of-an-earlier-step-starts-over"),
        pytest.param(empty_result_over_inconclusive_limit, 100, [], id="run-with-a-verdict-measures-nothing"),
        pytest.param(failed_measurement, 100, [], id="no-canary-after-rollback"),
        pytest.param(healthy_v1, 100, [], id="no-canary"),
        pytest.param(_at_analysis_step_without_spec_analysis, 0, [], id="analysis-step-without-spec-analysis"),
    ],
)
def test_due_metrics(story, seconds, due):
    c = story()
    assert [m.name for m in logic.due_metrics(c.rollout_spec, c.status, at(seconds))] == due


@pytest.mark.parametrize(
    ("story", "expected", "message_has"),
    [
        pytest.param(
            new_version_mid_analysis,
            dict(phase="Progressing", stable="v1", candidate="v3", step=0, weight=10, analysis=None,
                 serve=("v1", "v3", "v2"),
                 events=[("Normal", "CandidateReplaced"), ("Normal", "CanaryStarted")]),
            ["waiting for v3 to be ready"],
            id="new-version-mid-analysis-replaces-candidate",
        ),
        pytest.param(
            new_version_at_a_pause,
            dict(phase="Progressing", stable="v1", candidate="v3", step=0, weight=10,
                 events=[("Normal", "CandidateReplaced"), ("Normal", "CanaryStarted"), ("Normal", "Progressing")]),
            [],
            id="new-version-at-a-pause-replaces-candidate",
        ),
    ],
)
def test_candidate_replaced(story, expected, message_has):
    check(story, expected, message_has)


@pytest.mark.parametrize(
    ("story", "expected", "message_has"),
    [
        pytest.param(
            abort_mid_canary,
            dict(phase="Degraded", ready=("False", "Aborted"), stable="v1", candidate=None, canary="v1", weight=0,
                 analysis=None, history=[("abort", "v2", "v1")], events=[("Warning", "Aborted")]),
            ["aborted v2; all traffic on v1 (aborted by alice: bad answers)"],
            id="abort-mid-canary-sends-all-traffic-to-stable",
        ),
        pytest.param(
            same_abort_again,
            dict(phase="Degraded", candidate=None, weight=0, history=[("abort", "v2", "v1")], events=[],
                 changed=False),
            [],
            id="same-abort-request-is-handled-once",
        ),
        pytest.param(
            abort_older_than_last_handled,
            dict(phase="Progressing", candidate="v2", step=1, weight=10, history=[], events=[]),
            [],
            id="abort-older-than-last-handled-request-is-ignored",
        ),
        pytest.param(
            abort_without_canary,
            dict(phase="Healthy", ready=HEALTHY, stable="v1", history=[], events=[]),
            [],
            id="abort-without-canary-changes-nothing",
        ),
        pytest.param(
            promote_skips_analysis_step,
            dict(phase="Progressing", candidate="v2", step=3, weight=25, analysis=(3, "Running"),
                 events=[PROMOTED], history=[]),
            [],
            id="promote-request-skips-current-step",
        ),
        pytest.param(
            full_promote,
            dict(phase="Healthy", ready=HEALTHY, stable="v2", candidate=None, weight=0, analysis=None,
                 history=[("promote", "v1", "v2")], events=[PROMOTED],
                 version_phases={"chat-v2": "Production", "chat-v1": "Deprecated"}),
            [],
            id="full-promote-makes-candidate-stable-now",
        ),
        pytest.param(
            rollback_request_without_canary,
            dict(phase="RolledBack", ready=("True", "RolledBack"), progressing=("False", "RolledBack"),
                 stable="v1", candidate=None, weight=0, serve=("v1", "v2"),
                 history=[("promote", "v1", "v2"), ("rollback", "v2", "v1")], events=[("Warning", "RolledBack")],
                 version_phases={"chat-v1": "Production", "chat-v2": "Deprecated"}),
            ["rolled back from v2 to v1"],
            id="rollback-request-serves-previous-stable",
        ),
        pytest.param(
            rollback_request_then_resync,
            dict(phase="RolledBack", ready=("True", "RolledBack"), stable="v1", events=[], changed=False),
            [],
            id="rollback-request-is-handled-once",
        ),
        pytest.param(
            rollback_request_to_previous_stable,
            dict(phase="RolledBack", stable="v2", history=[("promote", "v1", "v2"), ("promote", "v2", "v3"),
                                                           ("rollback", "v3", "v2")]),
            [],
            id="rollback-request-goes-to-the-stable-before-the-current",
        ),
        pytest.param(
            rollback_request_to_named_version,
            dict(phase="RolledBack", stable="v1", version_phases={"chat-v1": "Production", "chat-v3": "Deprecated"}),
            [],
            id="rollback-request-to-a-named-version",
        ),
    ],
)
def test_requests(story, expected, message_has):
    check(story, expected, message_has)


def test_request_reasons_are_recorded_in_history():
    assert abort_mid_canary().status.history[-1].reason == "aborted by alice: bad answers"
    assert full_promote().status.history[-1].reason == "promoted to 100% by bob"
    assert rollback_request_without_canary().status.history[-1].reason == "rollback by carol: regression"


PINNED_CANARY_REFUSED = (
    "a canary refused by abort or analysis while spec.version pins it restarts on the next reconcile: "
    "_target() only skips failed versions when tracking"
)


@pytest.mark.parametrize(
    ("story", "expected", "message_has"),
    [
        pytest.param(
            pinned_earlier_than_stable,
            dict(phase="RolledBack", ready=("True", "RolledBack"), stable="v1", candidate=None, weight=0,
                 analysis=None, history=[("promote", "v1", "v2"), ("rollback", "v2", "v1")],
                 events=[("Warning", "RolledBack")],
                 version_phases={"chat-v1": "Production", "chat-v2": "Deprecated"}),
            ["rolled back from v2 to v1"],
            id="pinning-an-earlier-version-rolls-back-without-analysis",
        ),
        pytest.param(
            pinned_earlier_then_resync,
            dict(phase="RolledBack", ready=("True", "RolledBack"), stable="v1", events=[], changed=False),
            [],
            id="declarative-rollback-stays-rolled-back",
        ),
        pytest.param(
            pinned_missing_version_without_stable,
            dict(phase="Progressing", ready=("False", "WaitingForVersion"), stable=None, serve=()),
            ["ModelVersion v9 of model chat does not exist"],
            id="pinning-a-missing-version-without-stable-waits",
        ),
        pytest.param(
            pinned_newer_version,
            dict(phase="Progressing", stable="v1", candidate="v2", step=0, weight=10,
                 events=[("Normal", "CanaryStarted"), ("Normal", "Progressing")]),
            [],
            id="pinning-a-newer-version-starts-a-canary",
        ),
        pytest.param(
            pinned_rejected_version,
            dict(ready=("False", "VersionUnusable"), stable="v1", candidate=None, serve=("v1",), weight=0),
            ["v2", "Rejected"],
            id="pinning-a-rejected-version-keeps-stable-serving",
        ),
        pytest.param(
            pinned_stable_mid_canary,
            dict(stable="v1", candidate=None, weight=0, history=[], version_phases={}),
            [],
            id="pinning-the-stable-version-mid-canary-ends-the-canary",
        ),
        pytest.param(
            candidate_rejected_mid_canary,
            dict(stable="v1", candidate=None, weight=0, history=[], version_phases={}),
            [],
            id="candidate-rejected-mid-canary-is-not-promoted",
        ),
        pytest.param(
            abort_while_pinned,
            dict(phase="Degraded", ready=("False", "Aborted"), stable="v1", candidate=None, weight=0,
                 events=[("Warning", "Aborted")]),
            [],
            id="abort-while-pinned-stays-aborted",
        ),
        pytest.param(
            failed_analysis_while_pinned_then_resync,
            dict(phase="Degraded", ready=("False", "AnalysisFailed"), stable="v1", candidate=None, weight=0,
                 events=[]),
            [],
            id="failed-analysis-while-pinned-stays-rolled-back",
        ),
        pytest.param(
            rollback_request_while_pinned,
            dict(phase="RolledBack", stable="v1", candidate=None, weight=0),
            [],
            id="rollback-request-while-pinned-stays-rolled-back",
        ),
    ],
)
def test_pinned_version(story, expected, message_has):
    check(story, expected, message_has)


@pytest.mark.parametrize(
    ("story", "expected", "message_has"),
    [
        pytest.param(
            invalid_spec_mid_canary,
            dict(phase="Degraded", ready=("False", "InvalidSpec"), stable="v1", candidate="v2", weight=10,
                 serve=("v1", "v2"), events=[("Warning", "Degraded")]),
            ["spec.strategy.canary.steps[1].analysis.templates", "latency"],
            id="analysis-step-naming-unknown-metric-keeps-what-serves",
        ),
        pytest.param(
            version_and_track_both_set,
            dict(phase="Degraded", ready=("False", "InvalidSpec"), stable=None, serve=()),
            ["exactly one of spec.version (pinned) or spec.track"],
            id="version-and-track-both-set",
        ),
        pytest.param(
            weight_over_100,
            dict(phase="Degraded", ready=("False", "InvalidSpec")),
            ["spec.strategy.canary.steps.0.setWeight"],
            id="set-weight-over-100",
        ),
        pytest.param(
            invalid_spec_fixed,
            dict(phase="Progressing", ready=("False", "Progressing"), candidate="v2", step=1, weight=10),
            [],
            id="fixed-spec-resumes-the-canary",
        ),
    ],
)
def test_invalid_spec(story, expected, message_has):
    check(story, expected, message_has)


def test_unknown_metric_in_analysis_step_is_an_invalid_spec():
    parsed = spec(analysis=ONE_METRIC, strategy=UNKNOWN_METRIC_STEP)
    assert isinstance(parsed, InvalidSpec)
    assert [p.field for p in parsed.problems] == ["spec.strategy.canary.steps[1].analysis.templates"]


NOT_A_FIXED_POINT = "the phase message set on a transition is rewritten on the next reconcile (one extra status patch)"


@pytest.mark.parametrize(
    "story",
    [
        pytest.param(no_versions, id="waiting-for-version"),
        pytest.param(first_version_ready, id="healthy"),
        pytest.param(canary_waits_for_ready, id="waiting-for-candidate-ready"),
        pytest.param(timed_pause_starts, id="timed-pause"),
        pytest.param(untimed_pause_after_timed_pause, id="untimed-pause"),
        pytest.param(first_good_measurement, id="analysis-running"),
        pytest.param(empty_result_over_inconclusive_limit, id="analysis-inconclusive"),
        pytest.param(failed_measurement, id="rolled-back-by-analysis"),
        pytest.param(abort_mid_canary, id="aborted"),
        pytest.param(rollback_request_without_canary, id="rolled-back-by-request"),
        pytest.param(pinned_earlier_than_stable, id="declarative-rollback"),
        pytest.param(pinned_missing_version_without_stable, id="pinned-version-missing"),
        pytest.param(invalid_spec_mid_canary, id="invalid-spec"),
        pytest.param(old_version_after_scale_down_delay, id="healthy-after-scale-down"),
        pytest.param(first_version_deploying, id="first-version-deploying",),
        pytest.param(canary_walks_to_promotion, id="just-promoted",),
    ],
)
def test_redeciding_the_same_inputs_changes_nothing(story):
    again = story().redecide()
    assert again.status_patch == {}
    assert again.events == ()


@pytest.mark.parametrize(
    ("seconds_after_promotion", "expected_serve", "expected_requeue"),
    [
        pytest.param(0, ("v2", "v1"), 30, id="at-promotion-requeue-after-the-delay"),
        pytest.param(20, ("v2", "v1"), 10, id="midway-requeue-after-the-rest-of-the-delay"),
        pytest.param(30, ("v2",), None, id="when-the-delay-has-passed-old-pods-go"),
    ],
)
def test_scale_down_delay_requeue(seconds_after_promotion, expected_serve, expected_requeue):
    c = canary_walks_to_promotion()  # promoted at t=12
    d = c.reconcile(12 + seconds_after_promotion)
    assert (d.serve, d.requeue_after) == (expected_serve, expected_requeue)


def test_history_entries_are_timestamped_and_capped():
    c = Cluster(spec(), versions=[version(1)], ready={"v1"})
    c.reconcile(0)
    for n in range(2, 104):
        c.approve(n, ready=True)
        c.reconcile(n)
    history = c.status.history
    assert len(history) == logic.HISTORY_LIMIT
    assert (history[-1].from_version, history[-1].to_version, history[-1].time) == ("v102", "v103", at(103))


def test_parse_status_falls_back_to_empty_on_garbage():
    assert logic.parse_status({"canaryWeight": 500}) == RolloutStatus()
    assert logic.parse_status(None) == RolloutStatus()
