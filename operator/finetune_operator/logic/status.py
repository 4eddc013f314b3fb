"""Status diffs: patch only what changed, and nothing when nothing did.

The status is computed in memory from scratch each reconcile; this module turns the old and the
new status (as JSON-ready dicts) into an RFC 7386 JSON merge patch. Keys that disappeared become
null (merge-patch deletion); lists are replaced whole, which is what merge patch does anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `old` into `new`; empty when they are equal."""
    old = old or {}
    patch: dict[str, Any] = {}
    for key, value in new.items():
        previous = old.get(key)
        if isinstance(value, Mapping) and isinstance(previous, Mapping):
            nested = merge_patch(previous, value)
            if nested:
                patch[key] = nested
        elif key not in old or previous != value:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
