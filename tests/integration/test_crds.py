"""The CRDs on a real API server: they install, examples pass, bad manifests are refused.

Each file in invalid/ is one bad manifest with a `# expect: <text>` line: the API server must
reject it (schema or CEL, server-side dry run) with a message containing that text, which
names the offending field. What admission cannot see (the operator's allowed node paths, the
shape each storage scheme needs) lives in invalid/operator/ with an `# expect-invalid-spec: <text>`
line: the API server admits it, and the operator reports InvalidSpec naming the field before any
Job or Pod exists. Status written from the pydantic models must be accepted by the
status schema, and a ModelVersion's spec can never change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from finetune_operator.api import KINDS
from finetune_operator.api.common import Condition
from finetune_operator.api.finetunejob import DataReport, FineTuneJobStatus, Progress
from finetune_operator.api.modelversion import GateResult, MetricComparison, ModelVersionStatus
from finetune_operator.api.rollout import AbortRequest, HistoryEntry, RolloutStatus
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))
INVALID_SPEC = sorted((Path(__file__).parent / "invalid" / "operator").glob("*.yaml"))
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def expected_message(path: Path, tag: str = "expect") -> str:
    (line,) = [line for line in path.read_text().splitlines() if line.startswith(f"# {tag}: ")]
    return line.removeprefix(f"# {tag}: ").strip()


def test_crds_are_established(cluster):
    for kind in KINDS:
        crd = json.loads(cluster.kubectl("get", "crd", kind.KIND_INFO.crd_name, "-o", "json").stdout)
        established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
        assert established and established[0]["status"] == "True", crd["status"]
        assert crd["spec"]["names"]["shortNames"] == list(kind.KIND_INFO.short_names)


def test_short_names_and_category_resolve(cluster, namespace):
    for short_name in ("ftj", "mv", "ro", "finetune", "rollouts.finetune.ai"):
        cluster.kubectl("get", short_name, "-n", namespace)


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("ftj.spec.hyperparameters.learningRate", "Peak learning rate."),
        ("mv.spec.artifact.digest", "sha256:<hex> digest"),
        ("rollouts.finetune.ai.spec.trafficRouter", "gatewayAPI"),
    ],
)
def test_kubectl_explain_shows_the_model_descriptions(cluster, field, text):
    assert text in cluster.kubectl("explain", field).stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted(cluster, namespace, path):
    result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr
    # No warnings either (unknown fields, deprecated API): examples are what users copy. The
    # decision framework's advice is the exception: demo datasets are small on purpose.
    advice = "Warning: Validation failed for ValidatingAdmissionPolicy 'finetunejobs.finetune.ai-advice'"
    other = [line for line in result.stderr.splitlines() if "Warning" in line and not line.startswith(advice)]
    assert not other, result.stderr


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_manifest_is_rejected_naming_the_field(cluster, namespace, path):
    result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert result.returncode != 0, f"{path.name} was accepted:\n{result.stdout}"
    assert expected_message(path) in result.stderr, result.stderr


def test_invalid_corpus_says_which_check_refuses_each_case():
    """Every case names one refusal: the API server's (invalid/) or the operator's (invalid/operator/)."""
    assert len(INVALID) + len(INVALID_SPEC) >= 80
    for path in INVALID:
        assert "# expect-invalid-spec: " not in path.read_text(), f"{path.name} belongs in invalid/operator/"
    for path in INVALID_SPEC:
        assert "# expect: " not in path.read_text(), f"{path.name}: the API server admits it, expect-invalid-spec only"
        assert expected_message(path, "expect-invalid-spec").startswith("spec."), path.name


@pytest.mark.parametrize("path", INVALID_SPEC, ids=[p.name for p in INVALID_SPEC])
def test_manifest_admission_cannot_judge_is_invalid_spec_before_any_pod(cluster, namespace, operator, path):
    document = yaml.safe_load(path.read_text())
    assert document["kind"] == "FineTuneJob", "the operator case runner knows the FineTuneJob's conditions"
    name = document["metadata"]["name"]
    admitted = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert admitted.returncode == 0, f"{path.name} is refused at admission: move it to invalid/\n{admitted.stderr}"
    cluster.kubectl("apply", "-n", namespace, "-f", str(path))

    def refused():
        job = cluster.get("ftj", name, namespace)
        conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []}
        accepted = conditions.get("Accepted")
        return job if accepted and (accepted["status"], accepted["reason"]) == ("False", "InvalidSpec") else None

    job = wait_for(refused, 60, f"{name}: Accepted=False, reason InvalidSpec")
    accepted = next(c for c in job["status"]["conditions"] if c["type"] == "Accepted")
    assert expected_message(path, "expect-invalid-spec") in accepted["message"], accepted["message"]
    assert job["status"]["phase"] == "Failed"
    # Nothing started: the operator decides on the spec before it creates any child.
    assert cluster.list("jobs", namespace) == []
    assert cluster.list("pods", namespace) == []


def test_modelversion_spec_is_immutable(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "modelversion.yaml"))
    name = yaml.safe_load((ROOT / "examples" / "modelversion.yaml").read_text())["metadata"]["name"]
    for patch in ({"spec": {"version": "v2"}}, {"spec": {"modelCard": {"owner": "someone-else"}}}):
        result = cluster.kubectl(
            "patch", "mv", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch), check=False
        )
        assert result.returncode != 0 and "spec is immutable" in result.stderr, result.stderr
    # Metadata and status stay writable.
    cluster.kubectl("label", "mv", name, "-n", namespace, "reviewed=yes")


def test_defaults_are_filled_in_by_the_api_server(cluster, namespace):
    manifest = {
        "apiVersion": "finetune.ai/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "minimal"},
        "spec": {
            "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
            "dataset": {"uri": "s3://b/k.jsonl"},
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    spec = json.loads(cluster.kubectl("get", "ftj", "minimal", "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["hyperparameters"]["learningRate"] == pytest.approx(2e-5)
    assert spec["adaptation"] == {"type": "lora", "rank": 16, "alpha": 32, "dropout": 0.05}
    assert spec["dataset"]["split"] == {"train": 0.7, "validation": 0.2, "test": 0.1}
    assert spec["dataset"]["piiPolicy"] == "block"


@pytest.mark.parametrize(
    ("example", "resource", "status"),
    [
        (
            "finetunejob-qlora.yaml",
            "ftj",
            FineTuneJobStatus(
                observed_generation=1,
                phase="Training",
                conditions=[
                    Condition(type="Succeeded", status="Unknown", reason="Training", last_transition_time=NOW)
                ],
                progress=Progress(step=5, total_steps=10, percent=50.0, train_loss=1.25, eta_seconds=60),
                data_report=DataReport(
                    total_records=20,
                    pii_findings={"EMAIL": 1},
                    splits={"train": 14, "validation": 4, "test": 2},
                ),
                gpu_hours=0.5,
                start_time=NOW,
            ),
        ),
        (
            "modelversion.yaml",
            "mv",
            ModelVersionStatus(
                phase="Approved",
                gates=[
                    GateResult(
                        name="taskAccuracy",
                        metric="taskAccuracy",
                        comparator="GreaterThan",
                        threshold=0.85,
                        value=0.9,
                        base_value=0.3,
                        passed=True,
                    )
                ],
                comparison={"taskAccuracy": MetricComparison(before=0.3, after=0.9)},
                conditions=[
                    Condition(type="Ready", status="True", reason="GatesPassed", last_transition_time=NOW)
                ],
            ),
        ),
        (
            "rollout-latest-approved.yaml",
            "ro",
            RolloutStatus(
                phase="Progressing",
                current_step_index=1,
                canary_weight=10,
                stable_version="v1",
                candidate_version="v2",
                history=[
                    HistoryEntry(
                        action="promote",
                        from_version="v0",
                        to_version="v1",
                        reason="analysis passed",
                        time=NOW,
                    )
                ],
                abort_request=AbortRequest(requested_at=NOW, reason="pager", requested_by="oncall"),
            ),
        ),
    ],
    ids=["finetunejob", "modelversion", "rollout"],
)
def test_status_from_the_models_is_accepted(cluster, namespace, shadow_crds, example, resource, status):
    # The same schemas under a group no operator watches: an operator running in this session
    # would otherwise reconcile the example and write its own status between patch and read.
    path = ROOT / "examples" / example
    manifest = yaml.safe_load(path.read_text())
    manifest["apiVersion"] = manifest["apiVersion"].replace("finetune.ai/", f"{SHADOW_GROUP}/")
    name = manifest["metadata"]["name"]
    plural = {"ftj": "finetunejobs", "mv": "modelversions", "ro": "rollouts"}[resource]
    shadow = f"{plural}.{SHADOW_GROUP}"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    patch = json.dumps({"status": status.model_dump(mode="json", exclude_none=True)})
    cluster.kubectl(
        "patch", shadow, name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )
    stored = json.loads(cluster.kubectl("get", shadow, name, "-n", namespace, "-o", "json").stdout)[
        "status"
    ]
    assert type(status).model_validate(stored) == status


SHADOW_GROUP = "shadow.finetune.ai"


@pytest.fixture(scope="module")
def shadow_crds(cluster):
    """The generated CRDs copied under SHADOW_GROUP (no short names or categories, so kubectl's
    names stay unambiguous), installed and Established."""
    from devcluster import controlplane

    files = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crd["spec"]["group"] = SHADOW_GROUP
        crd["metadata"]["name"] = f"{crd['spec']['names']['plural']}.{SHADOW_GROUP}"
        crd["spec"]["names"].pop("shortNames", None)
        crd["spec"]["names"].pop("categories", None)
        target = cluster.dir / f"shadow-{path.name}"
        target.write_text(yaml.safe_dump(crd))
        files.append(target)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(target))
    controlplane.wait_for_crds(cluster.state, files)
    yield SHADOW_GROUP
    for target in files:
        cluster.kubectl("delete", "-f", str(target), "--wait=false", check=False)
