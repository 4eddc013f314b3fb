"""Per-object bookkeeping for the handlers (kopf's handler threads are shared).

- `ObjectLocks`: one lock per object, so reconciles of the same object never overlap;
- `Pending`: which objects already have a reconcile waiting for their lock (bursts coalesce);
- `Fingerprints`: the last fingerprint seen per child, so events that change nothing are dropped;
- `Schedule`: when each object's next reconcile is due, and a way to wake the one waiting for it;
- `Deadlines`: wall-clock deadlines (finished FineTuneJobs' TTLs), one thread acting on each in turn.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class ObjectLocks:
    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], threading.Lock] = collections.defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def __call__(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, name)]

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)


class Pending:
    """Keys with a reconcile queued and not started yet."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._guard = threading.Lock()

    def claim(self, key: tuple[str, str]) -> bool:
        """True when the caller should reconcile; False when one is already queued for `key`."""
        with self._guard:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def release(self, key: tuple[str, str]) -> None:
        """The queued reconcile started (or gave up): later events need one of their own."""
        with self._guard:
            self._keys.discard(key)


class Fingerprints:
    """The last fingerprint per object uid; forgotten when the object is gone."""

    def __init__(self) -> None:
        self._seen: dict[str, object] = {}
        self._guard = threading.Lock()

    def changed(self, uid: str, fingerprint: object, *, gone: bool = False) -> bool:
        with self._guard:
            if gone:
                self._seen.pop(uid, None)
                return True
            if self._seen.get(uid) == fingerprint:
                return False
            self._seen[uid] = fingerprint
            return True



class Schedule:
    """When each object's next reconcile is due, as its last decision said; wakes its waiter.

    A reconcile (on any thread) calls `due_in`; the object's daemon (an asyncio task on kopf's
    event loop) sleeps in `wait` until that time, woken early when a later decision moves it.
    """

    def __init__(self, clock=time.monotonic) -> None:
        self._due: dict[tuple[str, str], float] = {}
        self._wakers: dict[tuple[str, str], tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self._guard = threading.Lock()
        self._clock = clock

    def due_in(self, key: tuple[str, str], seconds: float) -> None:
        with self._guard:
            self._due[key] = self._clock() + max(seconds, 0.0)
            waker = self._wakers.get(key)
        if waker is not None:
            loop, event = waker
            loop.call_soon_threadsafe(event.set)

    def delay(self, key: tuple[str, str], default: float) -> float:
        """Seconds until `key` is due (`default` from now when nothing was scheduled yet)."""
        with self._guard:
            due = self._due.setdefault(key, self._clock() + default)
        return due - self._clock()

    async def wait(self, key: tuple[str, str], seconds: float) -> None:
        """Sleep up to `seconds`, or until `due_in` reschedules `key`."""
        with self._guard:
            loop, event = self._wakers.setdefault(key, (asyncio.get_running_loop(), asyncio.Event()))
        try:
            await asyncio.wait_for(event.wait(), timeout=max(seconds, 0.0))
        except TimeoutError:
            pass
        event.clear()

    def forget(self, key: tuple[str, str]) -> None:
        with self._guard:
            self._due.pop(key, None)
            self._wakers.pop(key, None)


class Deadlines:
    """Wall-clock deadlines per object and one thread that calls `act(key)` when each comes.

    For the TTL of finished FineTuneJobs (as the Job controller's TTL-after-finished controller
    does): a finished job has no timer of its own; its watch events set or cancel its deadline
    here, and one thread sleeps until the earliest. `act` runs on that thread, outside the guard.
    """

    # Wake at least this often even with nothing due (a clock step, a missed notify).
    MAX_SLEEP_SECONDS = 3600.0
    RETRY_SECONDS = 10.0

    def __init__(self, act: Callable[[tuple[str, str]], None], clock: Callable[[], float] = time.time) -> None:
        self._act = act
        self._clock = clock
        self._when: dict[tuple[str, str], float] = {}
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def set(self, key: tuple[str, str], when: float) -> None:
        with self._changed:
            if self._when.get(key) != when:
                self._when[key] = when
                self._changed.notify()

    def cancel(self, key: tuple[str, str]) -> None:
        with self._changed:
            if self._when.pop(key, None) is not None:
                self._changed.notify()

    def pending(self) -> dict[tuple[str, str], float]:
        with self._changed:
            return dict(self._when)

    def start(self, name: str = "deadlines") -> None:
        with self._changed:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            thread, self._thread = self._thread, None
            self._changed.notify()
        if thread is not None:
            thread.join(timeout=5)

    def _take_due(self) -> list[tuple[str, str]] | None:
        """Pop the keys whose deadline passed; wait for the next one when none did (None: stop)."""
        with self._changed:
            while not self._stopping:
                now = self._clock()
                due = [key for key, when in self._when.items() if when <= now]
                if due:
                    for key in due:
                        del self._when[key]
                    return due
                upcoming = min(self._when.values(), default=now + self.MAX_SLEEP_SECONDS)
                self._changed.wait(timeout=min(upcoming - now, self.MAX_SLEEP_SECONDS))
            return None

    def _run(self) -> None:
        while (due := self._take_due()) is not None:
            for key in due:
                try:
                    self._act(key)
                except Exception:  # one object's failure never stops the others' deadlines
                    logger.exception("acting on the deadline of %s/%s; trying again in %.0f s", *key, self.RETRY_SECONDS)
                    with self._changed:
                        self._when.setdefault(key, self._clock() + self.RETRY_SECONDS)
