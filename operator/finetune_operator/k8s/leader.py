"""The Lease behind leader election: read it, write it, hold it.

`logic.leader` decides; this module does the reads and writes (get, create, update of one
coordination.k8s.io Lease, in the namespace the chart names) and keeps time. A replica calls
`acquire()` before it starts any controller, which returns once it holds the Lease (or when asked
to stop), then `hold()`, which renews it from a thread every retry period and calls `on_lost`
when it cannot (renew deadline passed, or another replica holds it): the caller stops acting at
once. `release()` on a clean shutdown lets the standby take over without waiting for expiry.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable

import kubernetes

from finetune_operator import metrics
from finetune_operator.k8s.client import api_client
from finetune_operator.logic import leader as logic

logger = logging.getLogger(__name__)


def _rfc3339(moment: datetime.datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    return _rfc3339(datetime.datetime.now(datetime.UTC))


def record_of(lease: kubernetes.client.V1Lease | None) -> logic.LeaseRecord | None:
    if lease is None:
        return None
    spec = lease.spec or kubernetes.client.V1LeaseSpec()
    return logic.LeaseRecord(
        holder=spec.holder_identity or "",
        duration_seconds=int(spec.lease_duration_seconds or 0),
        acquire_time=_rfc3339(spec.acquire_time),
        renew_time=_rfc3339(spec.renew_time),
        transitions=int(spec.lease_transitions or 0),
    )


class LeaderElector:
    """One replica's side of the election for Lease `namespace`/`name`."""

    def __init__(self, namespace: str, name: str, identity: str, *, lease_duration: int, renew_deadline: float,
                 retry_period: float, clock: Callable[[], float] = time.monotonic):
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock = clock
        self._observed: logic.LeaseRecord | None = None
        self._observed_at = 0.0
        self._resource_version: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _api(self) -> kubernetes.client.CoordinationV1Api:
        return kubernetes.client.CoordinationV1Api(api_client())

    def _read(self) -> logic.LeaseRecord | None:
        try:
            lease = self._api().read_namespaced_lease(self.name, self.namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
            lease = None
        record = record_of(lease)
        self._resource_version = lease.metadata.resource_version if lease is not None else None
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        return record

    def _write(self, spec: dict[str, object], create: bool) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": spec,
                "metadata": {"name": self.name, "namespace": self.namespace,
                             **({} if create else {"resourceVersion": self._resource_version})}}
        try:
            if create:
                self._api().create_namespaced_lease(self.namespace, body)
            else:
                self._api().replace_namespaced_lease(self.name, self.namespace, body)
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:  # another replica wrote first: read again next time
                return False
            raise
        return True

    def try_acquire_or_renew(self) -> logic.Step:
        """One round: read, decide, write. Returns the step taken; WAIT when not (or no longer) holding."""
        record = self._read()
        step = logic.decide(self.identity, record, self._observed_at, self.clock())
        if step.action is logic.Action.WAIT:
            return step
        spec = logic.next_spec(self.identity, record, step.action, now_rfc3339(), self.lease_duration)
        if not self._write(spec, create=step.action is logic.Action.CREATE):
            return logic.Step(logic.Action.WAIT, "another replica wrote the Lease first")
        return step

    def acquire(self) -> bool:
        """Block until this replica holds the Lease (True) or `stop()` is called (False)."""
        waiting_on = None
        while not self._stop.is_set():
            try:
                step = self.try_acquire_or_renew()
            except (kubernetes.client.ApiException, OSError) as exc:  # API server away: try again
                logger.warning("leader election: cannot read or write %s: %s", self.where, exc)
            else:
                if step.action is not logic.Action.WAIT:
                    previous = waiting_on or "nobody"
                    logger.info("leader election: %s acquired %s (%s; previous holder %s); starting the controllers",
                                self.identity, self.where, step.reason, previous)
                    metrics.LEADER.set(1)
                    return True
                holder = self._observed.holder if self._observed else None
                if holder != waiting_on:
                    logger.info("leader election: standby, %s (%s)", self.where, step.reason)
                    waiting_on = holder
            self._stop.wait(self.retry_period)
        return False

    def hold(self, on_lost: Callable[[str], None]) -> None:
        """Renew the Lease every retry period from a thread; `on_lost(reason)` when it cannot."""
        def renew() -> None:
            last_renewed = self.clock()
            while not self._stop.wait(self.retry_period):
                try:
                    step = self.try_acquire_or_renew()
                except (kubernetes.client.ApiException, OSError) as exc:
                    logger.warning("leader election: cannot renew %s: %s", self.where, exc)
                    step = None
                if step is not None and step.action is not logic.Action.WAIT:
                    last_renewed = self.clock()
                    continue
                held_by_other = step is not None and self._observed is not None and self._observed.holder not in ("", self.identity)
                if held_by_other or logic.lost(last_renewed, self.clock(), self.renew_deadline):
                    metrics.LEADER.set(0)
                    reason = (f"{self._observed.holder} holds it" if held_by_other and self._observed
                              else f"not renewed for {self.clock() - last_renewed:.1f}s (renew deadline {self.renew_deadline:g}s)")
                    on_lost(reason)
                    return

        self._renewer = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        self._renewer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=self.retry_period + 10)

    def release(self) -> None:
        """Give the Lease up if this replica still holds it (after `stop()`), so the standby takes over now."""
        try:
            record = self._read()
            if record is None or record.holder != self.identity:
                return
            if self._write(logic.released_spec(record, now_rfc3339()), create=False):
                metrics.LEADER.set(0)
                logger.info("leader election: %s released %s", self.identity, self.where)
        except (kubernetes.client.ApiException, OSError) as exc:
            logger.warning("leader election: could not release %s (the standby takes it once it expires): %s",
                           self.where, exc)
