"""The threads that run reconciles: kopf's synchronous handlers and the reconciles child events ask for.

A child's watch event (a Job, Pod or ConfigMap of a FineTuneJob moved) does not hold kopf's event
machinery while its reconcile waits for a thread: the handler is a coroutine that checks in the
event loop whether the change matters and whether a reconcile of that job is already queued,
queues one if not, and returns. kopf then drops the event and its body, and no thread is taken
by an event that only confirms work already queued: under a burst the queue holds at most one
entry per job, however many events its children send.

One pool serves both kopf's synchronous handlers (`settings.execution.executor`) and these queued
reconciles, so `FINETUNE_WORKERS` bounds the threads that call the API however the work arrives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from finetune_operator.config import OperatorConfig

logger = logging.getLogger(__name__)

_guard = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def pool(max_workers: int | None = None) -> ThreadPoolExecutor:
    """The reconcile threads (created on first use; `max_workers` counts only then)."""
    global _pool
    with _guard:
        if _pool is None:
            if max_workers is None:
                max_workers = OperatorConfig.model_fields["workers"].default
            _pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="reconcile")
        return _pool


def submit(call: Callable[..., Any], *args: Any, what: str) -> Future:
    """Run `call(*args)` on a reconcile thread; nobody waits for it, so a failure is logged here
    (`what` names the work). The periodic resync repeats whatever a failure left undone."""
    future = pool().submit(call, *args)
    future.add_done_callback(lambda done: _log_failure(done, what))
    return future


def _log_failure(done: Future, what: str) -> None:
    error = done.exception()
    if error is not None:
        logger.error("%s failed: %s", what, error, exc_info=error)
