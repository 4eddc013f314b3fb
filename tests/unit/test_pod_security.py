"""Every Pod the operator renders passes Pod Security "restricted" and has a read-only root.

One row per Pod the operator makes (prepare, train, multi-node train, evaluate, cleanup,
retention, serving with its verify init container). The checker is `security.violations`, the
restricted level's rules as data; the rows below it show that each rule can fail.
"""

from __future__ import annotations

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.api.rollout import RolloutSpec
from finetune_operator.builders import finetunejob, modelversion, rollout, security

FTJ_OWNER = finetunejob.Owner(name="ft", namespace="team", uid="uid-1")
RO_OWNER = rollout.Owner(name="chat", namespace="team", uid="uid-2")
BASE = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
DIGEST = "sha256:" + "ab" * 32
SETTINGS = finetunejob.Settings(artifact_store="pvc://finetune-artifacts")
HOST_PATHS = finetunejob.Settings(allowed_host_paths=("/artifacts",))


def ftj(**changes) -> FineTuneJobSpec:
    raw = {"baseModel": {"uri": BASE}, "dataset": {"uri": "pvc://data/train.jsonl"}, **changes}
    return FineTuneJobSpec.model_validate(raw)


def pod_of(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def serving(**fields) -> RolloutSpec:
    return RolloutSpec.model_validate({"modelName": "chat", "track": "LatestApproved", "serving": fields})


MODEL_VERSION = {
    "metadata": {"name": "chat-v1", "namespace": "team", "uid": "uid-3"},
    "spec": {"artifact": {"uri": "pvc://finetune-artifacts/ft-uid-1/adapter", "digest": DIGEST}},
}

PODS = {
    "prepare": lambda: pod_of(finetunejob.prepare_job(FTJ_OWNER, ftj(), SETTINGS)),
    "prepare-s3-output": lambda: pod_of(finetunejob.prepare_job(FTJ_OWNER, ftj(output={"uri": "s3://out/runs"}), SETTINGS)),
    "train": lambda: pod_of(finetunejob.train_job(FTJ_OWNER, ftj(), SETTINGS)),
    "train-multinode": lambda: pod_of(
        finetunejob.train_job(FTJ_OWNER, ftj(resources={"nodes": 2, "gpusPerNode": 2}), SETTINGS)
    ),
    "evaluate": lambda: pod_of(finetunejob.eval_job(FTJ_OWNER, ftj(), SETTINGS)),
    "cleanup": lambda: pod_of(finetunejob.cleanup_job(FTJ_OWNER, ftj(), SETTINGS)),
    "retention": lambda: pod_of(modelversion.artifact_cleanup_job(MODEL_VERSION, "trainer:1")),
    "verify": lambda: pod_of(modelversion.verify_job(MODEL_VERSION, "trainer:1")),
    "serving-vllm": lambda: pod_of(
        rollout.deployment(RO_OWNER, serving(), rollout.ServedVersion("v1", BASE, "s3://models/chat/v1"), 1)
    ),
    "serving-custom-with-verify": lambda: pod_of(
        rollout.deployment(
            RO_OWNER,
            serving(type="custom", image="srv"),
            rollout.ServedVersion("v1", BASE, "pvc://models/chat/v1", "adapter", DIGEST),
            1,
            verifier_image="trainer:1",
        )
    ),
}


@pytest.mark.parametrize("render", PODS.values(), ids=PODS.keys())
def test_every_pod_passes_the_restricted_level(render):
    pod = render()
    assert security.violations(pod) == []
    assert pod["securityContext"] == security.restricted_pod_security_context()
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    for container in containers:
        assert container["securityContext"] == security.restricted_security_context(), container["name"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("render", [PODS["prepare"], PODS["train"], PODS["evaluate"], PODS["serving-vllm"]],
                         ids=["prepare", "train", "evaluate", "serving"])
def test_processes_write_only_to_emptydirs_and_the_output(render):
    """A read-only root: HOME and the caches are under /tmp, which is an emptyDir."""
    pod = render()
    volumes = {v["name"]: v for v in pod["volumes"]}
    [container] = pod["containers"]
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in volumes[tmp[0]["name"]]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOME"] == "/tmp"


def test_node_path_outputs_are_the_one_thing_restricted_refuses():
    """hostPath volumes (development outputs under an allowed prefix) need a privileged namespace."""
    pod = pod_of(finetunejob.train_job(FTJ_OWNER, ftj(output={"uri": "/artifacts/runs"}), HOST_PATHS))
    assert security.violations(pod) == ["volume 'output' has type ['hostPath']"]


GOOD_CONTAINER = {"name": "c", "securityContext": security.restricted_security_context()}


def _pod(container_sc=None, pod_sc=None, **extra) -> dict:
    container = {"name": "c", "securityContext": container_sc if container_sc is not None else GOOD_CONTAINER["securityContext"]}
    return {"securityContext": pod_sc or {}, "containers": [container], **extra}


def _without(key: str) -> dict:
    return {k: v for k, v in security.restricted_security_context().items() if k != key}


@pytest.mark.parametrize(
    "pod, problem",
    [
        (_pod(_without("allowPrivilegeEscalation")), "allowPrivilegeEscalation=false"),
        (_pod(_without("capabilities")), "drop ALL capabilities"),
        (_pod({**_without("capabilities"), "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}), "adds capabilities"),
        (_pod(_without("runAsNonRoot")), "runAsNonRoot=true"),
        (_pod({**security.restricted_security_context(), "runAsUser": 0}), "uid 0"),
        (_pod(_without("seccompProfile")), "seccompProfile"),
        (_pod({**security.restricted_security_context(), "privileged": True}), "privileged"),
        (_pod(hostNetwork=True), "hostNetwork"),
        (_pod(volumes=[{"name": "node", "hostPath": {"path": "/"}}]), "hostPath"),
    ],
    ids=["escalation", "capabilities", "added-capability", "non-root", "uid-0", "seccomp", "privileged",
         "host-network", "host-path"],
)
def test_the_checker_refuses_what_restricted_refuses(pod, problem):
    problems = security.violations(pod)
    assert len(problems) == 1 and problem in problems[0], problems


def test_pod_level_settings_count_for_every_container():
    pod = _pod(_without("runAsNonRoot"), pod_sc={"runAsNonRoot": True})
    assert security.violations(pod) == []
