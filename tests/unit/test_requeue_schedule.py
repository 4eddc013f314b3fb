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


def test_the_daemon_reconciles_when_due_and_sleeps_what_the_decision_said(monkeypatch):
    """The Rollout daemon: reconcile once due, then wait the decision's requeue_after."""
    schedule = locks.Schedule()
    monkeypatch.setattr(handler, "_schedule", schedule)
    reconciled: list[float] = []

    def reconcile_object(body):
        reconciled.append(time.monotonic())
        schedule.due_in(KEY, 0.4)  # what reconcile_object does with decision.requeue_after = 0.4

    monkeypatch.setattr(handler, "reconcile_object", reconcile_object)

    class Stopped:
        def __init__(self):
            self.flag = False

        def __bool__(self):
            return self.flag

    stopped = Stopped()

    async def main():
        schedule.due_in(KEY, 0)
        task = asyncio.create_task(handler.requeue(namespace="team", name="ro", stopped=stopped))
        await asyncio.sleep(1.5)
        stopped.flag = True
        schedule.due_in(KEY, 0)  # wake it to see the flag
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(main())
    gaps = [b - a for a, b in zip(reconciled, reconciled[1:])]
    assert 3 <= len(reconciled) <= 5, reconciled
    assert all(0.3 <= gap < 1.0 for gap in gaps), gaps
