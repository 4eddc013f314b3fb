"""spec.budget: the limit in GPU-hours, the estimate, when training stops and how it resumes.

The numbers: the training Pod has run 30 minutes on one GPU (0.5 GPU-hours used); the trainer
reports step 40 of 120 with 96 s to go (1.2 s, 1/3000 GPU-hour, a step; estimated total 0.5267).
"""

from __future__ import annotations

import datetime

import pytest

from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.finetunejob import BudgetSpec, FineTuneJobPhase, FineTuneJobStatus, Progress
from finetune_operator.builders import finetunejob as builders
from finetune_operator.logic import budget
from finetune_operator.logic.finetunejob import Children, parse_spec, parse_status
from finetune_operator.logic.spec import InvalidSpec
from tests.unit.pipeline_fixtures import job, pod, progress_map, termination
from tests.unit.test_logic_finetunejob_pipeline import (
    NOW,
    OWNER,
    PREPARE,
    PREPARE_COMPLETE,
    PREPARE_POD_DONE,
    PROGRESS,
    PROGRESS_LINE,
    TRAIN,
    TRAIN_POD_RUNNING,
    TRAIN_RUNNING,
    condition,
    run,
    spec,
)

TRAINING = Children(
    jobs=(PREPARE_COMPLETE, TRAIN_RUNNING), pods=(PREPARE_POD_DONE, TRAIN_POD_RUNNING),
    progress=progress_map(PROGRESS, **PROGRESS_LINE),
)
STOPPED = Children(jobs=(PREPARE_COMPLETE, job(TRAIN, suspend=True)), pods=(PREPARE_POD_DONE,),
                   progress=progress_map(PROGRESS, **PROGRESS_LINE))
EVERY_10 = {"evalSteps": 10}
CHECKPOINT_10 = {"intervalSteps": 10}


def budgeted(**limits) -> object:
    return spec(budget=limits, hyperparameters=EVERY_10, checkpointing=CHECKPOINT_10)


# --- the limit ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("limits", "price", "expected"),
    [
        pytest.param({"maxGpuHours": 8}, 0.0, (8.0, "spec.budget.maxGpuHours 8"), id="gpu-hours"),
        pytest.param({"maxCost": 100}, 2.5, (40.0, "spec.budget.maxCost 100 at 2.5 per GPU-hour"), id="cost-at-a-price"),
        pytest.param({"maxGpuHours": 30, "maxCost": 100}, 2.5, (30.0, "spec.budget.maxGpuHours 30"), id="both-the-lower-counts"),
        pytest.param({"maxGpuHours": 50, "maxCost": 100}, 2.5, (40.0, "spec.budget.maxCost 100 at 2.5 per GPU-hour"),
                     id="both-cost-lower"),
    ],
)
def test_the_limit_in_gpu_hours(limits, price, expected):
    limit = budget.limit_of(BudgetSpec.model_validate(limits), price)
    assert isinstance(limit, budget.Limit)
    assert (limit.gpu_hours, limit.what) == expected


def test_no_budget_no_limit_and_a_cost_without_a_price_is_a_spec_problem():
    assert budget.limit_of(None, 3.0) is None
    field, problem, fix = budget.limit_of(BudgetSpec(max_cost=10.0), 0.0)
    assert field == "spec.budget.maxCost" and "price" in problem and "costPerGpuHour" in fix


# --- the verdict -------------------------------------------------------------------------------

LIMIT = budget.Limit(1.0, "spec.budget.maxGpuHours 1")


@pytest.mark.parametrize(
    ("used", "progress", "every", "expected"),
    [
        pytest.param(0.2, None, 100, (False, ConditionStatus.UNKNOWN, budget.REASON_NO_ESTIMATE, None),
                     id="no-progress-yet-no-estimate"),
        pytest.param(0.2, Progress(step=40, total_steps=120, eta_seconds=960), 100,
                     (False, ConditionStatus.TRUE, budget.REASON_WITHIN_BUDGET, 0.4667), id="within"),
        pytest.param(0.9, Progress(step=40, total_steps=120, eta_seconds=960), 50,
                     (False, ConditionStatus.FALSE, budget.REASON_ESTIMATE_OVER_BUDGET, 1.1667),
                     id="estimate-over-the-next-checkpoint-still-fits"),
        pytest.param(0.9, Progress(step=40, total_steps=120, eta_seconds=960), 100,
                     (True, ConditionStatus.FALSE, budget.REASON_BUDGET_EXCEEDED, 1.1667),
                     id="the-next-checkpoint-would-go-over"),
        pytest.param(1.0, None, 100, (True, ConditionStatus.FALSE, budget.REASON_BUDGET_EXCEEDED, None),
                     id="used-up-without-any-estimate"),
        pytest.param(0.9, Progress(step=110, total_steps=120, eta_seconds=120), 100,
                     (False, ConditionStatus.TRUE, budget.REASON_WITHIN_BUDGET, 0.9333),
                     id="the-last-checkpoint-is-the-end-of-training"),
    ],
)
def test_verdict(used, progress, every, expected):
    verdict = budget.assess(LIMIT, used, progress, gpus=1, checkpoint_every=every)
    stop, status, reason, estimate = expected
    assert (verdict.stop, verdict.condition[0], verdict.condition[1]) == (stop, status, reason)
    assert (round(verdict.estimate, 4) if verdict.estimate is not None else None) == estimate


def test_the_verdict_counts_every_gpu_of_every_pod():
    progress = Progress(step=40, total_steps=120, eta_seconds=960)
    assert budget.assess(LIMIT, 0.0, progress, gpus=16, checkpoint_every=100).estimate == pytest.approx(960 * 16 / 3600)


# --- decide() ----------------------------------------------------------------------------------

def test_within_budget_the_estimate_is_in_status_and_training_goes_on():
    decision = run(budgeted(maxGpuHours=1), TRAINING, price=2.0)
    status = decision.status
    assert status.phase == FineTuneJobPhase.TRAINING
    assert status.budget.limit_gpu_hours == 1.0
    assert status.budget.estimated_gpu_hours == pytest.approx(0.5267, abs=1e-4)
    assert status.budget.estimated_cost == pytest.approx(1.05, abs=0.01)
    assert not status.budget.exceeded
    assert condition(status, budget.WITHIN_BUDGET).status == ConditionStatus.TRUE
    assert decision.suspend == ()


def test_an_estimate_over_the_budget_is_reported_at_once_and_training_goes_on():
    decision = run(budgeted(maxGpuHours=0.51), TRAINING)
    assert decision.status.phase == FineTuneJobPhase.TRAINING
    over = condition(decision.status, budget.WITHIN_BUDGET)
    assert (over.status, over.reason) == (ConditionStatus.FALSE, budget.REASON_ESTIMATE_OVER_BUDGET)
    assert "0.5267" in over.message and "0.51" in over.message
    assert [(e.type, e.reason) for e in decision.events if e.reason == budget.REASON_ESTIMATE_OVER_BUDGET] == \
        [("Warning", budget.REASON_ESTIMATE_OVER_BUDGET)]
    assert decision.suspend == ()
    again = run(budgeted(maxGpuHours=0.51), TRAINING, parse_status(decision.status.model_dump(mode="json", exclude_none=True)))
    assert not [e for e in again.events if e.reason == budget.REASON_ESTIMATE_OVER_BUDGET], "reported once"


def test_when_the_next_checkpoint_would_go_over_the_training_is_stopped_not_finished():
    decision = run(budgeted(maxGpuHours=0.502), TRAINING)
    status = decision.status
    assert decision.suspend == ((TRAIN, True),), "the Job is suspended: its Pod saves a checkpoint on SIGTERM"
    assert status.phase == FineTuneJobPhase.FAILED
    summary = condition(status, "Succeeded")
    assert (summary.status, summary.reason) == (ConditionStatus.FALSE, budget.REASON_BUDGET_EXCEEDED)
    assert "spec.budget.maxGpuHours" in status.message and "step 50" in status.message
    assert status.completion_time is None, "resumable: not finished"
    assert status.budget.exceeded
    assert ("Warning", budget.REASON_BUDGET_EXCEEDED) in [(e.type, e.reason) for e in decision.events]


def test_a_stopped_job_stays_stopped_until_the_budget_is_raised_then_resumes_counting_what_it_used():
    stopped = parse_status(run(budgeted(maxGpuHours=0.502), TRAINING).status.model_dump(mode="json", exclude_none=True))
    used = stopped.gpu_hours
    assert used == pytest.approx(0.5)

    still = run(budgeted(maxGpuHours=0.502), STOPPED, stopped)
    assert still.status.phase == FineTuneJobPhase.FAILED and still.suspend == ()

    raised = run(budgeted(maxGpuHours=2), STOPPED, stopped, generation=2)
    assert raised.suspend == ((TRAIN, False),)
    assert raised.status.phase == FineTuneJobPhase.TRAINING
    assert not raised.status.budget.exceeded
    assert raised.status.gpu_hours_before_resume == used and raised.status.resumed_at == NOW

    # A new Pod after the resume: its time counts on top of what the Pods before used.
    resumed = parse_status(raised.status.model_dump(mode="json", exclude_none=True))
    later = NOW + datetime.timedelta(minutes=15)
    new_pod = pod(TRAIN, name="ft-train-resumed", started=f"{NOW:%Y-%m-%dT%H:%M:%SZ}", created=f"{NOW:%Y-%m-%dT%H:%M:%SZ}")
    children = Children(jobs=(PREPARE_COMPLETE, TRAIN_RUNNING), pods=(PREPARE_POD_DONE, new_pod),
                        progress=progress_map(PROGRESS, **PROGRESS_LINE))
    after = run(budgeted(maxGpuHours=2), children, resumed, now=later, generation=2)
    assert after.status.gpu_hours == pytest.approx(0.75)


def test_removing_the_budget_resumes_and_clears_it_from_status():
    stopped = parse_status(run(budgeted(maxGpuHours=0.502), TRAINING).status.model_dump(mode="json", exclude_none=True))
    unbudgeted = spec(hyperparameters=EVERY_10, checkpointing=CHECKPOINT_10)
    decision = run(unbudgeted, STOPPED, stopped, generation=2)
    assert decision.suspend == ((TRAIN, False),)
    assert decision.status.budget is None and condition(decision.status, budget.WITHIN_BUDGET) is None


def test_spec_suspend_wins_over_the_budget():
    suspended = spec(budget={"maxGpuHours": 0.1}, suspend=True)
    decision = run(suspended, TRAINING)
    assert decision.status.phase == FineTuneJobPhase.SUSPENDED
    assert decision.suspend == ((TRAIN, True),)


def test_a_cost_budget_without_a_price_is_an_invalid_spec_before_any_pod():
    decision = run(spec(budget={"maxCost": 50}), Children())
    assert decision.status.phase == FineTuneJobPhase.FAILED
    assert "spec.budget.maxCost" in decision.status.message and "costPerGpuHour" in decision.status.message
    assert decision.create == ()
    assert run(spec(budget={"maxCost": 50}), Children(), price=2.0).create, "with a price the job starts"


@pytest.mark.parametrize(
    ("raw_budget", "resources", "field"),
    [
        pytest.param({}, {}, "spec.budget", id="no-limit"),
        pytest.param({"maxGpuHours": 1}, {"gpusPerNode": 0}, "spec.budget", id="cpu-training-uses-no-gpu-hours"),
        pytest.param({"maxGpuHours": 0}, {}, "spec.budget.maxGpuHours", id="zero"),
    ],
)
def test_budgets_that_cannot_work_are_refused_naming_the_field(raw_budget, resources, field):
    raw = {"baseModel": {"uri": "hf://org/model"}, "dataset": {"uri": "s3://data/x.jsonl"}, "budget": raw_budget,
           "resources": resources}
    parsed = parse_spec(raw)
    assert isinstance(parsed, InvalidSpec)
    assert field in parsed.message, parsed.message


def test_the_budget_is_not_part_of_the_trainers_configuration():
    # Raising a budget must not read as a training change the running job cannot apply.
    settings = builders.Settings()
    with_budget = builders.config_map(OWNER, budgeted(maxGpuHours=1), settings)
    without = builders.config_map(OWNER, spec(hyperparameters=EVERY_10, checkpointing=CHECKPOINT_10), settings)
    assert with_budget["data"] == without["data"]
    assert FineTuneJobStatus().budget is None


def test_a_stopped_job_is_not_started_again_by_its_trainers_last_report():
    # Stopped because the next checkpoint would go over (0.5 of 0.502 used): the stopped trainer's
    # last report carries no ETA, so nothing says the next checkpoint would go over any more.
    stopped = parse_status(run(budgeted(maxGpuHours=0.502), TRAINING).status.model_dump(mode="json", exclude_none=True))
    assert stopped.gpu_hours < 0.502
    last_report = Children(jobs=STOPPED.jobs, pods=STOPPED.pods,
                           progress=progress_map(PROGRESS, step=45, total_steps=120, percent=37.5, epoch=1.1))
    again = run(budgeted(maxGpuHours=0.502), last_report, stopped)
    assert again.suspend == () and again.status.phase == FineTuneJobPhase.FAILED
    assert again.status.budget.exceeded
    # Lowering it further keeps it stopped too; raising it starts it.
    assert run(budgeted(maxGpuHours=0.501), last_report, stopped, generation=2).status.phase == FineTuneJobPhase.FAILED
    assert run(budgeted(maxGpuHours=1), last_report, stopped, generation=2).suspend == ((TRAIN, False),)


# --- the estimate before training reports progress: from the prepared data -------------------------

# 1,000,000 training tokens a epoch, a 7B base: LoRA costs 4 x 7e9 FLOPs a token. Three epochs at
# 4e14 FLOP/s per GPU: 3e6 x 2.8e10 / 4e14 = 210 GPU-seconds = 0.05833 GPU-hours.
PREPARED_WITH_FIGURES = termination(status="Prepared", stage="prepare", dataset={
    "format": "instruction", "counts": {"read": 1000, "final": 1000}, "dropped": {}, "pii": {},
    "splits": {"train": 700, "validation": 200, "test": 100}, "sha256": "sha256:" + "b" * 64,
    "train_tokens": 1_000_000, "model_parameters": 7_000_000_000})
PREPARED_ONLY = Children(jobs=(PREPARE_COMPLETE,), pods=(pod(PREPARE, terminated=dict(exitCode=0, reason="Completed", message=PREPARED_WITH_FIGURES)),))


def with_epochs(**limits):
    return spec(budget=limits, hyperparameters={**EVERY_10, "epochs": 3}, checkpointing=CHECKPOINT_10)


def test_prior_estimate_from_tokens_parameters_and_the_gpus_throughput():
    report = run(with_epochs(maxGpuHours=1), PREPARED_ONLY).status.data_report
    lora = budget.prior_estimate(with_epochs(maxGpuHours=1), report, 4e14, gpus=1)
    assert lora.gpu_hours == pytest.approx(210 / 3600)
    full = budget.prior_estimate(spec(adaptation={"type": "full"}, hyperparameters={"epochs": 3}), report, 4e14, gpus=1)
    assert full.gpu_hours == pytest.approx(lora.gpu_hours * 1.5)  # 6 x params, not 4 x
    # maxSteps caps it: 10 steps x 8 records x 1 GPU x (1e6 / 700 tokens a record).
    capped = budget.prior_estimate(spec(hyperparameters={"maxSteps": 10}), report, 4e14, gpus=1)
    assert capped.gpu_hours == pytest.approx(10 * 8 * 1e6 / 700 * 2.8e10 / 4e14 / 3600)
    assert budget.prior_estimate(with_epochs(maxGpuHours=1), report, 0.0, gpus=1) is None  # no throughput figure


def test_an_estimate_over_the_budget_is_reported_before_training_starts():
    decision = run(with_epochs(maxGpuHours=0.05), PREPARED_ONLY, settings=builders.Settings(gpu_sustained_flops=4e14))
    assert [obj["metadata"]["name"] for obj in decision.create] == [TRAIN]  # training still starts
    over = condition(decision.status, budget.WITHIN_BUDGET)
    assert (over.status, over.reason) == (ConditionStatus.FALSE, budget.REASON_ESTIMATE_OVER_BUDGET)
    assert "0.05833 GPU-hours from the prepared data (3e+06 training tokens x 2.8e+10 FLOPs each" in over.message
    assert (decision.status.budget.estimated_gpu_hours, decision.status.budget.estimated_from) == (pytest.approx(0.0583, abs=1e-4), "data")
    assert ("Warning", budget.REASON_ESTIMATE_OVER_BUDGET) in [(e.type, e.reason) for e in decision.events]


def test_the_first_progress_report_replaces_the_data_estimate():
    before = run(with_epochs(maxGpuHours=1), PREPARED_ONLY).status
    training = Children(jobs=(PREPARE_COMPLETE, TRAIN_RUNNING), pods=(PREPARED_ONLY.pods[0], TRAIN_POD_RUNNING),
                        progress=progress_map(PROGRESS, **PROGRESS_LINE))
    status = run(with_epochs(maxGpuHours=1), training, parse_status(before.model_dump(mode="json", exclude_none=True))).status
    assert status.budget.estimated_from == "progress" and status.budget.estimated_gpu_hours == pytest.approx(0.5267, abs=1e-4)
