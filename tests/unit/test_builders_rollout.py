"""The serving children of a Rollout as rendered from (Owner, RolloutSpec, ServedVersion).

Each row is one way a version can be served (an adapter on a Hugging Face base, artifacts on a
PVC, a full model, a custom server, more GPUs...) and what the Deployment must then say; the
Services rows say which version's Pods `<rollout>-<version>`, `<rollout>-stable` and
`<rollout>-canary` select.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from finetune_operator.api.rollout import RolloutSpec
from finetune_operator.builders import rollout as builders
from finetune_operator.builders.rollout import Owner, ServedVersion

OWNER = Owner(name="chat", namespace="team", uid="uid-1")
OWNER_REFERENCE = {
    "apiVersion": "finetune.ai/v1alpha1",
    "kind": "Rollout",
    "name": "chat",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}
BASE = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
ADAPTER = ServedVersion("v2", BASE, "s3://models/chat/v2")
SELECTS_V2 = {"finetune.ai/rollout": "chat", "finetune.ai/model-version": "v2"}
VLLM_ADAPTER_ARGS = [
    "--model", "$(BASE_MODEL)", "--host", "0.0.0.0", "--port", "$(PORT)", "--served-model-name", "$(MODEL_NAME)",
    "--enable-lora", "--lora-modules", "$(MODEL_NAME)-$(MODEL_VERSION)=$(ADAPTER_PATH)",
]
SCRATCH_VOLUME = ("scratch", {"emptyDir": {}})


def rollout_spec(**serving: Any) -> RolloutSpec:
    return RolloutSpec.model_validate({"modelName": "chat", "track": "LatestApproved", "serving": serving})


def facts(deployment: dict[str, Any]) -> dict[str, Any]:
    """What a row may check about a rendered Deployment."""
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    args = container.get("args", [])
    probe = container["readinessProbe"]["httpGet"]
    return {
        "name": deployment["metadata"]["name"],
        "namespace": deployment["metadata"]["namespace"],
        "labels": deployment["metadata"]["labels"],
        "owner_references": deployment["metadata"]["ownerReferences"],
        "selector": deployment["spec"]["selector"]["matchLabels"],
        "pod_labels": pod["metadata"]["labels"],
        "replicas": deployment["spec"].get("replicas"),
        "image": container["image"],
        "command": container.get("command"),
        "args": args,
        "model_arg": args[args.index("--model") + 1] if "--model" in args else None,
        "lora": "--enable-lora" in args or "--lora-modules" in args,
        "env": {e["name"]: e.get("value") for e in container["env"] if "value" in e},
        "ports": container["ports"],
        "readiness": (probe["path"], probe["port"]),
        "limits": container.get("resources", {}).get("limits"),
        "volumes": [(v["name"], {k: x for k, x in v.items() if k != "name"}) for v in pod["spec"]["volumes"]],
        "mounts": [(m["name"], m["mountPath"]) for m in container["volumeMounts"]],
        "node_selector": pod["spec"].get("nodeSelector"),
        "tolerations": pod["spec"].get("tolerations"),
    }


@pytest.mark.parametrize(
    ("serving", "served", "replicas", "expected"),
    [
        pytest.param(
            {}, ADAPTER, 1,
            dict(
                name="chat-v2", namespace="team", owner_references=[OWNER_REFERENCE], replicas=1,
                labels={"app.kubernetes.io/managed-by": "finetune-operator", "finetune.ai/rollout": "chat",
                        "finetune.ai/model-version": "v2", "finetune.ai/model-name": "chat"},
                selector=SELECTS_V2,
                pod_labels={**SELECTS_V2, "finetune.ai/model-name": "chat", "finetune.ai/serve": "true"},
                image=builders.DEFAULT_VLLM_IMAGE, command=None, args=VLLM_ADAPTER_ARGS,
                ports=[{"name": "http", "containerPort": 8000}], readiness=("/health", "http"),
                limits={"nvidia.com/gpu": "1"}, volumes=[SCRATCH_VOLUME], mounts=[("scratch", "/tmp")],
                node_selector=None, tolerations=None,
            ),
            id="adapter-on-hugging-face-base-served-by-vllm-multi-lora",
        ),
        pytest.param(
            {}, ADAPTER, 1,
            dict(env={"MODEL_NAME": "chat", "MODEL_VERSION": "v2", "BASE_MODEL": BASE,
                      "ADAPTER_PATH": "s3://models/chat/v2", "ADAPTER_URI": "s3://models/chat/v2", "ARTIFACT_DIGEST": "",
                      "PORT": "8000", "HOME": "/tmp"}),
            id="version-to-serve-is-in-the-environment",
        ),
        pytest.param(
            {}, ServedVersion("v2", "pvc://base-models/smol", "pvc://models/chat/v2"), 1,
            dict(
                env={"MODEL_NAME": "chat", "MODEL_VERSION": "v2", "BASE_MODEL": "/mnt/pvc/base-models/smol",
                     "ADAPTER_PATH": "/mnt/pvc/models/chat/v2", "ADAPTER_URI": "pvc://models/chat/v2", "ARTIFACT_DIGEST": "",
                     "PORT": "8000", "HOME": "/tmp"},
                volumes=[("pvc-0", {"persistentVolumeClaim": {"claimName": "base-models", "readOnly": True}}),
                         ("pvc-1", {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}}),
                         SCRATCH_VOLUME],
                mounts=[("pvc-0", "/mnt/pvc/base-models"), ("pvc-1", "/mnt/pvc/models"), ("scratch", "/tmp")],
            ),
            id="pvc-uris-mounted-read-only-under-mnt-pvc-claim",
        ),
        pytest.param(
            {}, ServedVersion("v2", "pvc://models/base/smol", "pvc://models/chat/v2"), 1,
            dict(volumes=[("pvc-0", {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}}),
                          SCRATCH_VOLUME]),
            id="one-claim-for-base-and-artifact-is-mounted-once",
        ),
        pytest.param(
            {}, ServedVersion("v2", BASE, "file:///srv/models/chat/v2"), 1,
            dict(
                env={"MODEL_NAME": "chat", "MODEL_VERSION": "v2", "BASE_MODEL": BASE,
                     "ADAPTER_PATH": "/srv/models/chat/v2", "ADAPTER_URI": "file:///srv/models/chat/v2", "ARTIFACT_DIGEST": "",
                     "PORT": "8000", "HOME": "/tmp"},
                volumes=[("artifact", {"hostPath": {"path": "/srv/models/chat/v2", "type": "Directory"}}),
                         SCRATCH_VOLUME],
                mounts=[("artifact", "/srv/models/chat/v2"), ("scratch", "/tmp")],
            ),
            id="file-artifact-mounted-from-the-node",
        ),
        pytest.param(
            {}, ServedVersion("v2", BASE, "s3://models/chat/v2", artifact_type="full"), 1,
            dict(model_arg="$(ADAPTER_PATH)", lora=False),
            id="full-model-artifact-served-as-the-model",
        ),
        pytest.param(
            {"args": ["--max-model-len", "4096"]}, ADAPTER, 1,
            dict(args=[*VLLM_ADAPTER_ARGS, "--max-model-len", "4096"], model_arg="$(BASE_MODEL)", lora=True),
            id="extra-vllm-args-follow-the-generated-ones",
        ),
        pytest.param(
            {"type": "custom", "image": "ghcr.io/acme/server:1", "command": ["python", "-m", "serve"],
             "args": ["--adapter", "$(ADAPTER_PATH)"]},
            ADAPTER, 1,
            dict(image="ghcr.io/acme/server:1", command=["python", "-m", "serve"],
                 args=["--adapter", "$(ADAPTER_PATH)"], lora=False,
                 ports=[{"name": "http", "containerPort": 8000}], readiness=("/health", "http")),
            id="custom-server-runs-image-command-and-args-as-given",
        ),
        pytest.param(
            {"type": "custom", "image": "ghcr.io/acme/server:1"}, ADAPTER, 1,
            dict(command=None, args=[]),
            id="custom-server-without-command-keeps-image-entrypoint",
        ),
        pytest.param(
            {"image": "registry.local/vllm:pinned"}, ADAPTER, 1,
            dict(image="registry.local/vllm:pinned", args=VLLM_ADAPTER_ARGS),
            id="vllm-with-own-image",
        ),
        pytest.param(
            {"resources": {"gpus": 2, "cpu": "8", "memory": "64Gi"}}, ADAPTER, 1,
            dict(limits={"nvidia.com/gpu": "2", "cpu": "8", "memory": "64Gi"}),
            id="gpus-cpu-and-memory-limits",
        ),
        pytest.param(
            {"resources": {"gpus": 1, "gpuResourceName": "amd.com/gpu"}}, ADAPTER, 1,
            dict(limits={"amd.com/gpu": "1"}),
            id="other-gpu-vendor",
        ),
        pytest.param(
            {"resources": {"gpus": 0}}, ADAPTER, 1,
            dict(limits=None),
            id="no-gpus-no-limits",
        ),
        pytest.param(
            {"port": 9000}, ADAPTER, 1,
            dict(ports=[{"name": "http", "containerPort": 9000}], readiness=("/health", "http")),
            id="own-port-still-named-http",
        ),
        pytest.param(
            {"env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]}, ADAPTER, 1,
            dict(env={"MODEL_NAME": "chat", "MODEL_VERSION": "v2", "BASE_MODEL": BASE,
                      "ADAPTER_PATH": "s3://models/chat/v2", "ADAPTER_URI": "s3://models/chat/v2", "ARTIFACT_DIGEST": "",
                      "PORT": "8000", "HOME": "/tmp", "VLLM_LOGGING_LEVEL": "DEBUG"}),
            id="extra-environment",
        ),
        pytest.param(
            {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
            ADAPTER, 3,
            dict(node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"},
                 tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                 replicas=3),
            id="placement-and-replicas",
        ),
    ],
)
def test_deployment(serving, served, replicas, expected):
    rendered = facts(builders.deployment(OWNER, rollout_spec(**serving), served, replicas))
    assert {k: rendered[k] for k in expected} == expected


def test_pod_ip_comes_from_the_downward_api():
    container = builders.deployment(OWNER, rollout_spec(), ADAPTER, 1)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]


@pytest.mark.parametrize(
    ("render", "name", "selects", "labels"),
    [
        pytest.param(lambda s: builders.version_service(OWNER, s, "v2"), "chat-v2", "v2",
                     {"finetune.ai/model-version": "v2"}, id="version-service-selects-its-version"),
        pytest.param(lambda s: builders.track_service(OWNER, s, "stable", "v1"), "chat-stable", "v1",
                     {"finetune.ai/track": "stable"}, id="stable-service-selects-the-stable-version"),
        pytest.param(lambda s: builders.track_service(OWNER, s, "canary", "v2"), "chat-canary", "v2",
                     {"finetune.ai/track": "canary"}, id="canary-service-selects-the-candidate"),
        pytest.param(lambda s: builders.track_service(OWNER, s, "canary", "v1"), "chat-canary", "v1",
                     {"finetune.ai/track": "canary"}, id="canary-service-selects-stable-without-candidate"),
    ],
)
def test_service(render, name, selects, labels):
    service = render(rollout_spec(port=9000))
    meta = service["metadata"]
    assert (meta["name"], meta["namespace"], meta["ownerReferences"]) == (name, "team", [OWNER_REFERENCE])
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "finetune-operator", "finetune.ai/rollout": "chat", **labels
    }
    assert service["spec"]["ports"] == [{"name": "http", "port": 9000, "targetPort": "http"}]
    # The selector picks exactly the Pods of the version's Deployment, and no other version's.
    pods = {v: builders.deployment(OWNER, rollout_spec(), ServedVersion(v, BASE, f"s3://m/{v}"), 1)
            ["spec"]["template"]["metadata"]["labels"] for v in ("v1", "v2")}
    selected = [v for v, pod_labels in pods.items() if service["spec"]["selector"].items() <= pod_labels.items()]
    assert selected == [selects]


def test_names():
    assert (builders.workload_name("chat", "v3"), builders.stable_service_name("chat"),
            builders.canary_service_name("chat")) == ("chat-v3", "chat-stable", "chat-canary")


def test_a_tracked_version_too_long_for_the_rollouts_name_still_gets_a_valid_unique_name():
    # A Rollout tracking the latest version learns the version's length only when it serves it:
    # the longest Rollout name and the longest version must still make a Service name.
    from finetune_operator.api.common import VERSION_MAX_LENGTH
    from finetune_operator.api.rollout import NAME_MAX_LENGTH

    rollout = "r" + "o" * (NAME_MAX_LENGTH - 1)
    long_version = "v" + "1" * (VERSION_MAX_LENGTH - 1)
    name = builders.workload_name(rollout, long_version)
    assert len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    assert name.endswith(f"-{long_version}") and name.startswith(rollout[:20])
    assert name == builders.workload_name(rollout, long_version), "deterministic"
    other = builders.workload_name(rollout[:-1] + "x", long_version)
    assert other != name and len(other) <= 63, "two long Rollouts never share a name"
    service = builders.version_service(Owner(name=rollout, namespace="ns", uid="u"), rollout_spec(), long_version)
    assert service["metadata"]["name"] == name
    # Names that fit are left as they are.
    assert builders.workload_name("chat", long_version) == f"chat-{long_version}"


# ---- the artifact digest is checked where the bytes are used

DIGEST = "sha256:" + "ab" * 32
TRAINER = "ghcr.io/finetune-operator/trainer:0.1.0"


@pytest.mark.parametrize(
    ("served", "verifier", "expected"),
    [
        pytest.param(ServedVersion("v2", BASE, "pvc://models/chat/v2", "adapter", DIGEST), TRAINER,
                     ["python", "-m", "finetune_trainer.artifacts", "verify", "/mnt/pvc/models/chat/v2", DIGEST],
                     id="pvc-artifact-is-verified-before-the-server-starts"),
        pytest.param(ServedVersion("v2", BASE, "/srv/models/chat/v2", "adapter", DIGEST), TRAINER,
                     ["python", "-m", "finetune_trainer.artifacts", "verify", "/srv/models/chat/v2", DIGEST],
                     id="node-local-artifact-is-verified"),
        # With a trainer image, an s3:// artifact is fetched and then verified (tests/unit/test_builders_s3.py).
        pytest.param(ServedVersion("v2", BASE, "s3://models/chat/v2", "adapter", DIGEST), None, None,
                     id="s3-artifact-without-a-trainer-image-no-init-container"),
        pytest.param(ServedVersion("v2", BASE, "pvc://models/chat/v2", "adapter", DIGEST), None, None,
                     id="no-verifier-image-no-init-container"),
    ],
)
def test_verify_artifact_init_container(served, verifier, expected):
    deployment = builders.deployment(OWNER, rollout_spec(type="custom", image="srv"), served, 1, verifier_image=verifier)
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["ARTIFACT_DIGEST"] == DIGEST
    init = pod.get("initContainers")
    if expected is None:
        assert init is None
        return
    (verify,) = init
    assert verify["name"] == "verify-artifact" and verify["image"] == TRAINER
    assert verify["command"] == expected
    assert verify["volumeMounts"] == pod["containers"][0]["volumeMounts"]
    assert all(m.get("readOnly") for m in verify["volumeMounts"] if m["name"] != "scratch")
    assert verify["securityContext"]["allowPrivilegeEscalation"] is False


# ---- the built-in vLLM template speaks the serving scrape contract through the quality proxy


def _containers(serving: dict[str, Any], served: ServedVersion = ADAPTER, verifier: str | None = TRAINER) -> dict[str, dict]:
    pod = builders.deployment(OWNER, rollout_spec(**serving), served, 1, verifier_image=verifier)["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def _substituted(container: dict[str, Any]) -> list[str]:
    """The container's args with $(VAR) references filled from its own environment, as the kubelet does."""
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    out = []
    for arg in container["args"]:
        for name, value in env.items():
            arg = arg.replace(f"$({name})", value)
        out.append(arg)
    return out


def test_vllm_gets_the_quality_proxy_on_the_http_port():
    containers = _containers({"formatSchema": {"type": "object"}})
    assert list(containers) == ["server", "quality-proxy"]
    vllm, proxy = containers["server"], containers["quality-proxy"]
    # The Service and the scrape contract target the port named http: the proxy's.
    assert proxy["ports"] == [{"name": "http", "containerPort": 8000}]
    assert vllm["ports"] == [{"name": "vllm", "containerPort": 8001}]
    assert vllm["args"][vllm["args"].index("--port") + 1] == "8001"
    assert proxy["readinessProbe"]["httpGet"]["port"] == "http"
    assert "readinessProbe" not in vllm and vllm["livenessProbe"]["httpGet"]["port"] == "vllm"
    assert proxy["image"] == TRAINER
    assert proxy["securityContext"]["allowPrivilegeEscalation"] is False
    # The proxy checks the Rollout's answer format and counts the adapter under vLLM's LoRA name.
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["FINETUNE_FORMAT_SCHEMA"] == '{"type": "object"}'
    assert "ARTIFACT_DIGEST" not in env  # the verify-artifact init container checks the bytes


def test_the_proxy_arguments_are_the_trainer_servers_own():
    from finetune_trainer.serve import parse_args

    proxy = _containers({})["quality-proxy"]
    assert proxy["command"] == ["python", "-m", "finetune_trainer"] and proxy["args"][0] == "serve"
    config = parse_args(_substituted(proxy)[1:])
    assert config.upstream == "http://127.0.0.1:8001"
    assert (config.port, config.model_version, config.served_model_name) == (8000, "v2", "chat")
    # vLLM's --lora-modules name, and the artifact's copy the fetch-artifact init container made
    assert config.adapters == {"chat-v2": builders.FETCHED_ARTIFACT_DIR}


def test_a_full_model_behind_the_proxy_has_no_adapter():
    from finetune_trainer.serve import parse_args

    proxy = _containers({}, ServedVersion("v2", BASE, "s3://models/chat/v2", artifact_type="full"))["quality-proxy"]
    config = parse_args(_substituted(proxy)[1:])
    assert (config.model, config.adapters) == (builders.FETCHED_ARTIFACT_DIR, {})


def test_vllm_on_port_8001_moves_itself_out_of_the_proxys_way():
    containers = _containers({"port": 8001})
    assert containers["quality-proxy"]["ports"] == [{"name": "http", "containerPort": 8001}]
    assert containers["server"]["ports"] == [{"name": "vllm", "containerPort": 8002}]


@pytest.mark.parametrize(
    ("serving", "verifier"),
    [pytest.param({"type": "custom", "image": "ghcr.io/acme/server:1"}, TRAINER, id="custom-server-is-not-proxied"),
     pytest.param({}, None, id="no-trainer-image-no-proxy")],
)
def test_no_proxy(serving, verifier):
    containers = _containers(serving, verifier=verifier)
    assert list(containers) == ["server"]
    assert containers["server"]["ports"][0]["name"] == "http"
