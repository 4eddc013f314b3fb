"""Coming back when the logic says: a Rollout's decision sets when it is due, its daemon sleeps
exactly that long and is woken early when a later decision (from any thread) moves the time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from finetune_operator.handlers import locks
from finetune_operator.handlers import rollout as handler

KEY = ("team", "ro")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_decision_sets_when_the_object_is_due():
    clock = Clock()
    schedule = locks.Schedule(clock=clock)
    schedule.due_in(KEY, 7.5)
    assert schedule.delay(KEY, default=60) == pytest.approx(7.5)
    clock.now += 5
    assert schedule.delay(KEY, default=60) == pytest.approx(2.5)
    schedule.due_in(KEY, 30)  # a later decision moves it
    assert schedule.delay(KEY, default=60) == pytest.approx(30)


def test_an_object_nothing_scheduled_yet_is_due_after_the_default():
    clock = Clock()
    schedule = locks.Schedule(clock=clock)
    assert schedule.delay(KEY, default=60) == pytest.approx(60)
    clock.now += 59
    assert schedule.delay(KEY, default=60) == pytest.approx(1), "the default is fixed once, not pushed back"


def test_a_negative_delay_is_due_now():
    schedule = locks.Schedule(clock=Clock())
    schedule.due_in(KEY, -3)
    assert schedule.delay(KEY, default=60) == 0


def test_the_wait_lasts_as_long_as_asked():
    schedule = locks.Schedule()

    async def main():
        started = time.monotonic()
        await schedule.wait(KEY, 0.3)
        return time.monotonic() - started

    assert 0.25 <= asyncio.run(main()) < 2


def test_a_decision_on_another_thread_wakes_the_waiter_early():
    schedule = locks.Schedule()

    async def main():
        waiter = asyncio.create_task(schedule.wait(KEY, 30))
        await asyncio.sleep(0.1)  # the waiter has registered
        started = time.monotonic()
        threading.Thread(target=schedule.due_in, args=(KEY, 0.5)).start()
        await asyncio.wait_for(waiter, timeout=5)
        return time.monotonic() - started, schedule.delay(KEY, default=60)

    woken_after, delay = asyncio.run(main())
    assert woken_after < 2
    assert 0 < delay <= 0.5


def test_forgetting_drops_the_schedule():
    clock = Clock()
    schedule = locks.Schedule(clock=clock)
    schedule.due_in(KEY, 1)
    schedule.forget(KEY)
    assert schedule.delay(KEY, default=60) == pytest.approx(60)


class Stopped:
    """kopf's stop flag as the daemon reads it: truthy once the daemon is to stop."""

    def __init__(self):
        self.flag = False

    def __bool__(self):
        return self.flag


def run_daemon(schedule, *, seconds):
    """Run the Rollout daemon, due at once, for `seconds`; then stop it and wait for its exit."""
    stopped = Stopped()

    async def main():
        schedule.due_in(KEY, 0)
        task = asyncio.create_task(handler.requeue(namespace="team", name="ro", stopped=stopped))
        await asyncio.sleep(seconds)
        stopped.flag = True
        schedule.due_in(KEY, 0)  # wake it to see the flag
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(main())


def test_the_daemon_reconciles_when_due_and_sleeps_what_the_decision_said(monkeypatch):
    """The Rollout daemon: reconcile once due, then wait the decision's requeue_after."""
    schedule = locks.Schedule()
    monkeypatch.setattr(handler, "_schedule", schedule)
    reconciled: list[float] = []

    def reconcile_object(body, measured=None, measured_for=None):
        assert measured is None and measured_for is None, "nothing was due to be measured"
        reconciled.append(time.monotonic())
        schedule.due_in(KEY, 0.4)  # what reconcile_object does with decision.requeue_after = 0.4

    monkeypatch.setattr(handler, "reconcile_object", reconcile_object)
    monkeypatch.setattr(handler, "due_analysis", lambda namespace, name: None)

    run_daemon(schedule, seconds=1.5)
    gaps = [b - a for a, b in zip(reconciled, reconciled[1:])]
    assert 3 <= len(reconciled) <= 5, reconciled
    assert all(0.3 <= gap < 1.0 for gap in gaps), gaps


def test_due_measurements_are_taken_off_the_lock_and_handed_to_the_reconcile(monkeypatch):
    """The daemon measures what is due first (on the analysis pool), then reconciles with it."""
    schedule = locks.Schedule()
    monkeypatch.setattr(handler, "_schedule", schedule)
    due = handler.DueAnalysis(key=("v2", "v1", 1), address="http://127.0.0.1:9", metrics=("m",), variables=None)
    monkeypatch.setattr(handler, "due_analysis", lambda namespace, name: due)
    held = []

    async def measure_due(found):
        assert found is due
        held.append(handler._lock("team", "ro").locked())  # noqa: SLF001
        return {"m": "value"}

    monkeypatch.setattr(handler, "measure_due", measure_due)
    calls = []

    def reconcile_object(body, measured=None, measured_for=None):
        calls.append((measured, measured_for))
        schedule.due_in(KEY, 60)

    monkeypatch.setattr(handler, "reconcile_object", reconcile_object)

    run_daemon(schedule, seconds=0.5)
    assert calls[0] == ({"m": "value"}, ("v2", "v1", 1))
    assert held == [False], "measured without holding the Rollout's lock"


def test_a_prometheus_that_never_answers_becomes_an_error_in_bounded_time(monkeypatch):
    """measure_due bounds each metric: a hung query is an error for that metric, not a hang."""
    monkeypatch.setattr(handler.PrometheusProvider, "__init__", lambda self, address: setattr(self, "timeout", 0.05))
    release = threading.Event()
    monkeypatch.setattr(handler, "measure_metric", lambda provider, metric, variables: release.wait(30))

    class Metric:
        name = "errorRate"

    due = handler.DueAnalysis(key=("v2", "v1", 1), address="http://127.0.0.1:9", metrics=(Metric(),), variables=None)
    started = time.monotonic()
    try:
        result = asyncio.run(handler.measure_due(due))
    finally:
        release.set()
    assert time.monotonic() - started < 10
    assert "no answer within" in result["errorRate"].error


def test_rollouts_are_indexed_by_namespace_and_model():
    assert handler.rollouts_by_model(namespace="team", name="ro", spec={"modelName": "earnings"}) == {("team", "earnings"): "ro"}


def test_a_version_change_reconciles_the_rollouts_of_its_model_from_the_index(monkeypatch):
    reconciled = []
    monkeypatch.setattr(handler, "reconcile_object", lambda body: reconciled.append(body["metadata"]["name"]))
    monkeypatch.setattr(handler.client, "custom_objects", lambda: pytest.fail("listed Rollouts"))
    index = {("team", "earnings"): ["ro-b", "ro-a"], ("team", "other"): ["ro-c"], ("prod", "earnings"): ["ro-d"]}
    handler.version_changed(body={"spec": {"modelName": "earnings"}}, namespace="team", type="MODIFIED", rollouts_by_model=index)
    assert reconciled == ["ro-a", "ro-b"]


# ---- Deadlines: one thread acting on wall-clock deadlines (finished FineTuneJobs' TTLs)

Deadlines = locks.Deadlines


def test_each_deadline_is_acted_on_when_it_comes_not_before():
    acted: list[tuple[tuple[str, str], float]] = []
    done = threading.Event()

    def act(key):
        acted.append((key, time.time()))
        if len(acted) == 2:
            done.set()

    deadlines = Deadlines(act)
    deadlines.start()
    try:
        start = time.time()
        deadlines.set(("ns", "later"), start + 0.6)
        deadlines.set(("ns", "sooner"), start + 0.2)
        deadlines.set(("ns", "cancelled"), start + 0.1)
        deadlines.cancel(("ns", "cancelled"))
        assert done.wait(5)
    finally:
        deadlines.stop()
    assert [key for key, _ in acted] == [("ns", "sooner"), ("ns", "later")]
    assert acted[0][1] >= start + 0.2 and acted[1][1] >= start + 0.6
    assert deadlines.pending() == {}


def test_moving_a_deadline_earlier_wakes_the_sleeper():
    acted = threading.Event()
    deadlines = Deadlines(lambda key: acted.set())
    deadlines.start()
    try:
        deadlines.set(("ns", "job"), time.time() + 3600)
        time.sleep(0.1)  # the thread sleeps toward the hour
        deadlines.set(("ns", "job"), time.time())
        assert acted.wait(5), "an earlier deadline must wake the thread, not wait for the old one"
    finally:
        deadlines.stop()


def test_a_failed_action_is_tried_again():
    calls: list[float] = []
    retried = threading.Event()

    def act(key):
        calls.append(time.time())
        if len(calls) == 1:
            raise RuntimeError("API server away")
        retried.set()

    deadlines = Deadlines(act)
    deadlines.RETRY_SECONDS = 0.2
    deadlines.start()
    try:
        deadlines.set(("ns", "job"), time.time())
        assert retried.wait(5)
    finally:
        deadlines.stop()
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2
