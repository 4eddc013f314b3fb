"""The decision framework on the dev cluster: `kubectl apply` prints the admission policy's
warnings and still creates the job; the operator sets the Advice condition with the same rules.

The jobs are suspended: advice is given when the spec is accepted, before anything runs.
"""

from __future__ import annotations


import yaml

from tests.helpers import condition, noop_finetunejob, wait_for

ADVISED = {
    "adaptation": {"type": "lora", "rank": 4},
    "hyperparameters": {"epochs": 8},  # and the default learning rate 2e-5, low for LoRA
    "dataset": {"uri": "/data/train.jsonl", "split": {"train": 0.9, "validation": 0.0, "test": 0.1}},
    "earlyStopping": {"enabled": False},
    "suspend": True,
}
ADVISED_REASONS = ["LoRARankOutOfRange", "LearningRateOutOfRange", "TooManyEpochs", "NoValidationNoEarlyStopping"]


POLICY_PREFIX = "Validation failed for ValidatingAdmissionPolicy 'finetunejobs.finetune.ai-advice' with binding 'finetunejobs.finetune.ai-advice': "


def warnings(stderr: str) -> list[str]:
    """The advice kubectl printed, each without the API server's prefix naming the policy."""
    printed = [line.removeprefix("Warning: ") for line in stderr.splitlines() if line.startswith("Warning: ")]
    assert all(line.startswith(POLICY_PREFIX) for line in printed), stderr
    return [line.removeprefix(POLICY_PREFIX) for line in printed]


def test_apply_prints_the_decision_framework_and_the_job_carries_advice(cluster, namespace, operator):
    manifest = noop_finetunejob("advised", **ADVISED)
    # The policy is registered at cluster start; wait until the API server enforces it.
    dry_run = wait_for(
        lambda: (r := cluster.kubectl("apply", "--dry-run=server", "-f", "-", "-n", namespace, input=manifest))
        and warnings(r.stderr) and r,
        30, "the advice policy to warn",
    )
    applied = cluster.apply(manifest, namespace)
    printed = warnings(applied.stderr)
    assert printed == warnings(dry_run.stderr)
    assert [line.split(":")[0] for line in printed] == ADVISED_REASONS, applied.stderr
    assert any("LoRA rank 4 is outside 8-64" in line and "Use a rank from 8 to 64" in line for line in printed)
    assert any("8 epochs, more than 5" in line and "Use 1-3 epochs" in line for line in printed)
    assert any("learning rate 2e-05 is outside 0.0001-0.0005, the range for LORA" in line for line in printed)
    assert "finetunejob.finetune.ai/advised created" in applied.stdout  # warned, not refused

    advice = wait_for(lambda: condition(cluster.get("finetunejob", "advised", namespace), "Advice"), 60, "the Advice condition")
    assert advice["status"] == "True" and advice["reason"] == ",".join(ADVISED_REASONS)
    assert "LoRA rank 4 is outside 8-64" in advice["message"] and "8 epochs, more than 5" in advice["message"]

    # Inline records are counted at admission: 20 records for full fine-tuning.
    records = [{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(20)]
    small = noop_finetunejob(
        "small-full", adaptation={"type": "full"}, hyperparameters={"learningRate": 2e-5},
        dataset={"inline": records}, suspend=True,
    )
    printed = warnings(cluster.apply(small, namespace).stderr)
    assert [line.split(":")[0] for line in printed] == ["FewExamples", "FullFineTuningFewExamples"]
    assert "20 training examples, fewer than 500" in printed[0] and "RAG" in printed[0]

    # A job that follows every rule is applied without a word and gets NoAdvice.
    good = noop_finetunejob("good", hyperparameters={"learningRate": 2e-4}, suspend=True)
    assert warnings(cluster.apply(good, namespace).stderr) == []
    quiet = wait_for(lambda: condition(cluster.get("finetunejob", "good", namespace), "Advice"), 60, "NoAdvice")
    assert (quiet["status"], quiet["reason"]) == ("False", "NoAdvice")


UNMEASURED = [
    {},
    {"suites": {"pii": False}},
    {"suites": {"pii": False, "bias": False, "general": False}},
    {"suites": {"pii": False}, "gates": [{"name": "piiLeakage", "enabled": False}]},
    {"suites": {"pii": False}, "gates": [{"name": "piiLeakage", "blocking": False}]},
    {"suites": {"pii": False}, "gates": [{"name": "piiLeakage", "metric": "toxicityMean"}]},
    {"suites": {"general": False}, "gates": [{"name": "noRegression", "enabled": False},
                                             {"name": "generalFloor", "metric": "generalScore",
                                              "comparator": "GreaterThan", "threshold": 0.2}]},
    {"suites": {"safety": False}, "gates": [{"name": "latency", "metric": "jailbreakRefusalRate"}]},
    {"suites": {"safety": False}, "gates": [{"name": "safety", "enabled": False},
                                            {"name": "latency", "metric": "jailbreakRefusalRate"}]},
    {"enabled": False, "suites": {"pii": False}},
]


def test_a_suite_turned_off_under_a_blocking_gate_is_told_at_admission_as_in_status(cluster, namespace):
    """The admission policy's CEL and `advice.unmeasured_gates` agree on every case, with the same text."""
    from finetune_operator.api.finetunejob import FineTuneJobSpec
    from finetune_operator.logic import advice

    wait_for(lambda: warnings(cluster.kubectl("apply", "--dry-run=server", "-f", "-", "-n", namespace,
                                              input=noop_finetunejob("probe", **ADVISED)).stderr),
             30, "the advice policy to warn")
    for i, evaluation in enumerate(UNMEASURED):
        manifest = noop_finetunejob(f"suites-{i}", hyperparameters={"learningRate": 2e-4}, evaluation=evaluation)
        printed = warnings(cluster.kubectl("apply", "--dry-run=server", "-f", "-", "-n", namespace, input=manifest).stderr)
        spec = FineTuneJobSpec.model_validate(yaml.safe_load(manifest)["spec"])
        expected = [f"{a.reason}: {a.message}" for a in advice.unmeasured_gates(spec)]
        assert printed == expected, f"evaluation {evaluation}: admission said {printed}, status would say {expected}"
    # The cases cover both answers.
    assert any(advice.unmeasured_gates(FineTuneJobSpec.model_validate(yaml.safe_load(
        noop_finetunejob("x", evaluation=e))["spec"])) for e in UNMEASURED)
