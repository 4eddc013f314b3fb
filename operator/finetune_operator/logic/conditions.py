"""Status conditions as the Kubernetes API conventions define them.

A condition is an observation: type, status (True/False/Unknown), a CamelCase reason, a human
message, the generation it was computed for, and lastTransitionTime — the moment `status` last
changed, *not* the last time anything in the condition changed. Keeping that timestamp when only
the reason or message moves is what lets a user read "Accepted=False for 3h" and trust it.

The rule itself lives with the Condition model (`api.common.set_condition`); these helpers give
the decision code a flat call and never mutate their input, so old and new can be diffed.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from finetune_operator.api import common
from finetune_operator.api.common import Condition, ConditionStatus


def find_condition(conditions: Sequence[Condition] | None, type: str) -> Condition | None:
    return common.get_condition(list(conditions or ()), type)


def set_condition(
    conditions: Sequence[Condition] | None,
    type: str,
    status: ConditionStatus | str,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime.datetime,
) -> list[Condition]:
    """Return `conditions` with condition `type` set (replaced in place, or appended).

    lastTransitionTime is kept from the existing condition when its status is unchanged and set
    to `now` when the status flips or the condition is new.
    """
    condition = Condition(
        type=type,
        status=ConditionStatus(status),
        reason=reason,
        message=message,
        observed_generation=generation,
    )
    return common.set_condition(list(conditions or ()), condition, now)


def transitioned(before: Condition | None, after: Condition | None) -> bool:
    """Whether a condition changed in a way worth an Event: its status or its reason moved."""
    if after is None:
        return False
    if before is None:
        return True
    return (before.status, before.reason) != (after.status, after.reason)
