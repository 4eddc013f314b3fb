"""The evaluation cache from the operator's side: mounted into evaluation Pods only, the job's
switch reaching the trainer, and reused suites reported in status, on the ModelVersion and in the
model card."""

from __future__ import annotations

import dataclasses
import json

import pytest

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.builders.finetunejob import EVALUATION_CACHE_DIR, Owner, Settings
from finetune_operator.logic import finetunejob
from finetune_trainer import evalcache
from tests.unit.pipeline_fixtures import pod, progress_map, termination
from tests.unit.test_logic_finetunejob_pipeline import EVAL, EVAL_COMPLETE, EVALUATED_MESSAGE, PROGRESS, S, SPEC, run, spec, status_after

OWNER = Owner(name="ft", namespace="team", uid="uid-1")
JOB_SPEC = FineTuneJobSpec.model_validate({"baseModel": {"uri": "hf://org/base"}, "dataset": {"uri": "s3://data/t.jsonl"}})
BUILD = {"prepare": builders.prepare_job, "train": builders.train_job, "evaluate": builders.eval_job}


def pod_parts(settings: Settings, stage: str):
    template = BUILD[stage](OWNER, JOB_SPEC, settings)["spec"]["template"]["spec"]
    container = template["containers"][0]
    return ({e["name"]: e.get("value") for e in container["env"]}, {v["name"]: v for v in template["volumes"]},
            {m["name"]: m for m in container["volumeMounts"]})


@pytest.mark.parametrize(
    ("cache", "volume"),
    [
        ("pvc://eval-cache", {"name": "evaluation-cache", "persistentVolumeClaim": {"claimName": "eval-cache"}}),
        ("/srv/eval-cache", {"name": "evaluation-cache", "hostPath": {"path": "/srv/eval-cache", "type": "DirectoryOrCreate"}}),
    ],
    ids=["claim", "node-path"],
)
def test_the_cache_is_mounted_writable_in_evaluation_pods_only(cache, volume):
    env, volumes, mounts = pod_parts(Settings(evaluation_cache=cache), "evaluate")
    assert volumes["evaluation-cache"] == volume
    assert mounts["evaluation-cache"] == {"name": "evaluation-cache", "mountPath": EVALUATION_CACHE_DIR}
    assert env[evalcache.CACHE_ENV] == EVALUATION_CACHE_DIR
    for stage in ("prepare", "train"):
        env, volumes, mounts = pod_parts(Settings(evaluation_cache=cache), stage)
        assert "evaluation-cache" not in volumes and "evaluation-cache" not in mounts and evalcache.CACHE_ENV not in env


def test_no_cache_setting_no_mount():
    env, volumes, _ = pod_parts(Settings(), "evaluate")
    assert "evaluation-cache" not in volumes and evalcache.CACHE_ENV not in env


@pytest.mark.parametrize("reuse", [True, False])
def test_the_jobs_switch_reaches_the_trainer(reuse):
    job_spec = FineTuneJobSpec.model_validate({**JOB_SPEC.model_dump(by_alias=True, exclude_none=True),
                                               "evaluation": {"reuseBaseEvaluation": reuse}})
    assert builders.trainer_config_dict(OWNER, job_spec, Settings())["evaluation"]["reuse_base"] is reuse
    assert FineTuneJobSpec.model_validate(JOB_SPEC.model_dump()).evaluation.reuse_base_evaluation is True  # default on


REUSED_MESSAGE = termination(**{**json.loads(EVALUATED_MESSAGE), "base_reused": ["general", "safety", "task"]})


def test_reused_suites_reach_status_the_modelversion_and_the_card():
    line = dict(stage="evaluate", suite="task", model="candidate", suite_done=4, suite_total=10, prompts_done=4,
                prompts_total=80, percent=5.0, eta_seconds=30, base_reused=["general", "safety", "task"])
    before = status_after((SPEC, S["train-complete"]))
    evaluating = dataclasses.replace(S["evaluating"], progress=progress_map(PROGRESS, **line))
    assert run(SPEC, evaluating, before).status.evaluation_progress.base_reused == ["general", "safety", "task"]

    evaluated = dataclasses.replace(
        S["evaluated"],
        jobs=(*S["train-complete"].jobs, EVAL_COMPLETE),
        pods=(*S["train-complete"].pods, pod(EVAL, terminated=dict(exitCode=0, reason="Completed", message=REUSED_MESSAGE))),
    )
    body = run(spec(), evaluated).register.spec
    assert body["evaluation"]["baseReusedSuites"] == ["general", "safety", "task"]
    assert body["modelCard"]["baseEvaluationReused"] == ["general", "safety", "task"]
    page = mv_builders.model_card_markdown("ft-v1", body, [])
    assert "for the suites general, safety, task come from the evaluation cache" in page


def test_a_fresh_evaluation_says_nothing_about_the_cache():
    body = run(spec(), S["evaluated"]).register.spec
    assert "baseReusedSuites" not in body["evaluation"] and "baseEvaluationReused" not in body["modelCard"]
    assert "evaluation cache" not in mv_builders.model_card_markdown("ft-v1", body, [])
    assert "baseReusedSuites" not in finetunejob.evaluation_record(json.loads(EVALUATED_MESSAGE), SPEC)
