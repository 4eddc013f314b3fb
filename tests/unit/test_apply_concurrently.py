"""`apply.concurrently`: a reconcile's independent requests in flight together, results in order."""

from __future__ import annotations

import threading

import pytest

from finetune_operator.k8s import apply, client


def test_results_come_back_in_the_items_order_and_the_calls_overlap():
    all_in_flight = threading.Barrier(4, timeout=10)  # breaks (and fails the test) if the calls ran one by one

    def call(item):
        all_in_flight.wait()
        return item * 10

    assert apply.concurrently(call, [1, 2, 3, 4]) == [10, 20, 30, 40]


def test_every_call_ends_before_the_first_error_is_raised():
    finished = []
    release = threading.Event()

    def call(item):
        if item == "bad":
            raise ValueError("refused")
        release.wait(5)
        finished.append(item)
        return item

    timer = threading.Timer(0.2, release.set)
    timer.start()
    with pytest.raises(ValueError, match="refused"):
        apply.concurrently(call, ["a", "bad", "b"])
    assert sorted(finished) == ["a", "b"]


def test_one_item_or_none_runs_on_the_callers_thread():
    caller = threading.current_thread()
    assert apply.concurrently(lambda item: threading.current_thread() is caller, [1]) == [True]
    assert apply.concurrently(lambda item: item, []) == []


def test_the_pool_is_bounded_by_the_connections_the_client_keeps_for_it():
    assert apply._pool._max_workers == client.CONCURRENT_REQUEST_THREADS  # noqa: SLF001
