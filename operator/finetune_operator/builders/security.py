"""The sandbox every Pod the operator makes runs in: Pod Security "restricted".

Prepare, train, evaluate, cleanup, retention, verify and serving Pods all get the same two
settings, so a namespace labelled `pod-security.kubernetes.io/enforce=restricted` admits them:

- Pod level: runAsNonRoot with a fixed non-root uid (the trainer image's user; serving images
  run as it too), fsGroup so mounted claims are writable by it, seccompProfile RuntimeDefault.
- Container level: no privilege escalation, every capability dropped, a read-only root
  filesystem. Processes write only to emptyDirs (`/tmp`: HOME and caches) and to the mounted
  output location.

`violations()` states the "restricted" level's rules as data so tests can check every rendered
Pod the way the API server's Pod Security admission does (the rules of
https://kubernetes.io/docs/concepts/security/pod-security-standards/, restricted, latest).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RUN_AS_USER = 10001  # the trainer image's user
SECCOMP_RUNTIME_DEFAULT = {"type": "RuntimeDefault"}

# Volume types the restricted level allows; anything else (hostPath first of all) is refused.
RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)


def restricted_pod_security_context(run_as_user: int = RUN_AS_USER) -> dict[str, Any]:
    """The Pod-level securityContext of every Pod the operator makes."""
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "fsGroup": run_as_user,
        "seccompProfile": dict(SECCOMP_RUNTIME_DEFAULT),
    }


def restricted_security_context(run_as_user: int = RUN_AS_USER) -> dict[str, Any]:
    """The container-level securityContext of every container the operator makes."""
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(SECCOMP_RUNTIME_DEFAULT),
    }


def violations(pod_spec: Mapping[str, Any]) -> list[str]:
    """What the Pod Security "restricted" level would refuse in `pod_spec` (empty: admitted)."""
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(f"spec.{flag} is true")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume.get('name')!r} has type {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")
    containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    for container in containers:
        name = container.get("name")
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"container {name!r} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name!r} must set allowPrivilegeEscalation=false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"container {name!r} must drop ALL capabilities")
        added = set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"container {name!r} adds capabilities {sorted(added)}")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"container {name!r} must set runAsNonRoot=true (Pod or container)")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"container {name!r} runs as uid 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"container {name!r} must set seccompProfile RuntimeDefault or Localhost")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"container {name!r} uses hostPort {port['hostPort']}")
    return problems
