"""kopf's settings for the operator: what the API server filters before anything reaches us."""

from __future__ import annotations

from kopf._cogs.structs import references

from finetune_operator.__main__ import settings_for
from finetune_operator.config import OperatorConfig


def _resource(group: str, plural: str, kind: str) -> references.Resource:
    return references.Resource(group, "v1", plural, kind=kind, namespaced=True, verbs=["list", "watch"])


def test_only_failedcreate_events_of_jobs_are_watched_and_nothing_else_is_filtered():
    settings = settings_for(OperatorConfig.from_env({}))
    selectors = settings.watching.field_selectors
    assert selectors.collect(_resource("", "events", "Event")) == ["reason=FailedCreate,involvedObject.kind=Job"]
    # events.k8s.io Events, Jobs and Pods are not narrowed by this selector.
    assert selectors.collect(_resource("events.k8s.io", "events", "Event")) == []
    assert selectors.collect(_resource("batch", "jobs", "Job")) == []
    assert selectors.collect(_resource("", "pods", "Pod")) == []


def test_progress_and_finalizer_live_under_our_domain():
    settings = settings_for(OperatorConfig.from_env({}))
    assert settings.persistence.finalizer == "finetune.ai/finalizer"
    assert settings.posting.reporting_component


def test_a_namespaced_operator_scans_neither_namespaces_nor_crds():
    # Its namespaces are exact names; scanning would list and watch every Namespace and CRD,
    # which a namespaced install is not granted.
    assert settings_for(OperatorConfig.from_env({"FINETUNE_WATCH_NAMESPACES": "team-a,team-b"})).scanning.disabled
    assert not settings_for(OperatorConfig.from_env({})).scanning.disabled
