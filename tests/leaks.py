"""Where a run leaves text behind, for the secret-leak tests.

`traces` collects every place a FineTuneJob's run can write to, as text keyed by where it came
from: the operator's log, the namespace's Events, every object the operator or the Pods wrote
(FineTuneJobs, ModelVersions, Rollouts, ConfigMaps, Jobs, Pods), `kubectl logs` and the log file
of every Pod, the node agent's logs, and every file under the given output directories. A test
then asserts that a recognisable secret value appears in none of them, and that the traces are
not empty (a leak check over nothing would prove nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

KINDS = ("events", "finetunejobs", "modelversions", "rollouts.finetune.ai", "configmaps", "jobs", "pods")


def traces(cluster, namespace: str, operator_log: Path, outputs: Iterable[Path] = ()) -> dict[str, str]:
    places: dict[str, str] = {"operator log": Path(operator_log).read_text(errors="replace")}
    for kind in KINDS:
        places[kind] = cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
    for pod in (p["metadata"]["name"] for p in cluster.list("pods", namespace)):
        places[f"kubectl logs {pod}"] = cluster.kubectl("logs", pod, "-n", namespace, "--all-containers", check=False).stdout
        places[f"log file of {pod}"] = cluster.pod_log(namespace, pod, "trainer")
    for path in cluster.node_dir.rglob("*.log"):
        places[str(path.relative_to(cluster.node_dir))] = path.read_text(errors="replace")
    for root in outputs:
        for path in Path(root).rglob("*"):
            if path.is_file():
                places[str(path)] = path.read_bytes().decode(errors="replace")
    return places


def leaks(places: dict[str, str], value: str) -> list[str]:
    """The places `value` appears in."""
    assert value and len(value) >= 12, "a secret value short enough to appear by chance proves nothing"
    return sorted(where for where, text in places.items() if value in text)
