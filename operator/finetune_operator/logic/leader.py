"""Leader election over a coordination.k8s.io Lease: what a replica does next, from what it saw.

Two replicas of the operator run; the one holding the Lease runs the controllers, the other
waits. The rules are client-go's leader election (the one every kube-controller-manager uses):

* no Lease yet: create it, holding it;
* we hold it: renew it (a new renewTime) every retry period;
* its holder released it (an empty holderIdentity, written on a clean shutdown): take it now;
* another holder: take it only once the record has stayed *unchanged* for a whole
  leaseDurationSeconds, measured on our own clock from when we first saw that record. The
  holder's renewTime is never compared with our clock, so skew between nodes does not matter.

A holder that cannot renew for `renew_deadline` seconds gives up (the caller stops acting):
since renew_deadline < lease duration, it has stopped before anyone else may take over.
Writes carry the resourceVersion that was read, so two replicas racing for an expired Lease
cannot both win: the second write is refused (409) and that replica waits again.
"""

from __future__ import annotations

import dataclasses
import enum


class Action(enum.StrEnum):
    CREATE = "Create"  # no Lease: create it with us as holder
    ACQUIRE = "Acquire"  # released or expired: write us as holder
    RENEW = "Renew"  # ours: write a new renewTime
    WAIT = "Wait"  # someone else's and still valid


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that the election reads."""

    holder: str  # "" when released
    duration_seconds: int
    acquire_time: str  # RFC 3339 with microseconds, as written; "" when absent
    renew_time: str
    transitions: int


@dataclasses.dataclass(frozen=True)
class Step:
    action: Action
    reason: str


def decide(identity: str, record: LeaseRecord | None, observed_at: float, now: float) -> Step:
    """What `identity` does, given the Lease `record` (None: there is none), first seen unchanged at
    `observed_at` on this process's monotonic clock, at `now` on the same clock."""
    if record is None:
        return Step(Action.CREATE, "no Lease yet")
    if record.holder == identity:
        return Step(Action.RENEW, "held by this replica")
    if not record.holder:
        return Step(Action.ACQUIRE, "released by its last holder")
    waited = now - observed_at
    if waited >= record.duration_seconds:
        return Step(Action.ACQUIRE, f"expired: {record.holder} has not renewed it for {waited:.1f}s "
                                    f"(leaseDurationSeconds {record.duration_seconds})")
    return Step(Action.WAIT, f"held by {record.holder}; expires in {record.duration_seconds - waited:.1f}s "
                             "unless renewed")


def next_spec(identity: str, record: LeaseRecord | None, action: Action, now_rfc3339: str,
              duration_seconds: int) -> dict[str, object]:
    """The Lease spec to write for `action` (not WAIT) at wall-clock time `now_rfc3339`."""
    if action is Action.WAIT:
        raise ValueError("nothing is written while waiting")
    if action is Action.RENEW and record is not None:
        return {"holderIdentity": identity, "leaseDurationSeconds": duration_seconds,
                "acquireTime": record.acquire_time or now_rfc3339, "renewTime": now_rfc3339,
                "leaseTransitions": record.transitions}
    transitions = 0 if record is None else record.transitions + (1 if record.holder != identity else 0)
    return {"holderIdentity": identity, "leaseDurationSeconds": duration_seconds,
            "acquireTime": now_rfc3339, "renewTime": now_rfc3339, "leaseTransitions": transitions}


def released_spec(record: LeaseRecord, now_rfc3339: str) -> dict[str, object]:
    """What a holder writes on a clean shutdown: no holder, so a standby takes over at its next try
    instead of waiting out the lease duration."""
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": record.acquire_time or now_rfc3339,
            "renewTime": now_rfc3339, "leaseTransitions": record.transitions}


def lost(last_renewed: float, now: float, renew_deadline: float) -> bool:
    """A holder that has not renewed for `renew_deadline` seconds must stop acting."""
    return now - last_renewed >= renew_deadline
