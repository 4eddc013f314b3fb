"""spec.budget: what a FineTuneJob's training may use, and when to stop it.

A budget is GPU-hours (`maxGpuHours`), cost (`maxCost`, turned into GPU-hours by the price per
GPU-hour), or both (the lower counts). The operator measures what the training Pods used (their
running time x GPUs, across restarts and resumes: `status.gpuHours`) and, from the trainer's
progress, what a step costs. Then, at every reconcile of a training job:

- before training reports progress, the total is estimated from the prepared data: training tokens
  (epochs, or maxSteps x batch) x FLOPs per token (6 x parameters for full fine-tuning, 4 x for
  LoRA/QLoRA, whose frozen weights need no gradients) / the operator's sustained FLOP/s per GPU;
  from the first progress report on, `used + ETA x GPUs`. Either goes to `status.budget`, and an
  estimate over the budget is reported at once (`WithinBudget` False, reason EstimateOverBudget,
  and a Warning Event) while training goes on;
- when the next checkpoint would take the training over the budget (or it is over already), the
  training Job is suspended: its Pods get SIGTERM, on which the trainer saves a checkpoint and
  exits. The job is Failed with reason BudgetExceeded but not finished: raising the budget (or
  removing it) resumes the same Job from that checkpoint, with the GPU-hours used so far counted.

Pure: the decision reads the spec, the status and the price, and returns a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.finetunejob import AdaptationType, BudgetSpec, DataReport, FineTuneJobSpec, Progress

WITHIN_BUDGET = "WithinBudget"
REASON_WITHIN_BUDGET = "WithinBudget"
REASON_ESTIMATE_OVER_BUDGET = "EstimateOverBudget"
REASON_BUDGET_EXCEEDED = "BudgetExceeded"
REASON_NO_ESTIMATE = "NoEstimateYet"

MSG_NO_PRICE = (
    "no price per GPU-hour is known to turn the cost into GPU-hours",
    "set spec.resources.costPerGpuHour (or the operator's GPU-hour price), or cap spec.budget.maxGpuHours instead",
)
MSG_NO_ESTIMATE = "{used} of {limit} GPU-hours used; the estimate comes with the trainer's first progress report"
MSG_WITHIN = "estimated {estimate} of {limit} GPU-hours{basis} ({used} used so far)"
MSG_ESTIMATE_OVER = (
    "the training is estimated at {estimate} GPU-hours{basis}, over the budget of {limit} ({what}); it runs until the "
    "next checkpoint would go over, then stops. Raise spec.budget, or lower hyperparameters.maxSteps/epochs"
)
MSG_FROM_DATA = " from the prepared data ({tokens:.3g} training tokens x {flops:.3g} FLOPs each at {rate:.3g} FLOP/s per GPU)"
MSG_EXCEEDED = (
    "stopped by spec.budget: {used} of {limit} GPU-hours used ({what}){next}; the trainer saved a checkpoint "
    "when it stopped. Raise spec.budget to resume from it"
)
MSG_NEXT = ", and the next checkpoint (step {step}) would need about {more} more"


@dataclass(frozen=True)
class Limit:
    """The budget in GPU-hours, and which field sets it (for messages)."""

    gpu_hours: float
    what: str


@dataclass(frozen=True)
class Verdict:
    """Where the training stands: the condition to set, the estimate, and whether to stop."""

    limit: Limit
    estimate: float | None
    stop: bool
    condition: tuple[ConditionStatus, str, str]
    source: str | None = None  # "data" or "progress": what the estimate is based on


@dataclass(frozen=True)
class Prior:
    """The training's GPU-hours estimated from the prepared data, before it reports progress."""

    gpu_hours: float
    basis: str


def prior_estimate(spec: FineTuneJobSpec, report: DataReport | None, gpu_flops: float, gpus: int) -> Prior | None:
    """Training tokens x FLOPs per token / sustained FLOP/s per GPU, in GPU-hours; None when the
    data report lacks the figures (older trainers) or the operator has no throughput figure."""
    if report is None or not report.train_tokens or not report.model_parameters or gpu_flops <= 0:
        return None
    hp = spec.hyperparameters
    tokens = report.train_tokens * hp.epochs
    if hp.max_steps is not None and report.splits.train:
        per_record = report.train_tokens / report.splits.train
        tokens = min(tokens, hp.max_steps * hp.batch_size * hp.gradient_accumulation_steps * max(gpus, 1) * per_record)
    per_token = (6 if spec.adaptation.type == AdaptationType.FULL else 4) * report.model_parameters
    basis = MSG_FROM_DATA.format(tokens=tokens, flops=per_token, rate=gpu_flops)
    return Prior(tokens * per_token / gpu_flops / 3600.0, basis)

def limit_of(budget: BudgetSpec | None, price: float) -> Limit | tuple[str, str, str] | None:
    """The budget in GPU-hours; None without a budget; (field, problem, fix) when maxCost has no
    price to be turned into GPU-hours."""
    if budget is None:
        return None
    limits: list[Limit] = []
    if budget.max_gpu_hours is not None:
        limits.append(Limit(budget.max_gpu_hours, f"spec.budget.maxGpuHours {_hours(budget.max_gpu_hours)}"))
    if budget.max_cost is not None:
        if price <= 0:
            return ("spec.budget.maxCost", *MSG_NO_PRICE)
        limits.append(Limit(budget.max_cost / price, f"spec.budget.maxCost {budget.max_cost:g} at {price:g} per GPU-hour"))
    return min(limits, key=lambda limit: limit.gpu_hours)


def assess(limit: Limit, used: float, progress: Progress | None, *, gpus: int, checkpoint_every: int,
           prior: Prior | None = None) -> Verdict:
    """Stop when the training is over the budget or its next checkpoint would take it over."""
    per_step = _hours_per_step(progress, gpus)
    estimate = used + (progress.eta_seconds or 0) * gpus / 3600.0 if per_step is not None and progress else None
    source, basis = ("progress", "") if estimate is not None else (None, "")
    if estimate is None and prior is not None:
        estimate, source, basis = max(used, prior.gpu_hours), "data", prior.basis
    next_step, more = None, None
    if per_step is not None and progress is not None and progress.step is not None and progress.total_steps:
        next_step = min((progress.step // checkpoint_every + 1) * checkpoint_every, progress.total_steps)
        more = (next_step - progress.step) * per_step
    numbers = {"used": _hours(used), "limit": _hours(limit.gpu_hours), "what": limit.what}
    if used >= limit.gpu_hours or (more is not None and used + more > limit.gpu_hours):
        tail = MSG_NEXT.format(step=next_step, more=_hours(more)) if more is not None and used < limit.gpu_hours else ""
        message = MSG_EXCEEDED.format(next=tail, **numbers)
        return Verdict(limit, estimate, True, (ConditionStatus.FALSE, REASON_BUDGET_EXCEEDED, message), source)
    if estimate is None:
        return Verdict(limit, None, False, (ConditionStatus.UNKNOWN, REASON_NO_ESTIMATE, MSG_NO_ESTIMATE.format(**numbers)))
    numbers.update(estimate=_hours(estimate), basis=basis)
    if estimate > limit.gpu_hours:
        over = (ConditionStatus.FALSE, REASON_ESTIMATE_OVER_BUDGET, MSG_ESTIMATE_OVER.format(**numbers))
        return Verdict(limit, estimate, False, over, source)
    return Verdict(limit, estimate, False, (ConditionStatus.TRUE, REASON_WITHIN_BUDGET, MSG_WITHIN.format(**numbers)), source)


def _hours_per_step(progress: Progress | None, gpus: int) -> float | None:
    """GPU-hours of one optimizer step, from the trainer's ETA over the steps left."""
    if progress is None or progress.eta_seconds is None or progress.step is None or not progress.total_steps:
        return None
    left = progress.total_steps - progress.step
    if left <= 0:
        return None
    return progress.eta_seconds / left * gpus / 3600.0


def _hours(value: float) -> str:
    return f"{value:.4g}"
