"""Per-object bookkeeping for the handlers (kopf's handler threads are shared).

- `ObjectLocks`: one lock per object, so reconciles of the same object never overlap;
- `Pending`: which objects already have a reconcile waiting for their lock (bursts coalesce);
- `Fingerprints`: the last fingerprint seen per child, so events that change nothing are dropped.
"""

from __future__ import annotations

import collections
import threading


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

