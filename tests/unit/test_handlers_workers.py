"""Child events queue one reconcile per job and return at once; the reconcile runs on a worker thread."""

from __future__ import annotations

import asyncio
import logging
import threading

from finetune_operator.handlers import finetunejob as handler
from finetune_operator.handlers import workers


def test_a_burst_of_child_events_queues_one_reconcile_per_job_and_none_waits_for_it(monkeypatch):
    started = threading.Event()
    release = threading.Event()
    calls: list[tuple[str, str]] = []

    def reconcile(namespace, name, uid, on_locked=None):
        calls.append((namespace, name))
        started.set()
        release.wait(5)
        if on_locked is not None:
            on_locked()

    monkeypatch.setattr(handler, "_reconcile_fresh", reconcile)
    monkeypatch.setattr(handler, "_bind", lambda kwargs: None)
    pod = {"kind": "Pod", "metadata": {"uid": "u-{i}"}, "status": {"phase": "Running"}}

    async def burst():
        for i in range(50):  # 50 events of job a's children, while its reconcile cannot run yet
            body = {**pod, "metadata": {"uid": f"pod-{i}"}}
            await handler.child_changed(labels={handler.FINETUNEJOB_LABEL: "a"}, namespace="ns", type="MODIFIED", body=body)
        await handler.child_changed(labels={handler.FINETUNEJOB_LABEL: "b"}, namespace="ns", type="MODIFIED",
                                    body={**pod, "metadata": {"uid": "pod-b"}})

    asyncio.run(asyncio.wait_for(burst(), timeout=5))  # returns while no reconcile has finished
    assert started.wait(5)
    release.set()
    workers.pool().submit(lambda: None).result(5)
    deadline = threading.Event()
    for _ in range(50):
        if sorted(set(calls)) == [("ns", "a"), ("ns", "b")]:
            break
        deadline.wait(0.1)
    assert sorted(calls) == [("ns", "a"), ("ns", "b")]  # one per job, not one per event


def test_a_failed_queued_reconcile_is_logged_with_what_failed(caplog):
    def boom():
        raise RuntimeError("API server went away")

    with caplog.at_level(logging.ERROR, logger=workers.__name__):
        future = workers.submit(boom, what="reconcile of FineTuneJob ns/a")
        assert isinstance(future.exception(5), RuntimeError)
        for _ in range(50):
            if caplog.records:
                break
            threading.Event().wait(0.05)
    assert "reconcile of FineTuneJob ns/a failed: API server went away" in caplog.text


def test_kopf_runs_its_synchronous_handlers_on_the_same_threads():
    from finetune_operator.__main__ import settings_for
    from finetune_operator.config import OperatorConfig

    settings = settings_for(OperatorConfig.from_env({}))
    assert settings.execution.executor is workers.pool()
