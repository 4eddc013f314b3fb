"""A teacher model's API key: from a Secret, to the one Pod that calls the teacher, and nowhere else.

A FineTuneJob generates its dataset with a teacher (a real OpenAI-compatible HTTP server on
127.0.0.1 that refuses any other bearer token) and trains the tiny model on it. The key is a
recognisable random value in a Secret the spec names (`dataset.synthetic.secretRef`). Then:

* the job Succeeds, and every request the teacher received carried the key: it was used;
* the key reached the prepare Job only, as a secretKeyRef; train and evaluate Jobs have no
  reference to it, and the trainer's ConfigMap names only the variable it arrives in;
* the key's value is nowhere the run left a trace: the operator's log, Events, every object in
  the namespace (FineTuneJob, ModelVersion, ConfigMaps, Jobs, Pods), `kubectl logs` and the log
  files of the Pods, the node agent's logs, and every file of the run's output (prepared data,
  data report, adapter, model card).
"""

from __future__ import annotations

import json
import secrets
import textwrap
from pathlib import Path

import pytest

from finetune_trainer.testing import make_tiny_model
from tests.helpers import wait_for
from tests.leaks import leaks, traces
from tests.teacher import PROMPT, SEED, Teacher, serve  # noqa: F401 - serve is a fixture

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.pod_security("privileged", reason="the real trainer reads a tiny model from a node path and the test "
                             "searches the run's output there: hostPath volumes"),
]

SECRET = "teacher-api"
KEY_ENV = "FINETUNE_SYNTHETIC_API_KEY"


def manifest(name: str, model: Path, endpoint: str, output: Path) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: finetune.ai/v1alpha1
        kind: FineTuneJob
        metadata: {{name: {name}}}
        spec:
          baseModel: {{uri: {model}}}
          dataset:
            format: instruction
            synthetic:
              endpoint: {endpoint}
              model: teacher-7b
              secretRef: {{name: {SECRET}, key: apiKey}}
              prompt: {json.dumps(PROMPT)}
              numExamples: 24
              seedExamples: [{json.dumps(SEED)}]
          hyperparameters: {{maxSteps: 4, batchSize: 4, learningRate: 0.001, maxSeqLength: 64, evalSteps: 2}}
          checkpointing: {{intervalSteps: 2}}
          earlyStopping: {{enabled: false}}
          evaluation: {{maxNewTokens: 8, sampleCount: 3, suites: {{safety: false, pii: false, bias: false}}}}
          output: {{uri: {output}, modelName: teacher-leak}}
        """
    )


def container_env(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0].get("env") or []}


def test_the_teacher_key_reaches_only_the_prepare_pod_by_reference_and_is_nowhere_else(
        cluster, namespace, operator, serve, tmp_path):  # noqa: F811 - serve is a fixture
    key = "sk-leakcheck-" + secrets.token_hex(16)
    teacher = serve(Teacher(api_key=key))
    cluster.kubectl("create", "secret", "generic", SECRET, "-n", namespace, f"--from-literal=apiKey={key}")
    model = make_tiny_model(tmp_path / "tiny")
    output = tmp_path / "out"

    name = "teacher-leak"
    cluster.apply(manifest(name, model, teacher.url, output), namespace)

    def finished():
        status = cluster.get("finetunejob", name, namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(finished, 420, f"{name} to finish")
    assert status["phase"] == "Succeeded", status.get("message")

    # The key was used: every completion request carried it (the teacher refuses anything else).
    completions = [r for r in teacher.requests if r["path"] == "/v1/chat/completions"]
    assert completions, "the teacher was never asked: the leak check would prove nothing"
    assert {r["authorization"] for r in completions} == {f"Bearer {key}"}

    # By reference, to the prepare Pod only.
    jobs = {j["metadata"]["name"]: j for j in cluster.list("jobs", namespace, selector=f"finetune.ai/finetunejob={name}")}
    assert {f"{name}-prepare", f"{name}-train"} <= set(jobs), sorted(jobs)
    prepare = container_env(jobs[f"{name}-prepare"])
    assert prepare[KEY_ENV]["valueFrom"] == {"secretKeyRef": {"name": SECRET, "key": "apiKey"}}, prepare[KEY_ENV]
    for other in set(jobs) - {f"{name}-prepare"}:
        env_text = json.dumps(jobs[other]["spec"]["template"]["spec"])
        assert KEY_ENV not in env_text and SECRET not in env_text, f"{other} refers to the teacher's key"

    # Nowhere the run left a trace.
    places = traces(cluster, namespace, operator.log_path, outputs=[output])
    report = [text for where, text in places.items() if where.endswith("data_report.json")]
    assert report and "teacher-7b" in report[0], "no data report with the teacher's figures in the run's output"
    assert any(where.endswith("adapter_config.json") for where in places), "no adapter in the run's output"
    found = leaks(places, key)
    assert not found, f"the teacher's API key appears in: {found}"
    assert SECRET in places["finetunejobs"], "the objects carry the Secret's name"
