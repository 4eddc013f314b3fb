"""One lock per object, so reconciles of the same object never overlap (kopf's threads are shared)."""

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
