"""The latency benchmark's arrival log: gaps in its watch are filled by a list, and a run is not cut
short while objects still arrive."""

from __future__ import annotations

import threading
import time

from benchmarks import operator_latency


def _listing(names, version="7"):
    return {
        "metadata": {"resourceVersion": version},
        "items": [{"metadata": {"name": n, "creationTimestamp": "2026-12-07T00:00:00Z"}} for n in names],
    }


def test_a_list_records_the_objects_not_seen_yet_and_returns_its_version():
    names = ["a-prepare", "a-train"]
    log = operator_latency.ArrivalLog(lambda namespace, **_: _listing(names, "42"), "ns")
    log.seen["a-prepare"] = 1.0  # seen on the watch before the gap
    before = time.time()
    assert log._list() == "42"  # noqa: SLF001
    assert log.seen["a-prepare"] == 1.0  # its watch arrival stands
    assert log.seen["a-train"] >= before  # arrives when the list saw it: an upper bound
    assert log.created["a-train"] == "2026-12-07T00:00:00Z"


def test_waiting_goes_on_while_other_objects_arrive():
    log = operator_latency.ArrivalLog(lambda namespace, **_: _listing([]), "ns")

    def arrive():
        for i in range(6):  # prepare Jobs for 0.6 s, longer than the stall limit
            time.sleep(0.1)
            with log.changed:
                log.seen[f"job-{i}-prepare"] = time.time()
                log.changed.notify_all()
        with log.changed:
            log.seen["job-0-train"] = time.time()
            log.changed.notify_all()

    thread = threading.Thread(target=arrive)
    thread.start()
    log.wait_for({"job-0-train"}, timeout=10, stall=0.35)
    thread.join()
    assert "job-0-train" in log.seen


def test_waiting_stops_when_nothing_arrives_for_the_stall_limit():
    log = operator_latency.ArrivalLog(lambda namespace, **_: _listing([]), "ns")
    started = time.monotonic()
    log.wait_for({"never"}, timeout=10, stall=0.3)
    assert 0.3 <= time.monotonic() - started < 5


def test_a_watch_that_fell_behind_is_filled_by_a_list_and_resumes_from_its_version(monkeypatch):
    from kubernetes import client, watch

    listed = [["early"], ["early", "in-the-gap"]]
    streams = []

    def list_fn(namespace, **kwargs):
        return _listing(listed.pop(0) if listed else [], version=str(len(streams)))

    log = operator_latency.ArrivalLog(list_fn, "ns")

    class FakeWatch:
        def stream(self, fn, **kwargs):
            streams.append(kwargs["resource_version"])
            if len(streams) == 1:
                raise client.ApiException(status=410, reason="Gone: too old resource version")
            yield {"type": "ADDED", "raw_object": {"metadata": {"name": "late", "resourceVersion": "9", "creationTimestamp": "t"}}}
            log.stop()
            yield {"type": "ADDED", "raw_object": {"metadata": {"name": "never-read", "resourceVersion": "10", "creationTimestamp": "t"}}}

        def stop(self):
            pass

    monkeypatch.setattr(watch, "Watch", FakeWatch)
    log.start()
    log._thread.join(5)  # noqa: SLF001
    assert log.gaps == 1
    assert {"early", "in-the-gap", "late"} <= log.seen.keys()
    assert streams == ["0", "1"]  # the second watch starts from the re-list's version
