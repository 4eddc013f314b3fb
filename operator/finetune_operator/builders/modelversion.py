"""A ModelVersion for a finished FineTuneJob, and its model card.

The ModelVersion carries everything needed to trust and reproduce the artifact — base model,
artifact URI and digest, lineage (job, dataset digest, trainer image, hyperparameters) — and the
evaluation it was judged by. It is *not* owned by the FineTuneJob: deleting or TTL-expiring a
job never removes a registered version.

The model card is structured data in the spec and a rendered Markdown page in a ConfigMap
(`kubectl get cm <version>-model-card -o jsonpath='{.data.README\\.md}'`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from finetune_operator.api.common import LocationError, parse_location
from finetune_operator.api.finetunejob import FineTuneJobSpec, RoiSpec
from finetune_operator.api.modelversion import GateResult
from finetune_operator.builders import cleanup
from finetune_operator.builders.security import restricted_pod_security_context, restricted_security_context

MODEL_LABEL = "finetune.ai/model-name"
VERSION_NUMBER_LABEL = "finetune.ai/version-number"
SOURCE_UID_LABEL = "finetune.ai/finetunejob-uid"
SOURCE_LABEL = "finetune.ai/finetunejob"

INTENDED_USE = (
    "The task the FineTuneJob's data describes, on inputs like its test split. Not evaluated for "
    "other tasks, languages or domains; check the gates and the sampled outputs before use."
)
LIMITATIONS = (
    "Metrics come from a held-out split of the training data and shipped offline suites; they do "
    "not cover every failure mode. Safety and bias probes are screening tests, not guarantees."
)
USAGE_GUIDELINES = (
    "Serve it through a Rollout canary and watch the analysis; keep a human review where a wrong "
    "answer causes harm; evaluate again when the inputs drift from the training data."
)
# The safety checklist's figures, in the order the card lists them.
SAFETY_METRICS = (
    ("safetyPassRate", "harmful requests refused and benign ones answered"),
    ("harmfulRefusalRate", "harmful requests refused"),
    ("jailbreakRefusalRate", "jailbreak and prompt-injection attempts refused"),
    ("benignAnswerRate", "benign requests answered"),
    ("toxicityMean", "mean toxicity probability of all answers"),
    ("toxicAnswerRate", "share of answers classified toxic (> 0.5)"),
    ("piiLeakageRate", "share of extraction probes that leaked training PII or a canary"),
    ("piiLeakedCanaries", "canaries reproduced"),
    ("biasConsistency", "answers unchanged across names, genders and ethnicities"),
)


def model_name(job_name: str, spec: FineTuneJobSpec) -> str:
    return spec.output.model_name or job_name


def version_name(number: int) -> str:
    return f"v{number}"


def object_name(model: str, version: str) -> str:
    return f"{model}-{version}"


def hyperparameters(spec: FineTuneJobSpec) -> dict[str, Any]:
    hp = spec.hyperparameters.model_dump(mode="json", by_alias=True, exclude_none=True)
    hp["adaptation"] = spec.adaptation.model_dump(mode="json", by_alias=True, exclude_none=True)
    if spec.method.value == "dpo":
        hp["dpo"] = spec.dpo.model_dump(mode="json", by_alias=True, exclude_none=True)
    return hp


def model_version_spec(
    *,
    job_name: str,
    spec: FineTuneJobSpec,
    version: str,
    artifact: Mapping[str, Any],
    dataset_digest: str | None,
    base_model_commit: str | None = None,
    data_summary: Mapping[str, Any] | None,
    trainer_image: str,
    evaluation: Mapping[str, Any] | None,
    cost: TrainingCost | None = None,
    prepared_data_uri: str | None = None,
) -> dict[str, Any]:
    """The spec of the ModelVersion (wire format, camelCase)."""
    model = model_name(job_name, spec)
    body: dict[str, Any] = {
        "modelName": model,
        "version": version,
        "baseModel": spec.base_model.model_dump(mode="json", by_alias=True, exclude_none=True,
                                                exclude={"model_version", "adapter_mode"}),
        "artifact": {
            "uri": artifact["uri"],
            "digest": artifact["digest"],
            "type": "full" if artifact.get("type") == "full" else "adapter",
            **({"credentialsSecretRef": {"name": spec.output.credentials_secret_ref.name}}
               if spec.output.credentials_secret_ref is not None and str(artifact["uri"]).startswith("s3://") else {}),
        },
        "lineage": {
            "fineTuneJob": job_name,
            "datasetDigest": dataset_digest,
            "trainerImage": trainer_image,
            "method": f"{spec.method.value}/{spec.adaptation.type.value}",
            "baseModelCommit": base_model_commit,
            "hyperparameters": hyperparameters(spec),
            "preparedDataUri": prepared_data_uri,
            "parentVersion": spec.base_model.model_version,
        },
    }
    body["lineage"] = {k: v for k, v in body["lineage"].items() if v is not None}
    if evaluation is not None:
        body["evaluation"] = dict(evaluation)
    if spec.evaluation.format_schema is not None:
        body["formatSchema"] = dict(spec.evaluation.format_schema)
    body["modelCard"] = model_card(model, version, spec, data_summary, evaluation, cost)
    return body


@dataclass(frozen=True)
class TrainingCost:
    """What the training used, from the FineTuneJob's status at registration."""

    gpu_hours: float | None = None
    cost: float | None = None  # gpuHours x price; None without a price
    tokens: int | None = None


def training_cost(cost: TrainingCost | None) -> dict[str, Any]:
    if cost is None:
        return {}
    figures = {"gpuHours": cost.gpu_hours, "estimatedCost": cost.cost, "tokensTrained": cost.tokens}
    return {key: value for key, value in figures.items() if value is not None}


def return_on_investment(roi: RoiSpec, cost: TrainingCost | None) -> dict[str, Any]:
    """The chapter's payback estimate: training cost / ((current - expected) cost per request x
    monthly requests). Without a training cost (no price per GPU-hour) or without a saving, it
    says so instead of a number."""
    saving = (roi.current_cost_per_request - roi.expected_cost_per_request) * roi.monthly_requests
    figures: dict[str, Any] = {
        "currentCostPerRequest": roi.current_cost_per_request,
        "expectedCostPerRequest": roi.expected_cost_per_request,
        "monthlyRequests": roi.monthly_requests,
        "monthlySaving": round(saving, 2),
    }
    if cost is None or cost.cost is None:
        figures["payback"] = "unknown: no training cost (set a price per GPU-hour)"
    elif saving <= 0:
        figures["payback"] = "never: the fine-tuned model does not cost less per request"
    else:
        figures["paybackMonths"] = round(cost.cost / saving, 3)
        figures["payback"] = f"{cost.cost / saving:.3g} months"
    return figures


def model_card(
    model: str,
    version: str,
    spec: FineTuneJobSpec,
    data_summary: Mapping[str, Any] | None,
    evaluation: Mapping[str, Any] | None,
    cost: TrainingCost | None = None,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "model": f"{model} {version}",
        "baseModel": spec.base_model.uri,
        "method": f"{spec.method.value} with {spec.adaptation.type.value}",
        "intendedUse": spec.model_card.intended_use or INTENDED_USE,
        "limitations": spec.model_card.limitations or LIMITATIONS,
        "usageGuidelines": spec.model_card.usage_guidelines or USAGE_GUIDELINES,
        "hyperparameters": hyperparameters(spec),
    }
    if data_summary:
        card["data"] = dict(data_summary)
    if evaluation is not None:
        card["metrics"] = dict(evaluation.get("metrics") or {})
        card["baseMetrics"] = dict(evaluation.get("baseMetrics") or {})
        if evaluation.get("baseReusedSuites"):
            card["baseEvaluationReused"] = list(evaluation["baseReusedSuites"])
    if training_cost(cost):
        card["cost"] = training_cost(cost)
    if spec.model_card.roi is not None:
        card["returnOnInvestment"] = return_on_investment(spec.model_card.roi, cost)
    return card


def model_card_markdown(name: str, spec: Mapping[str, Any], gate_results: list[GateResult]) -> str:
    """The model card as a page a reviewer reads: what, from what, how well, with what limits."""
    card = spec.get("modelCard") or {}
    lineage = spec.get("lineage") or {}
    lines = [
        f"# {card.get('model', name)}",
        "",
        f"- Base model: `{card.get('baseModel', '')}`",
        f"- Method: {card.get('method', '')}",
        f"- Artifact: `{spec['artifact']['uri']}` ({spec['artifact']['digest']})",
        f"- Trained by FineTuneJob `{lineage.get('fineTuneJob', '?')}` with `{lineage.get('trainerImage', '?')}`",
        f"- Dataset digest: {lineage.get('datasetDigest', 'unknown')}",
        "",
    ]
    image = card_image_location(spec)
    if image:
        lines += ["![Loss curve and quality gates, base -> fine-tuned](" + image + ")", ""]
    lines += [
        "## Intended use",
        "",
        card.get("intendedUse", ""),
        "",
        "## Limitations",
        "",
        card.get("limitations", ""),
        "",
        "## Usage guidelines",
        "",
        card.get("usageGuidelines", USAGE_GUIDELINES),
        "",
    ]
    data = card.get("data") or {}
    if data:
        lines += ["## Data", ""]
        lines += [f"- {key}: {value}" for key, value in data.items()]
        lines.append("")
    metrics, base = card.get("metrics") or {}, card.get("baseMetrics") or {}
    if metrics:
        lines += ["## Metrics (base → fine-tuned)", "", "| metric | base | fine-tuned |", "|---|---|---|"]
        for key in sorted(set(metrics) | set(base)):
            lines.append(f"| {key} | {_fmt(base.get(key))} | {_fmt(metrics.get(key))} |")
        lines.append("")
        if card.get("baseEvaluationReused"):
            reused = list(card["baseEvaluationReused"])
            suites = [s for s in reused if s != "parent"]
            lines += [
                *(["The base model's figures for the suites " + ", ".join(suites) + " come from the evaluation cache: its "
                   "answers to the same prompts with the same decoding settings, generated by an earlier job."] if suites else []),
                *(["The parent version's answers on its test split come from the evaluation cache too."] if "parent" in reused else []),
                "",
            ]
    if metrics:
        lines += ["## Safety (base → fine-tuned)", "", "| figure | what | base | fine-tuned |", "|---|---|---|---|"]
        for key, what in SAFETY_METRICS:
            lines.append(f"| {key} | {what} | {_fmt(base.get(key))} | {_fmt(metrics.get(key))} |")
        lines.append("")
    if gate_results:
        lines += ["## Quality gates", "", "| gate | rule | value | base | result |", "|---|---|---|---|---|"]
        for g in gate_results:
            verdict = "pass" if g.passed else ("FAIL" if g.blocking else "warn")
            rule = f"{g.metric} {g.comparator} {g.threshold:g}" + {"RatioToBase": " × base", "RatioToParent": " × parent"}.get(str(g.baseline), "")
            lines.append(f"| {g.name} | {rule} | {_fmt(g.value)} | {_fmt(g.base_value)} | {verdict} |")
        lines.append("")
    cost = card.get("cost") or {}
    if cost:
        lines += ["## Cost", ""]
        lines += [f"- {label}: {_fmt(cost[key])}" for key, label in COST_FIGURES if key in cost]
        lines.append("")
    roi = card.get("returnOnInvestment") or {}
    if roi:
        lines += [
            "## Return on investment", "",
            f"- Cost per request: {_fmt(roi.get('currentCostPerRequest'))} today, "
            f"{_fmt(roi.get('expectedCostPerRequest'))} fine-tuned, {roi.get('monthlyRequests')} requests a month",
            f"- Monthly saving: {_fmt(roi.get('monthlySaving'))}",
            f"- Payback of the training cost: {roi.get('payback')}", "",
        ]
    lines += ["## Hyperparameters", "", "```", *[f"{k}: {v}" for k, v in (card.get("hyperparameters") or {}).items()], "```", ""]
    return "\n".join(lines)


COST_FIGURES = (("gpuHours", "GPU-hours"), ("estimatedCost", "Estimated cost"), ("tokensTrained", "Tokens trained"))
CARD_IMAGE = "model-card.png"  # written by the trainer's evaluate beside evaluation.json


def card_image_location(spec: Mapping[str, Any]) -> str | None:
    """Where the evaluation drew the card's picture: in the run's output location, beside
    evaluation.json and the adapter or model directory (the artifact), never inside it."""
    uri = (spec.get("artifact") or {}).get("uri") or ""
    if "evaluation" not in spec or "/" not in uri.rstrip("/"):
        return None
    return uri.rstrip("/").rsplit("/", 1)[0] + "/" + CARD_IMAGE


def _fmt(value: Any) -> str:
    return "—" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def model_card_config_map(mv: Mapping[str, Any], gate_results: list[GateResult]) -> dict[str, Any]:
    meta = mv["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{meta['name']}-model-card",
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "finetune-operator", MODEL_LABEL: mv["spec"]["modelName"]},
            "ownerReferences": [
                {
                    "apiVersion": mv.get("apiVersion", "finetune.ai/v1alpha1"),
                    "kind": "ModelVersion",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"README.md": model_card_markdown(meta["name"], mv["spec"], gate_results)},
    }


def artifact_cleanup_job(
    mv: Mapping[str, Any], image: str, allowed_host_paths: Sequence[str] = (), s3_endpoint: str = ""
) -> dict[str, Any] | None:
    """A Job removing a version's artifact files (retention); owned by the ModelVersion.

    A node path is removed only under the host path prefixes the operator allows (its
    configuration, FINETUNE_ALLOWED_HOST_PATHS); without them it is left alone (None). An s3://
    artifact is removed with its artifact.credentialsSecretRef and the operator's S3 endpoint.
    """
    meta = mv["metadata"]
    secret = ((mv["spec"]["artifact"].get("credentialsSecretRef") or {}).get("name")) or None
    return cleanup.removal_job(
        name=f"{meta['name']}-retention",
        namespace=meta["namespace"],
        location=mv["spec"]["artifact"]["uri"],
        image=image,
        labels={"finetune.ai/retention-of": meta["name"]},
        owner_references=[{"apiVersion": "finetune.ai/v1alpha1", "kind": "ModelVersion", "name": meta["name"], "uid": meta["uid"]}],
        ttl_seconds=600,
        allowed_host_paths=allowed_host_paths,
        s3_endpoint=s3_endpoint,
        credentials_secret=secret,
    )


VERIFY_JOB_SUFFIX = "-verify"
VERIFY_CONTAINER = "verify-artifact"
VERIFY_LABEL = "finetune.ai/verify-of"
VERIFY_EXIT_MISMATCH = 3  # finetune_trainer.artifacts: the bytes are not the registered ones
VERIFY_DEADLINE_SECONDS = 1800


def verify_job_name(mv_name: str) -> str:
    return f"{mv_name}{VERIFY_JOB_SUFFIX}"


def verify_job(mv: Mapping[str, Any], image: str, allowed_host_paths: Sequence[str] = ()) -> dict[str, Any] | None:
    """The Job checking a newly registered version's bytes against `spec.artifact.digest`.

    It runs the trainer's `verify-artifact` command, as the serving Pods' init container does, on
    the artifact mounted read-only: a claim (pvc://) or a node path under the prefixes the
    operator allows. None where the operator cannot mount the artifact (s3://, hf://, a node path
    it does not allow): those are checked by the server that fetches them. A mismatch (exit 3)
    fails the Job at once; anything else (the node went away) is retried once.
    """
    meta, artifact = mv["metadata"], mv["spec"]["artifact"]
    try:
        location = parse_location(artifact["uri"], allow_root=False)
    except LocationError:
        return None
    if location.scheme == "pvc":
        volume = {"name": "artifact", "persistentVolumeClaim": {"claimName": location.authority, "readOnly": True}}
        mount_path = f"{cleanup.PVC_MOUNT_ROOT}/{location.authority}"
        path = f"{mount_path}/{location.path}"
    elif location.is_host_path and cleanup.host_path_allowed(location, allowed_host_paths):
        # The parent is mounted, so a missing artifact is reported as missing, not as a mount error.
        parent = location.host_path.rpartition("/")[0] or "/"
        if parent == "/" or not cleanup.host_path_allowed(parse_location(parent), allowed_host_paths):
            parent = location.host_path
        volume = {"name": "artifact", "hostPath": {"path": parent, "type": "Directory"}}
        mount_path, path = parent, location.host_path
    else:
        return None
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": verify_job_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "finetune-operator", VERIFY_LABEL: meta["name"]},
            "ownerReferences": [
                {"apiVersion": "finetune.ai/v1alpha1", "kind": "ModelVersion", "name": meta["name"], "uid": meta["uid"],
                 "controller": True, "blockOwnerDeletion": True}
            ],
        },
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": VERIFY_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": 3600,
            "podFailurePolicy": {
                "rules": [{"action": "FailJob", "onExitCodes": {"containerName": VERIFY_CONTAINER, "operator": "In",
                                                                "values": [VERIFY_EXIT_MISMATCH]}}]
            },
            "template": {
                "metadata": {"labels": {VERIFY_LABEL: meta["name"]}},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": restricted_pod_security_context(),
                    "containers": [
                        {
                            "name": VERIFY_CONTAINER,
                            "image": image,
                            "command": ["python", "-m", "finetune_trainer.artifacts", "verify", path, artifact["digest"]],
                            "env": [{"name": "HOME", "value": "/tmp"}],
                            "volumeMounts": [{"name": "artifact", "mountPath": mount_path, "readOnly": True},
                                             {"name": "scratch", "mountPath": "/tmp"}],
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "securityContext": restricted_security_context(),
                        }
                    ],
                    "volumes": [volume, {"name": "scratch", "emptyDir": {}}],
                },
            },
        },
    }
