"""Per-object bookkeeping for the handlers (kopf's handler threads are shared).

- `ObjectLocks`: one lock per object, so reconciles of the same object never overlap;
- `Pending`: which objects already have a reconcile waiting for their lock (bursts coalesce);
- `Fingerprints`: the last fingerprint seen per child, so events that change nothing are dropped;
- `Schedule`: when each object's next reconcile is due, and a way to wake the one waiting for it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time


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
