"""The operator's ServiceAccount cannot use its Role/RoleBinding rights to escalate.

The chart's ValidatingAdmissionPolicy lets the operator's ServiceAccount create only the
trainer's progress-channel Role and RoleBinding. Each row impersonates that ServiceAccount
(`kubectl --as`) and tries one escalation: every one must be refused, and those RBAC alone would
allow (a Role granting only what the operator holds) must be refused by the policy.
"""

from __future__ import annotations

import json

import pytest

from finetune_operator.builders import finetunejob
from tests.helpers import wait_for
from tests.integration.test_chart import CHART, helm

pytestmark = pytest.mark.cluster


@pytest.fixture
def installed(cluster, namespace):
    """The chart rendered for `namespace` and applied; yields the operator's ServiceAccount user."""
    fullname = f"ft-{namespace}"[:63]
    rendered = helm(cluster, "template", "ft", str(CHART), "--namespace", namespace, "--kube-version", "1.36.3",
                    "--set", f"fullnameOverride={fullname}")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rendered)
    yield f"system:serviceaccount:{namespace}:{fullname}"
    for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
        cluster.kubectl("delete", kind, f"{fullname}-trainer-rbac-only", "--wait=false", check=False)
    for kind in ("clusterrolebinding", "clusterrole"):
        cluster.kubectl("delete", kind, fullname, f"{fullname}-cluster", "--ignore-not-found", "--wait=false", check=False)


def create_as(cluster, namespace, user, obj):
    return cluster.kubectl("create", "--dry-run=server", "-n", namespace, f"--as={user}", "-f", "-",
                           input=json.dumps(obj), check=False)


def trainer_objects(namespace):
    owner = finetunejob.Owner(name="job", namespace=namespace, uid="uid-1")
    _, role, binding = finetunejob.trainer_rbac(owner)
    # No FineTuneJob `job` exists here: with its ownerReference the garbage collector would delete
    # the Role whenever it gets to it, and the binding's escalation check would then find no Role.
    for obj in (role, binding):
        obj["metadata"].pop("ownerReferences", None)
    return role, binding


def role(namespace, name="esc-trainer", **rule):
    base = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["job-progress"], "verbs": ["get", "patch"]}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace}, "rules": [{**base, **rule}]}


def binding(namespace, name="job-trainer", role_ref=None, subjects=None):
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": role_ref or {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subjects if subjects is not None else [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}


ESCALATIONS = {
    "role-every-configmap": lambda ns, user: role(ns, resourceNames=None),
    "role-delete-configmaps": lambda ns, user: role(ns, verbs=["get", "patch", "delete"]),
    "role-jobs": lambda ns, user: role(ns, apiGroups=["batch"], resources=["jobs"], verbs=["create"]),
    "role-two-rules": lambda ns, user: {**role(ns), "rules": role(ns)["rules"] * 2},
    "role-another-name": lambda ns, user: role(ns, name="helper"),
    "role-another-configmap": lambda ns, user: role(ns, resourceNames=["kube-root-ca.crt"]),
    "role-a-progress-wildcard": lambda ns, user: role(ns, resourceNames=["*"]),
    "binding-to-a-user": lambda ns, user: binding(ns, subjects=[{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]),
    "binding-to-itself": lambda ns, user: binding(ns, subjects=[{"kind": "ServiceAccount", "name": user.rsplit(":", 1)[1], "namespace": ns}]),
    "binding-to-another-namespace": lambda ns, user: binding(ns, subjects=[{"kind": "ServiceAccount", "name": "job-trainer", "namespace": "kube-system"}]),
    "binding-a-clusterrole": lambda ns, user: binding(
        ns, role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user.rsplit(":", 1)[1] + "-cluster"}),
    "binding-two-subjects": lambda ns, user: binding(
        ns, subjects=[{"kind": "ServiceAccount", "name": "job-trainer", "namespace": ns}, {"kind": "ServiceAccount", "name": "default", "namespace": ns}]),
}


def test_the_operator_creates_the_trainer_rbac_and_nothing_wider(cluster, namespace, installed):
    user = installed
    # What the operator really creates is admitted (the Role for real: a binding needs it).
    trainer_role, trainer_binding = trainer_objects(namespace)
    wait_for(lambda: cluster.kubectl("create", "-n", namespace, f"--as={user}", "-f", "-", input=json.dumps(trainer_role),
                                     check=False).returncode == 0, 120, f"the trainer's Role to be created by {user}")
    # The policy becomes active a moment after it is created: wait for the first refusal.
    first = ESCALATIONS["role-every-configmap"](namespace, user)
    wait_for(lambda: "trainer-rbac-only" in create_as(cluster, namespace, user, first).stderr, 180,
             "the trainer-rbac-only policy to refuse a Role over every ConfigMap")
    # RBAC checks a binding against the Role in its cache, which may not hold the new Role yet.
    wait_for(lambda: create_as(cluster, namespace, user, trainer_binding).returncode == 0, 60,
             f"the trainer's RoleBinding to be admitted for {user}")
    admitted, not_by_the_policy = {}, {}
    for name, make in ESCALATIONS.items():
        result = create_as(cluster, namespace, user, make(namespace, user))
        if result.returncode == 0:
            admitted[name] = "admitted"
        elif "trainer-rbac-only" not in result.stderr:
            not_by_the_policy[name] = result.stderr
    assert admitted == {}
    # The Role rows grant only what the operator holds, so RBAC alone would let them through:
    # the policy must be what refuses them. (Some bindings are refused by RBAC's own checks first.)
    assert {name: err for name, err in not_by_the_policy.items() if name.startswith("role-") and name != "role-jobs"
            and name != "role-delete-configmaps"} == {}
    # An administrator is not bound by it.
    assert cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-",
                           input=json.dumps(role(namespace, name="admin-made", resourceNames=None))).returncode == 0
