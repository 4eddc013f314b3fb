"""Serving workloads of a Rollout: one Deployment and Service per version, plus stable/canary Services.

    <rollout>-<version>   Deployment + Service of one ModelVersion (e.g. chat-v3)
    <rollout>-stable      Service selecting the stable version's Pods
    <rollout>-canary      Service selecting the candidate's Pods (the stable's when there is none)

Traffic routers point at `<rollout>-stable` and `<rollout>-canary` and change only weights; a
promotion re-points the two Services' selectors, as Argo Rollouts does, so a mesh or gateway
config never has to name a version.

vLLM serves the base model with the version's LoRA adapter (multi-LoRA); `custom` runs the
image and arguments the template gives. Either way the container gets the version to serve in
its environment (BASE_MODEL, ADAPTER_PATH, ADAPTER_URI, ARTIFACT_DIGEST, MODEL_NAME,
MODEL_VERSION, PORT), so arguments can say `$(ADAPTER_PATH)` and Kubernetes expands it.

Digests are checked where bytes are used: before the server starts, an init container
(`verify-artifact`, the trainer image) computes the sha256 digest of the artifact directory the
Pod mounts, the way the trainer computed it at registration, and compares it with the
ModelVersion's `spec.artifact.digest`. A mismatch fails the Pod before any server runs (the
termination message says both digests), so other bytes are never served; the Rollout reads it
and turns Degraded with reason ArtifactDigestMismatch. An s3:// artifact is first copied into an
emptyDir by another init container (`fetch-artifact`, the trainer image, with the operator's S3
endpoint and the ModelVersion's `artifact.credentialsSecretRef` as secretKeyRefs, else the
workload identity); the server reads that copy (ADAPTER_PATH) after its digest is checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from finetune_trainer import config as trainer_config
from finetune_trainer import storage

from finetune_operator.api.rollout import RolloutSpec, ServingTemplate, ServingType
from finetune_operator.builders import cleanup
from finetune_operator.builders.security import restricted_pod_security_context, restricted_security_context

PVC_MOUNT_ROOT = "/mnt/pvc"
ROLLOUT_LABEL = "finetune.ai/rollout"
VERSION_LABEL = "finetune.ai/model-version"
MODEL_LABEL = "finetune.ai/model-name"
SERVE_LABEL = "finetune.ai/serve"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
VERIFY_CONTAINER = "verify-artifact"
REASON_DIGEST_MISMATCH = "ArtifactDigestMismatch"


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class ServedVersion:
    """What serving one ModelVersion needs."""

    version: str
    base_model_uri: str
    artifact_uri: str
    artifact_type: str = "adapter"
    artifact_digest: str = ""  # sha256:<hex> from the ModelVersion; checked before serving
    # An s3:// artifact is fetched into an emptyDir by an init container, with these credentials
    # (a Secret's name; None: the workload identity) and the operator's S3 endpoint.
    artifact_credentials_secret: str | None = None
    s3_endpoint: str = ""
    # The version's own answer format (its spec.formatSchema, canonical JSON); the Rollout's wins.
    format_schema: str = ""
    # An s3:// base model is fetched too, with the ModelVersion's baseModel.credentialsSecretRef.
    base_model_credentials_secret: str | None = None


DNS_LABEL_MAX = 63
_NAME_DIGEST_LENGTH = 8


def workload_name(rollout: str, version: str) -> str:
    """The version's Deployment and Service: `<rollout>-<version>`, a DNS-1035 label. A Rollout
    tracking the latest version cannot know its versions' lengths at admission, so a name over 63
    characters keeps the version whole and shortens the Rollout's part, with a digest of the full
    name so two long Rollouts never share one (`<rollout prefix>-<digest>-<version>`)."""
    name = f"{rollout}-{version}"
    if len(name) <= DNS_LABEL_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_NAME_DIGEST_LENGTH]
    keep = DNS_LABEL_MAX - len(version) - _NAME_DIGEST_LENGTH - 2
    return f"{rollout[:keep].rstrip('-')}-{digest}-{version}"


def stable_service_name(rollout: str) -> str:
    return f"{rollout}-stable"


def canary_service_name(rollout: str) -> str:
    return f"{rollout}-canary"


def _local(uri: str) -> str:
    if uri.startswith(("hf://", "s3://")):
        return uri
    return str(trainer_config.local_path(uri, PVC_MOUNT_ROOT))


def _meta(owner: Owner, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {"app.kubernetes.io/managed-by": "finetune-operator", ROLLOUT_LABEL: owner.name, **labels},
        "ownerReferences": [
            {
                "apiVersion": "finetune.ai/v1alpha1",
                "kind": "Rollout",
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def _selector(owner: Owner, version: str) -> dict[str, str]:
    return {ROLLOUT_LABEL: owner.name, VERSION_LABEL: version}


def _volumes(served: ServedVersion, fetched: bool = False, base_fetched: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes, mounts = [], []
    claims = sorted({urlsplit(u).netloc for u in (served.base_model_uri, served.artifact_uri) if u.startswith("pvc://")})
    for i, claim in enumerate(claims):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": f"pvc-{i}", "mountPath": f"{PVC_MOUNT_ROOT}/{claim}", "readOnly": True})
    # Node-local paths (single-node clusters, development) are mounted where they are.
    for volume, uri in (("artifact", served.artifact_uri), ("base-model", served.base_model_uri)):
        if uri.startswith("/") or uri.startswith("file://"):
            path = _local(uri)
            volumes.append({"name": volume, "hostPath": {"path": path, "type": "Directory"}})
            mounts.append({"name": volume, "mountPath": path, "readOnly": True})
    if fetched:
        volumes.append({"name": "artifact", "emptyDir": {}})
        mounts.append({"name": "artifact", "mountPath": FETCHED_ARTIFACT_DIR, "readOnly": True})
    if base_fetched:
        volumes.append({"name": "base-model", "emptyDir": {}})
        mounts.append({"name": "base-model", "mountPath": FETCHED_BASE_MODEL_DIR, "readOnly": True})
    volumes.append({"name": "scratch", "emptyDir": {}})
    mounts.append({"name": "scratch", "mountPath": "/tmp"})
    return volumes, mounts


def _mounted(uri: str) -> bool:
    return uri.startswith(("pvc://", "file://", "/"))


FETCH_CONTAINER = "fetch-artifact"
FETCHED_ARTIFACT_DIR = "/var/run/finetune/artifact"  # an emptyDir the init container fills
FETCH_BASE_CONTAINER = "fetch-base-model"
FETCHED_BASE_MODEL_DIR = "/var/run/finetune/base-model"  # the same, for an s3:// base model


def _fetched(served: ServedVersion, verifier_image: str | None) -> bool:
    """An s3:// artifact is fetched into the Pod when there is a trainer image to fetch it with."""
    return bool(verifier_image) and served.artifact_uri.startswith("s3://")


def _artifact_path(served: ServedVersion, fetched: bool) -> str:
    """Where the server reads the artifact: its fetched copy, else where it is (mounted or not)."""
    return FETCHED_ARTIFACT_DIR if fetched else _local(served.artifact_uri)


def s3_env(served: ServedVersion) -> list[dict[str, Any]]:
    """The fetch container's object-store access: the endpoint, and the artifact's Secret as
    secretKeyRefs (the variables the trainer's storage module reads for an output location)."""
    return cleanup.s3_env(served.s3_endpoint, served.artifact_credentials_secret)


def fetch_container(served: ServedVersion, image: str) -> dict[str, Any]:
    """The init container that copies an s3:// artifact into the Pod before the server starts."""
    return _fetch(FETCH_CONTAINER, served.artifact_uri, "artifact", FETCHED_ARTIFACT_DIR, image, s3_env(served))


def fetch_base_container(served: ServedVersion, image: str) -> dict[str, Any]:
    """The init container that copies an s3:// base model into the Pod, with the base model's own
    credentials (the ModelVersion's baseModel.credentialsSecretRef)."""
    env = cleanup.s3_env(served.s3_endpoint, served.base_model_credentials_secret)
    return _fetch(FETCH_BASE_CONTAINER, served.base_model_uri, "base-model", FETCHED_BASE_MODEL_DIR, image, env)


def _fetch(name: str, uri: str, volume: str, path: str, image: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": ["python", "-m", "finetune_trainer.storage", "fetch", uri, path],
        "env": [{"name": "HOME", "value": "/tmp"}, *env],
        "volumeMounts": [{"name": volume, "mountPath": path}, {"name": "scratch", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_security_context(),
    }


def verify_container(served: ServedVersion, image: str, mounts: list[dict[str, Any]], fetched: bool = False) -> dict[str, Any]:
    """The init container that refuses to let the server start on bytes other than the registered ones."""
    return {
        "name": VERIFY_CONTAINER,
        "image": image,
        "command": ["python", "-m", "finetune_trainer.artifacts", "verify", _artifact_path(served, fetched), served.artifact_digest],
        "volumeMounts": [dict(m) for m in mounts],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_security_context(),
    }


def _format_schema(serving: ServingTemplate, served: ServedVersion) -> str:
    """The JSON Schema answers are checked against: the Rollout's for every version, else the version's own."""
    if serving.format_schema is not None:
        return json.dumps(serving.format_schema, sort_keys=True)
    return served.format_schema


QUALITY_PROXY_CONTAINER = "quality-proxy"
# Names of the serving environment the proxy needs: what it counts by, where it listens, the format.
_PROXY_ENV = ("MODEL_NAME", "MODEL_VERSION", "BASE_MODEL", "ADAPTER_PATH", "PORT", "POD_IP", "HOME",
              "FINETUNE_FORMAT_SCHEMA", "FINETUNE_FORMAT_REGEX")


def vllm_upstream_port(port: int) -> int:
    """The port vLLM listens on behind the quality proxy: 8001, or 8002 when the Rollout serves on 8001."""
    return 8002 if port == 8001 else 8001


def quality_proxy_container(port: int, env: list[dict[str, Any]], full: bool, image: str) -> dict[str, Any]:
    """The trainer image's server in proxy mode in front of vLLM, in the same Pod: it forwards the
    OpenAI API to vLLM and measures every answer on the way back (format, refusals, lengths,
    feedback) under the serving scrape contract. It loads no model; it is ready once vLLM is."""
    model = "$(ADAPTER_PATH)" if full else "$(BASE_MODEL)"
    args = ["serve", "--upstream", f"http://127.0.0.1:{vllm_upstream_port(port)}", "--model", model,
            "--served-model-name", "$(MODEL_NAME)", "--port", "$(PORT)", "--version", "$(MODEL_VERSION)"]
    if not full:
        args += ["--adapter", "$(MODEL_NAME)-$(MODEL_VERSION)=$(ADAPTER_PATH)"]
    return {
        "name": QUALITY_PROXY_CONTAINER,
        "image": image,
        "command": ["python", "-m", "finetune_trainer"],
        "args": args,
        "env": [dict(e) for e in env if e["name"] in _PROXY_ENV],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 2, "failureThreshold": 3},
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
        "securityContext": restricted_security_context(),
    }


def deployment(
    owner: Owner, spec: RolloutSpec, served: ServedVersion, replicas: int, *, verifier_image: str | None = None
) -> dict[str, Any]:
    """The serving Deployment of one version; `verifier_image` (the trainer image) checks its digest."""
    serving = spec.serving
    full = served.artifact_type == "full"
    fetched = _fetched(served, verifier_image)
    base_fetched = bool(verifier_image) and served.base_model_uri.startswith("s3://") and not full
    env: list[dict[str, Any]] = [
        {"name": "MODEL_NAME", "value": spec.model_name},
        {"name": "MODEL_VERSION", "value": served.version},
        {"name": "BASE_MODEL", "value": FETCHED_BASE_MODEL_DIR if base_fetched else _local(served.base_model_uri)},
        {"name": "ADAPTER_PATH", "value": _artifact_path(served, fetched)},
        {"name": "ADAPTER_URI", "value": served.artifact_uri},
        {"name": "ARTIFACT_DIGEST", "value": served.artifact_digest},
        {"name": "PORT", "value": str(serving.port)},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOME", "value": "/tmp"},
        # The answer format the server (or the quality proxy in front of vLLM) checks every answer against.
        *([{"name": "FINETUNE_FORMAT_SCHEMA", "value": _format_schema(serving, served)}]
          if serving.format_schema is not None or served.format_schema else []),
        *([{"name": "FINETUNE_FORMAT_REGEX", "value": serving.format_regex}] if serving.format_regex else []),
        *(e.to_pod() for e in serving.env),
    ]
    container: dict[str, Any] = {
        "name": "server",
        "image": serving.image or DEFAULT_VLLM_IMAGE,
        "env": env,
        "ports": [{"name": "http", "containerPort": serving.port}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "failureThreshold": 30},
        "securityContext": restricted_security_context(),
    }
    proxied = serving.type == ServingType.VLLM and bool(verifier_image)
    if serving.type == ServingType.VLLM:
        model = "$(ADAPTER_PATH)" if full else "$(BASE_MODEL)"
        port = str(vllm_upstream_port(serving.port)) if proxied else "$(PORT)"
        args = ["--model", model, "--host", "0.0.0.0", "--port", port, "--served-model-name", "$(MODEL_NAME)"]
        if not full:
            args += ["--enable-lora", "--lora-modules", "$(MODEL_NAME)-$(MODEL_VERSION)=$(ADAPTER_PATH)"]
        container["args"] = args + list(serving.args)
    else:
        if serving.command:
            container["command"] = list(serving.command)
        container["args"] = list(serving.args)
    limits: dict[str, str] = {}
    if serving.resources.gpus:
        limits[serving.resources.gpu_resource_name] = str(serving.resources.gpus)
    if serving.resources.cpu:
        limits["cpu"] = str(serving.resources.cpu)
    if serving.resources.memory:
        limits["memory"] = str(serving.resources.memory)
    if limits:
        container["resources"] = {"limits": limits}
    volumes, mounts = _volumes(served, fetched, base_fetched)
    container["volumeMounts"] = mounts
    pod_labels = {**_selector(owner, served.version), MODEL_LABEL: spec.model_name, SERVE_LABEL: "true"}
    containers = [container]
    if proxied:
        # vLLM listens on an inner port; the quality proxy takes the port named http (the Service's
        # and the scrape contract's), so the built-in template exports the finetune_serve_* series.
        container["ports"] = [{"name": "vllm", "containerPort": vllm_upstream_port(serving.port)}]
        container.pop("readinessProbe")
        container["livenessProbe"] = {**container["livenessProbe"], "httpGet": {"path": "/health", "port": "vllm"}}
        containers.append(quality_proxy_container(serving.port, env, full, str(verifier_image)))
    pod_spec: dict[str, Any] = {
        "securityContext": restricted_pod_security_context(),
        "containers": containers,
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
    }
    if verifier_image and fetched:
        pod_spec["initContainers"] = [fetch_container(served, verifier_image)]
        if served.artifact_digest:
            pod_spec["initContainers"].append(verify_container(served, verifier_image, mounts, fetched=True))
    elif verifier_image and served.artifact_digest and _mounted(served.artifact_uri):
        pod_spec["initContainers"] = [verify_container(served, verifier_image, mounts)]
    if base_fetched:
        pod_spec["initContainers"] = [fetch_base_container(served, str(verifier_image)), *pod_spec.get("initContainers", [])]
    if serving.node_selector:
        pod_spec["nodeSelector"] = dict(serving.node_selector)
    if serving.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in serving.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, workload_name(owner.name, served.version), {VERSION_LABEL: served.version, MODEL_LABEL: spec.model_name}),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _selector(owner, served.version)},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def version_service(owner: Owner, spec: RolloutSpec, version: str) -> dict[str, Any]:
    return _service(owner, spec, workload_name(owner.name, version), version, {VERSION_LABEL: version})


def track_service(owner: Owner, spec: RolloutSpec, track: str, version: str) -> dict[str, Any]:
    """`<rollout>-stable` or `<rollout>-canary`, selecting `version`'s Pods."""
    name = stable_service_name(owner.name) if track == "stable" else canary_service_name(owner.name)
    return _service(owner, spec, name, version, {"finetune.ai/track": track})


APPLIED_DIGEST_ANNOTATION = "finetune.ai/applied-digest"


def applied_digest(obj: Mapping[str, Any]) -> str:
    """A digest of what is applied (labels, annotations but the digest's own, spec): equal digests,
    nothing to apply."""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_DIGEST_ANNOTATION}
    text = json.dumps({"labels": meta.get("labels"), "annotations": annotations, "spec": obj.get("spec")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def labels_within(wanted: Mapping[str, str], present: Mapping[str, str]) -> bool:
    """Every wanted label is there with its value (others, set by someone else, are theirs)."""
    return all(present.get(key) == value for key, value in wanted.items())


def _service(owner: Owner, spec: RolloutSpec, name: str, version: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(owner, name, labels),
        "spec": {
            "selector": _selector(owner, version),
            "ports": [{"name": "http", "port": spec.serving.port, "targetPort": "http"}],
        },
    }
