"""A finished FineTuneJob costs nothing: no timer, and the reconcile reads no API.

Every API read and write the handler could make is replaced by a recorder; a finished job has no
timer (its TTL is a deadline its watch events set, acted on by one thread: one delete), and its
reconcile no LIST.
"""

from __future__ import annotations

import asyncio
import datetime

import pytest

from finetune_operator import config as operator_config
from finetune_operator.handlers import finetunejob as handler

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
SPEC = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "dataset": {"uri": "s3://data/t.jsonl"},
}
FINISHED = {"phase": "Succeeded", "completionTime": "2026-01-01T11:59:00Z", "observedGeneration": 1}


def body(spec=SPEC, status=FINISHED, generation=1):
    return {
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "ft", "namespace": "team", "uid": "uid-1", "generation": generation},
        "spec": spec,
        "status": status,
    }


@pytest.fixture
def api(monkeypatch):
    calls: list[tuple] = []

    def recorder(name):
        def record(*args, **kwargs):
            calls.append((name, *args))
            if name == "children":
                return handler.finetunejob.Children()
            return None

        return record

    for target, attr, name in [
        (handler._cache, "children", "children"),  # noqa: SLF001
        (handler._cache, "model_version", "registry"),  # noqa: SLF001
        (handler.registry, "register", "register"),
        (handler.dryrun, "refusals", "dryrun"),
        (handler.apply, "delete", "delete"),
        (handler.apply, "create", "create"),
        (handler.status, "patch", "status"),
        (handler.events, "record", "event"),
        (handler, "reconcile_object", "reconcile"),
    ]:
        monkeypatch.setattr(target, attr, recorder(name))
    monkeypatch.setattr(handler, "_now", lambda: NOW)
    monkeypatch.setattr(operator_config, "_current", operator_config.OperatorConfig())
    return calls


def resync(obj):
    handler.resync(body=obj, spec=obj["spec"], status=obj["status"], namespace="team", name="ft")


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_job_without_ttl_costs_no_request(api, phase):
    resync(body(status={**FINISHED, "phase": phase}))
    assert api == []


@pytest.fixture
def ttl(monkeypatch):
    """The TTL deadlines, without their thread; the watch cache answers with `cached`."""
    deadlines = handler.locks.Deadlines(handler._ttl_passed, clock=lambda: NOW.timestamp())  # noqa: SLF001
    monkeypatch.setattr(handler, "_ttl", deadlines)
    cached: dict = {}
    monkeypatch.setattr(handler._cache, "finetunejob", lambda namespace, name: cached.get((namespace, name)))  # noqa: SLF001
    return deadlines, cached


def event(obj, type="MODIFIED"):
    asyncio.run(handler.track_ttl(type=type, body=obj, namespace="team", name="ft"))


def test_a_finished_job_with_a_ttl_has_a_deadline_not_a_timer(api, ttl):
    deadlines, cached = ttl
    obj = body(spec={**SPEC, "ttlSecondsAfterFinished": 120})  # finished 60 s ago
    assert handler.needs_timer(spec=obj["spec"], status=obj["status"]) is False
    event(obj, type=None)  # the initial listing arms it too
    assert deadlines.pending() == {("team", "ft"): NOW.timestamp() + 60}
    # The deadline comes early (a clock step): the cache says not yet, so it waits again, reading nothing.
    cached[("team", "ft")] = obj
    handler._ttl_passed(("team", "ft"))  # noqa: SLF001
    assert api == [] and deadlines.pending() == {("team", "ft"): NOW.timestamp() + 60}
    # An edit shortening the TTL moves the deadline; when it comes, one delete.
    shorter = body(spec={**SPEC, "ttlSecondsAfterFinished": 60})
    event(shorter)
    assert deadlines.pending() == {("team", "ft"): NOW.timestamp()}
    cached[("team", "ft")] = shorter
    handler._ttl_passed(("team", "ft"))  # noqa: SLF001
    assert api == [("delete", "finetune.ai/v1alpha1", "FineTuneJob", "team", "ft")]


@pytest.mark.parametrize(
    ("obj", "type"),
    [
        (body(), "MODIFIED"),  # finished, no TTL
        (body(spec={**SPEC, "ttlSecondsAfterFinished": 60}, status={"phase": "Training"}), "MODIFIED"),  # still running
        (body(spec={**SPEC, "ttlSecondsAfterFinished": 60}), "DELETED"),
    ],
)
def test_no_deadline_without_a_ttl_to_wait_for(api, ttl, obj, type):
    deadlines, _ = ttl
    deadlines.set(("team", "ft"), 1.0)
    event(obj, type)
    assert deadlines.pending() == {} and api == []


def test_a_deadline_whose_job_is_gone_deletes_nothing(api, ttl):
    handler._ttl_passed(("team", "ft"))  # noqa: SLF001
    assert api == []


@pytest.mark.parametrize(
    "status",
    [
        {"phase": "Training"},
        {},
        # Failed without a completion time (an invalid spec) may still start: it is resynced.
        {"phase": "Failed"},
    ],
)
def test_an_unfinished_job_is_resynced(api, status):
    resync(body(status=status, spec={**SPEC, "ttlSecondsAfterFinished": 0}))
    assert [call[0] for call in api] == ["reconcile"]


def test_reconciling_a_finished_job_reads_no_children(api):
    owner = handler.builders.Owner(name="ft", namespace="team", uid="uid-1")
    decision = handler._reconcile_locked(body(), owner)  # noqa: SLF001
    assert decision.status.phase == "Succeeded"
    assert api == []
    # An edit of a finished job: its generation is recorded, still without a read.
    decision = handler._reconcile_locked(body(generation=2), owner)  # noqa: SLF001
    assert [call[0] for call in api] == ["status"]
    assert decision.status.observed_generation == 2


def test_reconciling_a_running_job_reads_its_children_from_the_cache(api):
    owner = handler.builders.Owner(name="ft", namespace="team", uid="uid-1")
    handler._reconcile_locked(body(status={"phase": "Training"}), owner)  # noqa: SLF001
    assert [call[0] for call in api][:2] == ["children", "registry"]


@pytest.mark.parametrize(
    ("spec", "status", "expected"),
    [
        (SPEC, FINISHED, False),  # finished, no TTL: no timer at all
        ({**SPEC, "ttlSecondsAfterFinished": 60}, FINISHED, False),  # the TTL is a deadline, not a timer
        (SPEC, {"phase": "Training"}, True),
        (SPEC, {"phase": "Failed"}, True),  # an invalid spec may still start: resynced
        (SPEC, {}, True),
    ],
)
def test_only_jobs_that_can_still_change_by_themselves_have_a_timer(spec, status, expected):
    assert handler.needs_timer(spec=spec, status=status) is expected
