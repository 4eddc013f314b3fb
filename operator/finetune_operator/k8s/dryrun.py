"""Server-side dry runs of a FineTuneJob's children, before any of them exists.

Schema and CEL catch what the FineTuneJob's own CRD can see. What only the API server's
validation of the children sees (a toleration without a key, a nodeSelector key with a space, a
name that makes a child label longer than 63 characters) would otherwise surface as a Job that
never appears while the job says "preparing" forever. So before the first child is created,
each is created as a dry run; a refusal becomes a SpecProblem naming the spec field it came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import kubernetes

from finetune_operator.k8s import apply
from finetune_operator.k8s.resources import FIELD_MANAGER
from finetune_operator.logic.spec import SpecProblem

# Where a field of a child comes from in the FineTuneJob (first match wins).
_SPEC_FIELD_OF_CHILD_FIELD = (
    (re.compile(r"nodeSelector"), "spec.resources.nodeSelector", "use label keys and values Kubernetes accepts"),
    (re.compile(r"tolerations"), "spec.resources.tolerations", "give each toleration a key unless its operator is Exists"),
    (re.compile(r"affinity"), "spec.resources.affinity", "write a valid Pod affinity"),
    (re.compile(r"priorityClassName"), "spec.resources.priorityClassName", "name an existing PriorityClass"),
    (re.compile(r"resources"), "spec.resources", "use valid cpu and memory quantities"),
    (re.compile(r"\.image$"), "spec.image", "name a valid image"),
    (re.compile(r"(^|\.)(name|labels|generateName|subdomain)"), "metadata.name",
     "use a shorter FineTuneJob name: its children's names and labels must fit in 63 characters"),
)


# Children made from the job's name alone (and the operator's settings): the API server could
# refuse them only for their name or labels, and the Jobs carry the same labels under names it
# checks as strictly (a Job's name must fit a 63-character label; these are DNS subdomains). So
# the Jobs' dry runs speak for them, and a new job sends three requests fewer.
NAME_ONLY_KINDS = frozenset({"ServiceAccount", "Role", "RoleBinding"})


def spec_field_of(child_field: str) -> tuple[str, str]:
    """(spec field, fix) for a field path of a child object in the API server's answer."""
    for pattern, spec_field, fix in _SPEC_FIELD_OF_CHILD_FIELD:
        if pattern.search(child_field):
            return spec_field, fix
    return "spec", "correct the spec"


def problems_of_refusal(obj: Mapping[str, Any], status_body: str) -> tuple[SpecProblem, ...]:
    """SpecProblems for the API server's refusal (a Status object) of creating `obj`."""
    try:
        answer = json.loads(status_body or "{}")
    except ValueError:
        answer = {}
    what = f"{obj['kind']} {obj['metadata']['name']}"
    causes = ((answer.get("details") or {}).get("causes")) or [{"field": "", "message": answer.get("message", "refused")}]
    problems = []
    for cause in causes:
        spec_field, fix = spec_field_of(cause.get("field") or "")
        problems.append(SpecProblem(spec_field, f"the API server refuses the {what} made from it: {cause.get('message', '')}", fix))
    return tuple(dict.fromkeys(problems))


def refusals(objects: Iterable[Mapping[str, Any]]) -> tuple[SpecProblem, ...]:
    """Create each object as a server-side dry run; the spec problems of those refused as invalid.

    Only an invalid object (422, 400) is the spec's fault; an object that exists already (a
    re-run), a namespace going away or a transient error is not, and is left to the real create.
    """
    return tuple(dict.fromkeys(problem for found in apply.concurrently(_refusal, objects) for problem in found))


def _refusal(obj: Mapping[str, Any]) -> tuple[SpecProblem, ...]:
    try:
        apply._resource(obj).create(  # noqa: SLF001 - the same resource lookup as a real create
            body=dict(obj), namespace=obj["metadata"].get("namespace"), field_manager=FIELD_MANAGER, dry_run="All"
        )
    except kubernetes.client.ApiException as exc:
        if exc.status in (400, 422):
            return problems_of_refusal(obj, exc.body)
    return ()
