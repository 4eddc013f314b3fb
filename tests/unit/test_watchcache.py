"""The FineTuneJob controller's watch cache: projections keep what `decide` reads, overlays cover
the operator's own writes until the watch shows them.

Projections: every situation of the pipeline table decides the same from projected children as
from the full objects, each padded with what a real API answer carries and `decide` never reads
(managedFields, a Pod's spec and addresses, heartbeat times). Overlays: a cache with plain dicts
for kopf's indexes and a hand-driven clock.
"""

from __future__ import annotations

import copy

import kopf
import pytest

from finetune_operator.builders.labels import FINETUNEJOB_LABEL
from finetune_operator.builders.modelversion import SOURCE_UID_LABEL
from finetune_operator.handlers import finetunejob as handler
from finetune_operator.k8s import watchcache
from finetune_operator.logic.finetunejob import Children
from tests.unit.test_logic_finetunejob_pipeline import MINIMAL, NOW, OWNER, S, SPEC, run

MANAGED = [{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {"f:active": {}}}}]


def padded(obj):
    """`obj` as the API would return it: the same fields plus what the operator never reads."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    meta.setdefault("labels", {})[FINETUNEJOB_LABEL] = "ft"
    meta.update(managedFields=MANAGED, resourceVersion="4711", uid=f"uid-{meta['name']}", generation=1)
    meta.setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = "{" + "x" * 2000 + "}"
    if obj["kind"] == "Pod":
        obj["spec"] = {"containers": [{"name": "trainer", "image": "trainer:1", "env": [{"name": "X", "value": "y" * 500}]}],
                       "nodeName": "node-1"}
        obj["status"].update(podIP="127.0.0.9", hostIP="127.0.0.8", qosClass="Burstable")
        for cs in obj["status"].get("containerStatuses", []):
            cs.update(image="trainer:1", imageID="sha256:" + "0" * 64, containerID="containerd://abc", ready=False)
        for cond in obj["status"]["conditions"]:
            cond["lastProbeTime"] = None
    if obj["kind"] == "Job":
        obj["spec"].update(template={"spec": {"containers": [{"name": "trainer", "image": "trainer:1"}]}},
                           backoffLimit=2, completions=1)
    return obj


def projected(children: Children) -> Children:
    projections = [
        *(watchcache.project_job(padded(j)) for j in children.jobs),
        *(watchcache.project_pod(padded(p)) for p in children.pods),
        *(watchcache.project_config_map(padded(c)) for c in (children.progress, children.config) if c is not None),
    ]
    found = watchcache.children_from(projections, OWNER.name)
    mv = children.model_version and watchcache.project_model_version(children.model_version)
    return Children(jobs=found.jobs, pods=found.pods, progress=found.progress, config=found.config, model_version=mv)


def _decided(decision):
    return (decision.status_patch, [(o["kind"], o["metadata"]["name"]) for o in decision.create],
            list(decision.suspend), [(e.type, e.reason, e.message) for e in decision.events], decision.register)


@pytest.mark.parametrize("situation", sorted(S))
def test_projected_children_decide_as_the_full_objects_do(situation):
    full = Children(
        jobs=tuple(padded(j) for j in S[situation].jobs),
        pods=tuple(padded(p) for p in S[situation].pods),
        progress=S[situation].progress and padded(S[situation].progress),
        model_version=S[situation].model_version,
    )
    assert _decided(run(SPEC, projected(S[situation]))) == _decided(run(SPEC, full))


def test_a_pod_projection_keeps_no_spec_addresses_or_managed_fields():
    pod = padded(S["train-complete"].pods[-1])
    kept = watchcache.project_pod(pod)
    assert "spec" not in kept and "managedFields" not in kept["metadata"]
    assert "podIP" not in kept["status"] and "annotations" not in kept["metadata"]
    assert kept["status"]["containerStatuses"][0]["state"] == pod["status"]["containerStatuses"][0]["state"]
    assert len(repr(kept)) < len(repr(pod)) / 3


def test_a_pod_keeps_its_completion_index_annotation():
    pod = padded(S["train-complete"].pods[-1])
    pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] = "1"
    assert watchcache.project_pod(pod)["metadata"]["annotations"] == {"batch.kubernetes.io/job-completion-index": "1"}


def test_children_are_keyed_by_their_finetunejob_label():
    job = padded(S["prepared"].jobs[0])
    assert list(watchcache.child_entry("Job", job)) == [("team", "ft")]
    del job["metadata"]["labels"][FINETUNEJOB_LABEL]
    assert watchcache.child_entry("Job", job) is None


def test_model_versions_are_keyed_by_their_source_job_uid():
    mv = {"kind": "ModelVersion", "metadata": {"name": "m-v1", "namespace": "team",
                                               "labels": {SOURCE_UID_LABEL: "uid-1"}}, "spec": {"version": "v1"}}
    assert list(watchcache.model_version_entry(mv)) == [("team", "uid-1")]
    assert watchcache.model_version_entry({"metadata": {"name": "x", "namespace": "team"}}) is None


def test_the_handlers_declare_the_indexes_the_cache_reads():
    declared = {h.id for h in kopf.get_default_registry()._indexing.get_all_handlers()}  # noqa: SLF001
    assert set(watchcache.INDEXES) <= declared
    assert all(callable(getattr(handler, name)) for name in watchcache.INDEXES)


# --- overlays ----------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def ftj(rv, uid="uid-1", phase=None):
    return {"apiVersion": "finetune.ai/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": "ft", "namespace": "team", "uid": uid, "resourceVersion": str(rv), "generation": 1,
                         "managedFields": MANAGED},
            "spec": {}, "status": {"phase": phase} if phase else {}}


@pytest.fixture
def indexes():
    return {name: {} for name in watchcache.INDEXES}


@pytest.fixture
def cache(indexes):
    clock = Clock()
    cache = watchcache.FineTuneJobCache(clock=clock)
    cache.bind(indexes)
    cache.clock = clock
    return cache


def put(indexes, index, key, *objs):
    indexes[index][key] = list(objs)


def test_an_unbound_cache_refuses_instead_of_reading_nothing():
    with pytest.raises(RuntimeError, match="not bound"):
        watchcache.FineTuneJobCache().children("team", "ft")


def test_the_operators_own_status_write_is_read_until_the_watch_shows_it(cache, indexes):
    put(indexes, watchcache.FINETUNEJOB_INDEX, ("team", "ft"), watchcache.project_finetunejob(ftj(10)))
    cache.wrote(ftj(11, phase="Training"))
    assert cache.finetunejob("team", "ft")["status"] == {"phase": "Training"}
    # The watch delivers that write (or something newer): the index's copy is read again.
    put(indexes, watchcache.FINETUNEJOB_INDEX, ("team", "ft"), watchcache.project_finetunejob(ftj(12, phase="Evaluating")))
    assert cache.finetunejob("team", "ft")["status"] == {"phase": "Evaluating"}
    put(indexes, watchcache.FINETUNEJOB_INDEX, ("team", "ft"), watchcache.project_finetunejob(ftj(10)))
    assert cache.finetunejob("team", "ft")["status"] == {}, "the overlay is gone once the index caught up"


def test_a_write_to_a_deleted_and_recreated_job_is_not_read(cache, indexes):
    cache.wrote(ftj(11, uid="old", phase="Training"))
    put(indexes, watchcache.FINETUNEJOB_INDEX, ("team", "ft"), watchcache.project_finetunejob(ftj(5, uid="new")))
    assert cache.finetunejob("team", "ft")["metadata"]["uid"] == "new"


def test_a_job_the_index_does_not_have_is_gone(cache):
    cache.wrote(ftj(11, phase="Training"))
    assert cache.finetunejob("team", "ft") is None


def test_unordered_resource_versions_ask_for_an_api_read(cache, indexes):
    put(indexes, watchcache.FINETUNEJOB_INDEX, ("team", "ft"), watchcache.project_finetunejob(ftj("abc")))
    cache.wrote(ftj(11, phase="Training"))
    with pytest.raises(watchcache.Stale):
        cache.finetunejob("team", "ft")


def test_the_projection_of_a_finetunejob_drops_managed_fields():
    assert "managedFields" not in watchcache.project_finetunejob(ftj(1))["metadata"]


def created_job(name, uid):
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "team", "uid": uid, "labels": {FINETUNEJOB_LABEL: "ft"}},
            "spec": {}, "status": {}}


def test_a_created_child_is_seen_until_the_index_has_it(cache, indexes):
    cache.created(created_job("ft-prepare", "j1"))
    assert [j["metadata"]["name"] for j in cache.children("team", "ft").jobs] == ["ft-prepare"]
    indexed = watchcache.project_job({**created_job("ft-prepare", "j1"), "status": {"active": 1}})
    put(indexes, "finetunejob_jobs", ("team", "ft"), indexed)
    assert cache.children("team", "ft").jobs == (indexed,)
    # Gone from the index later (deleted): the overlay does not bring it back.
    put(indexes, "finetunejob_jobs", ("team", "ft"))
    assert cache.children("team", "ft").jobs == ()


def test_a_created_child_never_watched_expires(cache):
    cache.created(created_job("ft-prepare", "j1"))
    cache.clock.now += watchcache.CREATED_TTL_SECONDS + 1
    assert cache.children("team", "ft").jobs == ()


def test_an_indexed_child_of_the_same_name_wins_over_the_created_one(cache, indexes):
    cache.created(created_job("ft-prepare", "j1"))
    older = watchcache.project_job(created_job("ft-prepare", "j0"))
    put(indexes, "finetunejob_jobs", ("team", "ft"), older)
    assert cache.children("team", "ft").jobs == (older,)


def test_only_jobs_and_config_maps_are_remembered(cache):
    cache.created({"kind": "Role", "metadata": {"name": "ft-trainer", "namespace": "team", "labels": {FINETUNEJOB_LABEL: "ft"}}})
    cache.created(None)  # a create answered 409: nothing to remember
    assert cache.children("team", "ft") == Children()


def test_children_are_sorted_into_jobs_pods_progress_and_config(cache, indexes):
    put(indexes, "finetunejob_config_maps", ("team", "ft"),
        watchcache.project_config_map({"kind": "ConfigMap", "metadata": {"name": "ft-progress"}, "data": {"a": "1"}}),
        watchcache.project_config_map({"kind": "ConfigMap", "metadata": {"name": "ft-config"}, "data": {"b": "2"}}))
    found = cache.children("team", "ft")
    assert found.progress["data"] == {"a": "1"} and found.config["data"] == {"b": "2"}


def test_a_registered_version_is_read_until_the_index_has_it(cache, indexes):
    mv = {"kind": "ModelVersion", "metadata": {"name": "m-v1", "namespace": "team"}, "spec": {"version": "v1"}}
    assert cache.model_version("team", "uid-1") is None
    cache.registered("team", "uid-1", mv)
    assert cache.model_version("team", "uid-1")["metadata"]["name"] == "m-v1"
    indexed = watchcache.project_model_version({**mv, "spec": {"version": "v1", "x": 1}})
    put(indexes, watchcache.MODELVERSION_INDEX, ("team", "uid-1"), indexed)
    assert cache.model_version("team", "uid-1") is indexed


def test_forgetting_a_job_drops_its_overlays(cache, indexes):
    cache.created(created_job("ft-prepare", "j1"))
    cache.registered("team", "uid-1", {"metadata": {"name": "m-v1"}})
    cache.forget("team", "ft", "uid-1")
    assert cache.children("team", "ft").jobs == () and cache.model_version("team", "uid-1") is None


def test_a_reconcile_decides_from_the_cache_without_reading_the_api(cache, indexes, monkeypatch):
    """The handler's whole read path: index in, decision out; the only API calls are writes."""
    calls = []
    monkeypatch.setattr(handler, "_cache", cache)
    monkeypatch.setattr(handler, "_now", lambda: NOW)
    monkeypatch.setattr(handler.client, "custom_objects", lambda: pytest.fail("read the API"))
    monkeypatch.setattr(handler.apply, "create", lambda obj: calls.append(("create", obj["metadata"]["name"])) or None)
    monkeypatch.setattr(handler.status, "patch", lambda *args: calls.append(("status",)) or None)
    monkeypatch.setattr(handler.events, "record", lambda *args, **kwargs: calls.append(("event", args[2])))
    monkeypatch.setattr(handler.metrics.finetunejob_phases, "observe", lambda *args: None)
    body = {**ftj(10, phase="Preparing"), "spec": copy.deepcopy(MINIMAL)}
    put(indexes, watchcache.FINETUNEJOB_INDEX, ("team", "ft"), watchcache.project_finetunejob(body))
    config = watchcache.project_config_map({"kind": "ConfigMap", "metadata": {"name": "ft-config", "namespace": "team"}, "data": {}})
    put(indexes, "finetunejob_config_maps", ("team", "ft"), config)
    put(indexes, "finetunejob_jobs", ("team", "ft"), watchcache.project_job(padded(S["prepare-running"].jobs[0])))
    put(indexes, "finetunejob_pods", ("team", "ft"), watchcache.project_pod(padded(S["prepare-running"].pods[0])))
    decision = handler._reconcile_fresh("team", "ft", "uid-1")  # noqa: SLF001
    assert decision is not None and decision.status.phase == "Preparing"
    assert all(call[0] in ("create", "status", "event") for call in calls)


def test_a_job_seen_ended_with_its_pod_still_seen_running_is_not_decided_on():
    """Under load the Job's watch can run ahead of its Pod's: Complete, but no results yet."""
    lagging = Children(jobs=S["train-complete"].jobs, pods=S["training"].pods, progress=S["train-complete"].progress)
    assert "ft-train" in watchcache.behind(lagging)
    for situation in ("train-complete", "training", "train-oom-killed", "prepared", "evaluated"):
        assert watchcache.behind(S[situation]) is None, situation


# --- FailedCreate Events ---------------------------------------------------------------------------


def failed_create_event(job_name, reason="FailedCreate", kind="Job"):
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{job_name}.17f3", "namespace": "team", "uid": "e1", "resourceVersion": "9",
                         "managedFields": MANAGED},
            "involvedObject": {"kind": kind, "name": job_name, "namespace": "team", "uid": "j1", "apiVersion": "batch/v1",
                               "resourceVersion": "7"},
            "reason": reason, "type": "Warning", "message": 'Error creating: pods "x" is forbidden: exceeded quota: q',
            "source": {"component": "job-controller"}, "firstTimestamp": "2025-01-01T11:00:00Z",
            "lastTimestamp": "2025-01-01T11:05:00Z", "count": 4, "reportingComponent": "job-controller"}


def test_failed_create_events_are_keyed_by_their_job_and_keep_what_decide_reads():
    [(key, kept)] = watchcache.creation_failure_entry(failed_create_event("ft-prepare")).items()
    assert key == ("team", "ft-prepare")
    assert kept["involvedObject"] == {"kind": "Job", "name": "ft-prepare", "uid": "j1"}
    assert (kept["reason"], kept["lastTimestamp"], kept["count"]) == ("FailedCreate", "2025-01-01T11:05:00Z", 4)
    assert "managedFields" not in kept["metadata"] and "source" not in kept


@pytest.mark.parametrize("event", [failed_create_event("ft-prepare", reason="SuccessfulCreate"),
                                   failed_create_event("ft-prepare", kind="ReplicaSet")],
                         ids=["another-reason", "not-about-a-job"])
def test_other_events_are_not_indexed(event):
    assert watchcache.creation_failure_entry(event) is None


def test_a_jobs_failed_create_events_come_with_its_children(cache, indexes):
    put(indexes, "finetunejob_jobs", ("team", "ft"), watchcache.project_job(created_job("ft-prepare", "j1")))
    refused = watchcache.project_event(failed_create_event("ft-prepare"))
    put(indexes, watchcache.CREATION_FAILURE_INDEX, ("team", "ft-prepare"), refused)
    put(indexes, watchcache.CREATION_FAILURE_INDEX, ("team", "other-prepare"), watchcache.project_event(failed_create_event("other-prepare")))
    assert cache.children("team", "ft").creation_failures == (refused,)
    assert cache.finetunejob_of_job("team", "ft-prepare") == "ft"
    assert cache.finetunejob_of_job("team", "other-prepare") is None


def test_setup_objects_are_created_together_and_each_job_after_them():
    from finetune_operator.handlers.finetunejob import creation_groups

    def obj(kind, name):
        return {"kind": kind, "metadata": {"name": name}}

    objects = [obj("ServiceAccount", "sa"), obj("Role", "r"), obj("RoleBinding", "rb"), obj("ConfigMap", "cfg"),
               obj("Job", "prepare"), obj("ConfigMap", "late"), obj("Job", "train"), obj("Job", "eval")]
    groups = [[o["metadata"]["name"] for o in group] for group in creation_groups(objects)]
    assert groups == [["sa", "r", "rb", "cfg"], ["prepare"], ["late"], ["train"], ["eval"]]
    assert creation_groups([]) == []
