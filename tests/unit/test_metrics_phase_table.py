"""The FineTuneJobs-by-phase gauge: counts kept incrementally, per object, never below zero."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from finetune_operator.metrics import PhaseTable


def gauge_values(registry: CollectorRegistry) -> dict[str, float]:
    return {
        sample.labels["phase"]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "jobs_by_phase"
    }


def table() -> tuple[PhaseTable, CollectorRegistry]:
    registry = CollectorRegistry()
    gauge = Gauge("jobs_by_phase", "test", ["phase"], registry=registry)
    return PhaseTable(gauge, ("Pending", "Running", "Succeeded")), registry


def test_every_known_phase_is_published_at_zero_from_the_start():
    _, registry = table()
    assert gauge_values(registry) == {"Pending": 0, "Running": 0, "Succeeded": 0}


def test_an_object_moving_between_phases_is_counted_once():
    phases, registry = table()
    phases.observe("ns", "a", "Pending")
    phases.observe("ns", "b", "Pending")
    phases.observe("ns", "a", "Running")
    phases.observe("ns", "a", "Running")  # the same phase again changes nothing
    assert gauge_values(registry) == {"Pending": 1, "Running": 1, "Succeeded": 0}
    phases.forget("ns", "a")
    phases.forget("ns", "a")  # forgetting twice (a replayed DELETED event) is harmless
    phases.forget("ns", "never-seen")
    assert gauge_values(registry) == {"Pending": 1, "Running": 0, "Succeeded": 0}


def test_a_phase_not_known_in_advance_appears_and_disappears_with_its_objects():
    phases, registry = table()
    phases.observe("ns", "a", None)  # no phase written yet
    phases.observe("other", "a", "Archived")
    assert gauge_values(registry) == {"Pending": 0, "Running": 0, "Succeeded": 0, "": 1, "Archived": 1}
    phases.observe("ns", "a", "Pending")
    phases.forget("other", "a")
    assert gauge_values(registry) == {"Pending": 1, "Running": 0, "Succeeded": 0}


def test_the_same_name_in_two_namespaces_is_two_objects():
    phases, registry = table()
    phases.observe("ns1", "a", "Running")
    phases.observe("ns2", "a", "Running")
    assert gauge_values(registry)["Running"] == 2
