"""kopf's per-event success lines go to DEBUG; a lifecycle handler's success stays at INFO."""

from __future__ import annotations

import logging

import pytest

from finetune_operator import handlers  # noqa: F401 - registers the handlers
from finetune_operator import logging_setup


def _record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)


@pytest.fixture
def kopf_objects_level():
    logger = logging.getLogger("kopf.objects")
    saved = logger.level
    yield logger.setLevel
    logger.setLevel(saved)


def test_the_routine_handlers_are_the_event_handlers_timers_and_daemons_only():
    routine = logging_setup.routine_handlers()
    assert {"Handler 'track_ttl'", "Handler 'child_changed'", "Timer 'resync'", "Daemon 'requeue'"} <= routine
    # The create/update/resume handlers share the id "reconcile" with the ModelVersion's timer;
    # kopf names them by kind, so only the timer's line is routine.
    assert "Timer 'reconcile'" in routine
    assert "Handler 'reconcile'" not in routine
    assert "Handler 'stop'" not in routine


def test_an_event_handlers_success_is_dropped_at_info(kopf_objects_level):
    kopf_objects_level(logging.INFO)
    routine = logging_setup.RoutineSuccesses(lambda: {"Handler 'track_ttl'"})
    assert routine.filter(_record("Handler 'track_ttl' succeeded.")) is False


def test_an_event_handlers_success_is_kept_at_debug_as_debug(kopf_objects_level):
    kopf_objects_level(logging.DEBUG)
    routine = logging_setup.RoutineSuccesses(lambda: {"Timer 'resync'"})
    record = _record("Timer 'resync' succeeded.")
    assert routine.filter(record) is True
    assert (record.levelno, record.levelname) == (logging.DEBUG, "DEBUG")


@pytest.mark.parametrize(
    "msg, level",
    [
        ("Handler 'reconcile' succeeded.", logging.INFO),  # a create handler: a step of the object's life
        ("Handler 'track_ttl' failed with an exception and will try again in 10 seconds: boom", logging.ERROR),
        ("Creation is processed: 1 succeeded; 0 failed.", logging.INFO),
    ],
)
def test_other_lines_pass_unchanged(kopf_objects_level, msg, level):
    kopf_objects_level(logging.INFO)
    routine = logging_setup.RoutineSuccesses(lambda: {"Handler 'track_ttl'", "Timer 'reconcile'"})
    record = _record(msg, level)
    assert routine.filter(record) is True
    assert record.levelno == level


def test_configuring_twice_keeps_one_filter():
    from finetune_operator.config import OperatorConfig

    config = OperatorConfig.from_env({})
    root = logging.getLogger()
    root_handlers, levels = list(root.handlers), {name: logging.getLogger(name).level for name in ("", "kopf", "kubernetes", "urllib3")}
    try:
        logging_setup.configure(config)
        logging_setup.configure(config)
        filters = [f for f in logging.getLogger("kopf.objects").filters if isinstance(f, logging_setup.RoutineSuccesses)]
        assert len(filters) == 1
    finally:
        for handler in list(root.handlers):
            if handler not in root_handlers:
                root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
