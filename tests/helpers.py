"""Test helpers: polling with a deadline instead of sleeping."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Callable, TypeVar

import yaml

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Polls `check` until it returns something truthy; fails naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = check()
        except Exception as e:  # a transient API error is just "not yet"
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


@contextmanager
def environ(settings: Mapping[str, str | None]) -> Iterator[None]:
    """The process environment with `settings` (None: unset) for the duration of the block, e.g.
    while an operator process starts with them; restored afterwards."""
    saved = {key: os.environ.get(key) for key in settings}
    try:
        for key, value in settings.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def condition(obj: dict, kind: str) -> dict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


NOOP_TRAINER = "ghcr.io/finetune-operator/trainer-noop"
# The claim every test namespace has (tests/conftest.py creates it with the namespace; the dev
# cluster's provisioner binds it to a directory this machine can read, Cluster.claim_dir).
WORKSPACE_CLAIM = "workspace"
# Where no-op FineTuneJobs write: each run under <root>/<name>/<name>-<uid>, in the namespace's
# claim, so their Pods pass Pod Security "restricted" (no hostPath volume).
NOOP_OUTPUT_ROOT = f"pvc://{WORKSPACE_CLAIM}/finetune-noop"
# A node path the test operator allows as an output (FINETUNE_ALLOWED_HOST_PATHS), for tests whose
# point is a node path; their namespaces must opt out of "restricted" to run Pods there.
NOOP_HOST_OUTPUT_ROOT = "/tmp/finetune-noop"


def noop_finetunejob(name: str, *, image: str = NOOP_TRAINER, model_name: str | None = None,
                     **spec: Any) -> str:
    """A FineTuneJob for the no-op trainer image (the trainer's contract and results, no ML).

    It writes to NOOP_OUTPUT_ROOT/<name> in the namespace's claim (Cluster.local_path finds it
    here); its input paths are never read. `spec` adds or replaces top-level spec fields (e.g.
    evaluation, or output).
    """
    output = {"uri": f"{NOOP_OUTPUT_ROOT}/{name}", **({"modelName": model_name} if model_name else {})}
    return yaml.safe_dump({
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "/models/base"},
            "image": image,
            "dataset": {"uri": "/data/train.jsonl"},
            "resources": {"gpusPerNode": 1},
            "output": output,
            **spec,
        },
    })



def restricted(manifest: str) -> str:
    """`manifest` (YAML, one or more documents) with the securityContext Pod Security
    "restricted" asks for on every Pod, Job and Deployment Pod template in it that sets none:
    what the operator puts on its own Pods (finetune_operator.builders.security)."""
    from finetune_operator.builders import security

    def pod_specs(obj: dict) -> list[dict]:
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        if kind == "Pod":
            return [spec]
        if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
            return [spec.get("template", {}).get("spec") or {}]
        return []

    documents = [d for d in yaml.safe_load_all(manifest) if d]
    for document in documents:
        for pod_spec in pod_specs(document):
            pod_spec.setdefault("securityContext", security.restricted_pod_security_context())
            for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
                container.setdefault("securityContext", security.restricted_security_context())
    return yaml.safe_dump_all(documents)
