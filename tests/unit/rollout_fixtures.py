"""A Rollout driven through time, the way its handler drives it, so a test reads as a story.

`Cluster` holds what the handler observes (the model's ModelVersions and which versions'
serving is ready) and the Rollout's status. `reconcile(at)` measures the metrics that are due
(every due metric gets the one `Measured` the row gives), calls the pure `decide`, keeps the
returned status for the next reconcile, and applies the decided ModelVersion phases, as the
handler and the ModelVersion controller do:

    cluster = Cluster(spec(), versions=[version(1)], ready={"v1"})
    cluster.reconcile(0)                      # v1 becomes stable
    cluster.approve(2); cluster.reconcile(5)  # v2 becomes the canary

`view(decision, fields)` flattens a Decision into the fields a table row compares, so a row
names only what its situation is about.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from finetune_operator.api.rollout import (
    AbortRequest,
    PromoteRequest,
    RollbackRequest,
    RolloutSpec,
    RolloutStatus,
)
from finetune_operator.logic import rollout as logic
from finetune_operator.logic.analysis import Measured
from finetune_operator.logic.spec import InvalidSpec

T0 = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
NAME = "chat"
MODEL = "chat"

ONE_METRIC = {
    "prometheus": {"address": "http://prometheus.monitoring:9090"},
    "metrics": [
        {
            "name": "error-rate",
            "query": 'sum(rate(errors{model_version="{{canary}}"}[1m]))',
            "thresholds": {"max": 0.05},
            "count": 3,
            "interval": "10s",
            "failureLimit": 0,
        }
    ],
}
GOOD = Measured(value=0.01)
BAD = Measured(value=0.2)
NO_DATA = Measured(value=None)
QUERY_ERROR = Measured(error="prometheus: connection refused")


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def spec_dict(**fields: Any) -> dict[str, Any]:
    """A Rollout spec tracking LatestApproved, with top-level fields replaced."""
    # Analysis is explicit: without spec.analysis the default (relative) analysis runs and needs
    # a Prometheus; tables that are not about analysis opt out.
    raw: dict[str, Any] = {"modelName": MODEL, "track": "LatestApproved", "analysis": {"none": True}}
    raw.update(fields)
    if "version" in fields:
        raw.pop("track")
    return {k: v for k, v in raw.items() if v is not None}


def spec(**fields: Any) -> RolloutSpec | InvalidSpec:
    return logic.parse_spec(spec_dict(**fields))


def version(number: int, phase: str | None = "Approved", *, artifact_type: str = "adapter") -> logic.VersionInfo:
    return logic.VersionInfo(
        name=f"{MODEL}-v{number}",
        version=f"v{number}",
        phase=phase,
        base_model_uri="hf://HuggingFaceTB/SmolLM2-135M-Instruct",
        artifact_uri=f"s3://models/{MODEL}/v{number}",
        artifact_type=artifact_type,
        number=number,
        created=f"2025-01-01T0{number % 10}:00:00Z",
    )


def abort(seconds: float, reason: str | None = "bad answers", by: str | None = "alice") -> dict[str, Any]:
    return {"abort_request": AbortRequest(requested_at=at(seconds), reason=reason, requested_by=by)}


def promote(seconds: float, *, full: bool = False, by: str | None = "bob") -> dict[str, Any]:
    return {"promote_request": PromoteRequest(requested_at=at(seconds), full=full, requested_by=by)}


def rollback(
    seconds: float, to: str | None = None, reason: str | None = "regression", by: str | None = "carol"
) -> dict[str, Any]:
    request = RollbackRequest(requested_at=at(seconds), to_version=to, reason=reason, requested_by=by)
    return {"rollback_request": request}


@dataclasses.dataclass
class Cluster:
    """What the Rollout's handler observes, and the Rollout's status between reconciles."""

    rollout_spec: RolloutSpec | InvalidSpec
    versions: list[logic.VersionInfo] = dataclasses.field(default_factory=list)
    ready: set[str] = dataclasses.field(default_factory=set)
    status: RolloutStatus = dataclasses.field(default_factory=RolloutStatus)
    generation: int = 1
    last: logic.Decision | None = None
    last_at: float = 0.0
    # The traffic router as the handler reads it; None: it carries whatever was decided.
    routing: logic.Routing | None = None
    serving_failures: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    force_version: str | None = None  # the finetune.ai/force-version annotation

    def observed(self) -> logic.Observed:
        return logic.Observed(
            versions=tuple(self.versions), ready={v: True for v in self.ready}, routing=self.routing,
            serving_failures=dict(self.serving_failures),
        )

    def approve(self, number: int, *, ready: bool = False) -> None:
        self.versions.append(version(number))
        if ready:
            self.ready.add(f"v{number}")

    def set_phase(self, number: int, phase: str) -> None:
        self.versions = [dataclasses.replace(v, phase=phase) if v.number == number else v for v in self.versions]

    def edit_spec(self, new_spec: RolloutSpec | InvalidSpec) -> None:
        self.rollout_spec = new_spec
        self.generation += 1

    def request(self, **requests: Any) -> None:
        """The CLI writes a request into status."""
        self.status = self.status.model_copy(update=requests)

    def reconcile(self, seconds: float, measured: Measured | Mapping[str, Measured] | None = None) -> logic.Decision:
        now = at(seconds)
        if isinstance(measured, Measured):
            due = []
            if isinstance(self.rollout_spec, RolloutSpec):
                due = logic.due_metrics(self.rollout_spec, self.status, now, self.observed())
            measured = {m.name: measured for m in due}
        decision = logic.decide(
            NAME, self.rollout_spec, self.status, self.observed(), now, generation=self.generation, measured=measured,
            force_version=self.force_version,
        )
        self.status = decision.status
        for name, phase in decision.version_phases.items():
            self.versions = [dataclasses.replace(v, phase=phase) if v.name == name else v for v in self.versions]
        # The handler writes each version's serving record; the index then shows it.
        for name, serving in decision.version_serving.items():
            refused_by = NAME if serving.state == "Refused" else None
            self.versions = [dataclasses.replace(v, refused_by=refused_by) if v.name == name else v for v in self.versions]
        self.last, self.last_at = decision, seconds
        return decision

    def reconcile_every(self, seconds: Iterable[float], measured: Measured | None = None) -> logic.Decision:
        decision = self.last
        for t in seconds:
            decision = self.reconcile(t, measured)
        assert decision is not None
        return decision

    def redecide(self) -> logic.Decision:
        """The same inputs again, at the same moment, with nothing newly measured."""
        return logic.decide(
            NAME, self.rollout_spec, self.status, self.observed(), at(self.last_at), generation=self.generation,
            force_version=self.force_version,
        )


def view(decision: logic.Decision, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields of a Decision that table rows compare (all, or only `fields`)."""
    status = decision.status
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    progressing = next((c for c in status.conditions if c.type == "Progressing"), None)
    every = {
        "phase": status.phase and str(status.phase),
        "ready": ready and (str(ready.status), ready.reason),
        "progressing": progressing and (str(progressing.status), progressing.reason),
        "stable": decision.stable,
        "canary": decision.canary,
        "candidate": status.candidate_version,
        "step": status.current_step_index,
        "weight": decision.weight,
        "serve": decision.serve,
        "version_phases": dict(decision.version_phases),
        "events": [(e.type, e.reason) for e in decision.events],
        "history": [(str(h.action), h.from_version, h.to_version) for h in status.history],
        "forced": [h.forced for h in status.history],
        "rollback_accepted": (c := next((c for c in status.conditions if c.type == "RollbackAccepted"), None))
        and (str(c.status), c.reason),
        "analysis": status.analysis and (status.analysis.step_index, str(status.analysis.phase)),
        "measurements": status.analysis and sum(len(m.measurements) for m in status.analysis.metrics),
        "requeue": decision.requeue_after,
        "changed": decision.status_changed,
    }
    return every if fields is None else {k: every[k] for k in fields}
