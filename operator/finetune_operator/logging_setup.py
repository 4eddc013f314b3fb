"""Logging of the operator process: kopf's formatters, our level.

kopf's own formatters are used for both formats because they attach the Kubernetes object a
log line is about (`object` in JSON; a `[namespace/name]` prefix in text), which is what makes
an operator's logs searchable per FineTuneJob.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import kopf

from finetune_operator.config import OperatorConfig


def configure(config: OperatorConfig) -> None:
    kopf.configure(
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object" if config.log_format == "json" else None,
        log_prefix=config.log_format == "text",
    )
    level = getattr(logging, config.log_level)
    logging.getLogger().setLevel(level)
    logging.getLogger("kopf").setLevel(level)
    # The Kubernetes client logs every request body at DEBUG; keep it quieter than us.
    logging.getLogger("kubernetes").setLevel(max(level, logging.INFO))
    logging.getLogger("urllib3").setLevel(max(level, logging.WARNING))
    objects = logging.getLogger("kopf.objects")
    for old in [f for f in objects.filters if isinstance(f, RoutineSuccesses)]:
        objects.removeFilter(old)
    objects.addFilter(RoutineSuccesses(routine_handlers))


_SUCCEEDED = " succeeded."


class RoutineSuccesses(logging.Filter):
    """kopf's "Handler 'x' succeeded." lines, at DEBUG for the handlers that run on every watch
    event or timer tick.

    kopf logs every handler's success at INFO. For the event handlers, timers and daemons that is
    a line for every Pod heartbeat and every job's resync, thousands a minute that say nothing; at
    300 FineTuneJobs, writing them took 5% of the event loop that every watch stream shares. They
    stay visible at FINETUNE_LOG_LEVEL=DEBUG; a create, update, resume or delete handler's success
    (a step of an object's life) stays at INFO.
    """

    def __init__(self, routine: Callable[[], Collection[str]]):
        super().__init__()
        self._routine = routine
        self._names: frozenset[str] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str) or not record.msg.endswith(_SUCCEEDED):
            return True
        if self._names is None:  # the handlers register after logging is configured
            self._names = frozenset(self._routine())
        if record.msg[: -len(_SUCCEEDED)] not in self._names:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def routine_handlers() -> frozenset[str]:
    """How kopf names the registered event handlers, timers and daemons in its logs
    ("Handler 'track_ttl'", "Timer 'resync'"): a create handler of the same id is named alike
    only when it is of the same kind."""
    registry = kopf.get_default_registry()
    # kopf lists handlers only per registry; these two hold the event handlers and the timers and daemons.
    routine = (*registry._watching.get_all_handlers(), *registry._spawning.get_all_handlers())  # noqa: SLF001
    return frozenset(str(handler) for handler in routine)
