"""The dev cluster itself breaking under a pipeline: the API server, the node, a Pod, a rank.

* kube-apiserver restarted while the operator reconciles -> the pipeline completes, once;
* the node agent restarted during training (its Pods' processes die with it, as on a node that
  rebooted) -> the training resumes from its last checkpoint;
* a training Pod OOMKilled -> the FineTuneJob fails, says OOM, and is not retried pointlessly;
* one rank of a two-node training failing -> the whole gang restarts from the checkpoint (as
  JobSet's failure policy does), never a half-alive run.

Components are broken with `devcluster.chaos.restart_component`; a container is killed the way
the kernel's OOM killer does (SIGKILL of its process, which the node agent reports as
`OOMKilled`). The operator is the integration tests' real process, started for this module.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devcluster import chaos
from tests.helpers import WORKSPACE_CLAIM, condition, wait_for
from tests.integration.conftest import OperatorProcess, _start_operator, _stop_operator

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NOOP = "ghcr.io/finetune-operator/trainer-noop:0.1.0"
NOOP_SLOW = "ghcr.io/finetune-operator/trainer-noop:slow"  # train takes 30 s, checkpoints as asked
TRAINER = "ghcr.io/finetune-operator/trainer:0.1.0"
INDEX = "batch.kubernetes.io/job-completion-index"


@pytest.fixture(scope="module")
def operator(cluster, tmp_path_factory) -> Iterator[OperatorProcess]:
    process = _start_operator(cluster.kubeconfig, tmp_path_factory.mktemp("chaos-operator") / "operator.log")
    yield process
    _stop_operator(process)


@pytest.fixture
def show_log(operator, request) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"----- operator log -----\n{operator.log_tail()}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    setattr(item, f"rep_{outcome.get_result().when}", outcome.get_result())


def finetunejob(name: str, output: str, image: str = NOOP, **spec) -> str:
    return yaml.safe_dump({
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "/models/base"},
            "image": image,
            "dataset": {"uri": "/data/train.jsonl"},
            "resources": {"gpusPerNode": 1},
            "output": {"uri": output},
            **spec,
        },
    })


def status_of(cluster, namespace: str, name: str) -> dict:
    return cluster.get("finetunejob", name, namespace).get("status") or {}


def finished(cluster, namespace: str, name: str, timeout: float) -> dict:
    def done():
        s = status_of(cluster, namespace, name)
        seen.append(f"phase {s.get('phase')}: {s.get('message')}")
        return s if s.get("phase") in ("Succeeded", "Failed") else None

    seen: list[str] = []
    try:
        return wait_for(done, timeout, f"FineTuneJob {name} to finish")
    except AssertionError as exc:
        jobs = {j["metadata"]["name"]: [(c["type"], c["status"]) for c in (j.get("status") or {}).get("conditions") or []]
                for j in cluster.list("jobs", namespace, selector=f"finetune.ai/finetunejob={name}")}
        pods = {p["metadata"]["name"]: (p["status"].get("phase"), p["status"].get("reason"))
                for p in cluster.list("pods", namespace)}
        raise AssertionError(f"{exc}; status {seen[-1:]}; jobs {jobs}; pods {pods}") from None


def jobs_by_stage(cluster, namespace: str, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for job in cluster.list("jobs", namespace, selector=f"finetune.ai/finetunejob={name}"):
        out.setdefault(job["metadata"]["labels"].get("finetune.ai/stage", "?"), []).append(job["metadata"]["name"])
    return out


def train_pods(cluster, namespace: str, name: str) -> list[dict]:
    pods = cluster.list("pods", namespace, selector=f"job-name={name}-train")
    return sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"])


def progress_events(cluster, namespace: str, pod: dict) -> list[dict]:
    log = cluster.pod_log(namespace, pod["metadata"]["name"], "trainer")
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def newest_checkpoint(output: Path) -> int:
    steps = [int(p.parent.name.removeprefix("checkpoint-")) for p in output.rglob("checkpoint-*/trainer_state.json")]
    return max(steps, default=0)


# --------------------------------------------------------------------------- the API server


# The no-op jobs write to the namespace's claim (their Pods pass Pod Security "restricted").
OUTPUT = f"pvc://{WORKSPACE_CLAIM}/out"


def test_api_server_restarted_during_a_reconcile(cluster, namespace, operator, show_log):
    cluster.apply(finetunejob("through-outage", OUTPUT), namespace)
    # Mid-pipeline: the operator has created the first Job and is reconciling its progress.
    wait_for(lambda: jobs_by_stage(cluster, namespace, "through-outage").get("prepare"), 60, "the prepare Job")
    down = chaos.restart_component(cluster.state, "kube-apiserver", sig=signal.SIGKILL, down_seconds=2)
    # After a restart the API server's RBAC authorizer refuses until its caches fill, and the
    # controller manager's informers back off (up to a minute on a loaded machine) before they
    # see Pods finish again: the promise is "completes, once", not "within the first minute".
    status = finished(cluster, namespace, "through-outage", 300)
    assert status["phase"] == "Succeeded", status.get("message")
    stages = jobs_by_stage(cluster, namespace, "through-outage")
    assert all(len(names) == 1 for names in stages.values()), stages
    versions = cluster.list("modelversions", namespace)
    assert len(versions) == 1, [v["metadata"]["name"] for v in versions]
    assert operator.process.poll() is None, "the operator died with the API server"
    print(f"kube-apiserver was down {down:.1f}s")


# --------------------------------------------------------------------------- the node


def test_node_agent_restarted_during_training_resumes_from_the_checkpoint(cluster, namespace, operator, show_log):
    output = cluster.local_path(namespace, OUTPUT)
    cluster.apply(finetunejob("node-lost", OUTPUT, image=NOOP_SLOW, hyperparameters={"maxSteps": 30},
                              checkpointing={"intervalSteps": 3}, evaluation={"enabled": False}), namespace)
    checkpoint = wait_for(lambda: newest_checkpoint(output) >= 3 and newest_checkpoint(output), 90, "a first checkpoint")
    first = train_pods(cluster, namespace, "node-lost")
    assert len(first) == 1
    chaos.restart_component(cluster.state, "node-agent", sig=signal.SIGTERM)
    status = finished(cluster, namespace, "node-lost", 120)
    assert status["phase"] == "Succeeded", status.get("message")
    pods = train_pods(cluster, namespace, "node-lost")
    assert len(pods) == 2, [(p["metadata"]["name"], p["status"].get("phase"), p["status"].get("reason")) for p in pods]
    lost = pods[0]
    assert lost["status"]["phase"] == "Failed" and lost["status"].get("reason") == "NodeAgentRestarted", lost["status"]
    resumed = [e for e in progress_events(cluster, namespace, pods[-1]) if e.get("event") in ("started", "resumed")]
    assert resumed and resumed[0]["event"] == "resumed" and resumed[0]["from_step"] >= checkpoint, resumed
    assert status.get("restarts", 0) >= 1 or any(c.get("reason") for c in status.get("conditions") or [])


# --------------------------------------------------------------------------- a Pod out of memory


def test_oom_killed_training_is_reported_as_oom_and_not_retried(cluster, namespace, operator, show_log):
    cluster.apply(finetunejob("too-big", OUTPUT, image=NOOP_SLOW, evaluation={"enabled": False}), namespace)
    pod = wait_for(lambda: next((p for p in train_pods(cluster, namespace, "too-big") if chaos_pid(p)), None), 90,
                   "the training Pod to run")
    os.kill(chaos_pid(pod), signal.SIGKILL)  # what the kernel's OOM killer does
    status = finished(cluster, namespace, "too-big", 45)
    assert status["phase"] == "Failed"
    trained = condition({"status": status}, "Trained") or {}
    text = f"{status.get('message')} {trained.get('message')}"
    assert "OOM" in text or "out of memory" in text, status
    pods = train_pods(cluster, namespace, "too-big")
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled", terminated
    assert len(pods) == 1, f"an OOM was retried {len(pods) - 1} times: {[p['metadata']['name'] for p in pods]}"


def chaos_pid(pod: dict) -> int | None:
    """The local process of a running container (the node agent's containerID)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        cid = status.get("containerID") or ""
        if "running" in (status.get("state") or {}) and cid.startswith("devcluster://"):
            return int(cid.removeprefix("devcluster://"))
    return None


# --------------------------------------------------------------------------- one rank of a gang


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from finetune_trainer.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


@pytest.mark.pod_security("privileged", reason="two real trainer ranks read a tiny model and a dataset from node paths "
                         "and the test watches their checkpoints there (hostPath volumes)")
def test_one_rank_failing_restarts_the_whole_gang_from_the_checkpoint(cluster, namespace, operator, show_log, tiny_model, tmp_path):
    from finetune_trainer.testing import json_format_records

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in json_format_records(40)))
    output = tmp_path / "out"
    cluster.apply(yaml.safe_dump({
        "apiVersion": "finetune.ai/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "gang"},
        "spec": {
            "baseModel": {"uri": str(tiny_model)}, "image": TRAINER,
            "dataset": {"uri": str(data), "format": "instruction"},
            "hyperparameters": {"maxSteps": 40, "batchSize": 2, "learningRate": 0.001, "maxSeqLength": 64},
            "checkpointing": {"intervalSteps": 4}, "earlyStopping": {"enabled": False},
            "resources": {"nodes": 2, "gpusPerNode": 1, "cpu": 1}, "evaluation": {"enabled": False},
            "output": {"uri": str(output)},
        },
    }), namespace)
    try:
        checkpoint = wait_for(lambda: newest_checkpoint(output) >= 4 and newest_checkpoint(output), 180, "a first checkpoint")
        pods = {p["metadata"]["annotations"][INDEX]: p for p in train_pods(cluster, namespace, "gang")}
        rank1 = chaos_pid(pods["1"])
        assert rank1, "rank 1 is not running"
        workers = _children(rank1)  # torchrun's worker: its crash fails torchrun with exit 1
        os.kill(workers[0] if workers else rank1, signal.SIGKILL)
        failed_at = time.monotonic()
        rank0_uid = pods["0"]["metadata"]["uid"]

        def gang_restarted():
            current = {p["metadata"]["annotations"][INDEX]: p for p in train_pods(cluster, namespace, "gang")
                       if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") in ("Pending", "Running")}
            return set(current) == {"0", "1"} and current["0"]["metadata"]["uid"] != rank0_uid

        wait_for(gang_restarted, 60, "rank 0 to be restarted with rank 1 (the whole gang)")
        restarted_after = time.monotonic() - failed_at
        status = finished(cluster, namespace, "gang", 180)
        assert status["phase"] == "Succeeded", status.get("message")
        last = {p["metadata"]["annotations"][INDEX]: p for p in train_pods(cluster, namespace, "gang")
                if p["status"].get("phase") == "Succeeded"}
        assert sorted(last) == ["0", "1"] and last["0"]["metadata"]["uid"] != rank0_uid, sorted(last)
        # Rank 0 reports progress for the gang: the new run began at the checkpoint, not at step 0.
        begun = [e for e in progress_events(cluster, namespace, last["0"]) if e.get("event") in ("started", "resumed")]
        assert begun and begun[0]["event"] == "resumed" and begun[0]["from_step"] >= checkpoint, begun
        print(f"gang restarted {restarted_after:.1f}s after rank 1 failed")
    finally:
        # A half-alive rank 0 would hold the rendezvous port for the next multi-node run.
        cluster.kubectl("delete", "finetunejob", "gang", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force", check=False)
