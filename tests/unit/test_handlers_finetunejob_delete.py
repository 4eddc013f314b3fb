"""Deleting a FineTuneJob: the finalizer never holds a namespace that is being deleted.

The delete handler's API calls are replaced by recorders; each row is what the API server
answers to the calls the handler makes (deleting the Jobs, creating the cleanup Job), and
whether the handler must finish (release the finalizer) or let kopf retry.
"""

from __future__ import annotations

import pytest
from kubernetes.client import ApiException

from finetune_operator import config as operator_config
from finetune_operator.handlers import finetunejob as handler

SPEC = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "dataset": {"uri": "s3://data/t.jsonl"},
    "deleteArtifactsOnDelete": True,
}
BODY = {
    "apiVersion": "finetune.ai/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "ft", "namespace": "team", "uid": "uid-1"},
    "spec": SPEC,
}
TERMINATING = ApiException(status=403, reason="Forbidden")
TERMINATING.body = (
    '{"kind":"Status","message":"jobs.batch \\"ft-cleanup\\" is forbidden: unable to create new content in '
    'namespace team because it is being terminated","reason":"Forbidden","code":403}'
)
GONE = ApiException(status=404, reason="Not Found")
RBAC = ApiException(status=403, reason="Forbidden")
RBAC.body = '{"message":"jobs.batch is forbidden: User \\"system:serviceaccount:x:y\\" cannot create resource"}'
UNAVAILABLE = ApiException(status=503, reason="Service Unavailable")


@pytest.fixture
def api(monkeypatch):
    calls = {"deleted": [], "created": [], "events": []}
    answers = {"delete": None, "create": None}

    def delete(api_version, kind, namespace, name, propagation="Background"):
        calls["deleted"].append(name)
        if answers["delete"] is not None:
            raise answers["delete"]

    def create(obj):
        calls["created"].append(obj["metadata"]["name"])
        if answers["create"] is not None:
            raise answers["create"]
        return dict(obj)

    monkeypatch.setattr(handler.apply, "delete", delete)
    monkeypatch.setattr(handler.apply, "create", create)
    monkeypatch.setattr(handler.apply, "create_if_absent", lambda obj: create(obj) is not None)
    monkeypatch.setattr(handler.dryrun, "refusals", lambda objects: ())  # the API server admits every child
    monkeypatch.setattr(handler.events, "record", lambda body, type, reason, message: calls["events"].append((type, reason, message)))
    monkeypatch.setattr(operator_config, "_current", operator_config.OperatorConfig())
    return calls, answers


def stop():
    handler.stop(body=BODY, spec=SPEC, namespace="team", name="ft")


@pytest.mark.parametrize(
    ("delete_answer", "create_answer", "created"),
    [
        pytest.param(None, TERMINATING, ["ft-cleanup"], id="namespace-terminating-refuses-the-cleanup-job"),
        pytest.param(None, GONE, ["ft-cleanup"], id="namespace-already-gone"),
        pytest.param(GONE, GONE, ["ft-cleanup"], id="jobs-and-namespace-gone"),
        pytest.param(TERMINATING, TERMINATING, ["ft-cleanup"], id="everything-refused-while-terminating"),
        pytest.param(None, None, ["ft-cleanup"], id="normal-delete-creates-the-cleanup-job"),
    ],
)
def test_delete_finishes(api, delete_answer, create_answer, created):
    calls, answers = api
    answers.update(delete=delete_answer, create=create_answer)
    stop()  # returns: kopf releases the finalizer
    assert calls["deleted"] == ["ft-train", "ft-prepare"]
    assert calls["created"] == created


@pytest.mark.parametrize(
    ("delete_answer", "create_answer"),
    [
        pytest.param(None, RBAC, id="a-403-for-another-reason-is-not-swallowed"),
        pytest.param(None, UNAVAILABLE, id="a-transient-error-is-retried"),
        pytest.param(UNAVAILABLE, None, id="a-transient-error-deleting-jobs-is-retried"),
    ],
)
def test_delete_retries_other_errors(api, delete_answer, create_answer):
    calls, answers = api
    answers.update(delete=delete_answer, create=create_answer)
    with pytest.raises(ApiException):
        stop()


def test_the_cleanup_event_says_the_artifact_stays(api):
    calls, _ = api
    stop()
    [(kind, reason, message)] = calls["events"]
    assert (kind, reason) == ("Normal", "DeletingScratch")
    assert "pvc://finetune-artifacts/ft-uid-1" in message and "artifact stays" in message


def test_a_reconcile_in_a_terminating_namespace_starts_nothing_and_does_not_retry(api, monkeypatch):
    from finetune_operator.logic.finetunejob import Children

    calls, answers = api
    answers.update(create=TERMINATING)
    patched = []
    monkeypatch.setattr(handler._cache, "children", lambda namespace, name: Children())  # noqa: SLF001
    monkeypatch.setattr(handler._cache, "model_version", lambda namespace, uid: None)  # noqa: SLF001
    monkeypatch.setattr(handler.status, "patch", lambda *args: patched.append(args))
    body = {**BODY, "metadata": {**BODY["metadata"], "generation": 1}}
    decision = handler._reconcile_locked(body, handler.builders.Owner(name="ft", namespace="team", uid="uid-1"))
    assert decision.create and calls["created"]  # it tried, was refused, and stopped there
    assert patched == []
