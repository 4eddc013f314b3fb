"""The model card's cost (GPU-hours, cost, tokens trained) and the return-on-investment estimate."""

from __future__ import annotations

import pytest

from finetune_operator.api.finetunejob import RoiSpec
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.logic.finetunejob import Children
from tests.unit.pipeline_fixtures import job, pod, progress_map, termination
from tests.unit.test_logic_finetunejob_pipeline import (
    DIGEST,
    EVAL_COMPLETE,
    EVAL_POD_DONE,
    PREPARE_COMPLETE,
    PREPARE_POD_DONE,
    PROGRESS,
    PROGRESS_LINE,
    TRAIN,
    run,
    spec,
)

TRAINED_WITH_TOKENS = termination(
    status="Succeeded", stage="train",
    artifact={"kind": "lora-adapter", "uri": "pvc://finetune-artifacts/ft-uid-1/adapter", "sha256": DIGEST},
    metrics={"train_loss": 1.2, "global_step": 120, "total_steps": 120, "num_input_tokens_seen": 482_304},
)
# The training Pod ran 45 minutes on 8 GPUs: 6 GPU-hours.
EVALUATED = Children(
    jobs=(PREPARE_COMPLETE, job(TRAIN, conditions=["Complete"], succeeded=1), EVAL_COMPLETE),
    pods=(PREPARE_POD_DONE, pod(TRAIN, terminated=dict(exitCode=0, reason="Completed", message=TRAINED_WITH_TOKENS),
                                started="2025-01-01T11:00:00Z", finished="2025-01-01T11:45:00Z"), EVAL_POD_DONE),
    progress=progress_map(PROGRESS, **PROGRESS_LINE),
)
ROI = {"currentCostPerRequest": 0.012, "expectedCostPerRequest": 0.002, "monthlyRequests": 300_000}


def test_the_registered_card_carries_what_the_training_used_and_the_payback():
    job_spec = spec(resources={"gpusPerNode": 8, "costPerGpuHour": 2.5}, modelCard={"roi": ROI})
    decision = run(job_spec, EVALUATED)
    assert decision.status.tokens_trained == 482_304
    card = decision.register.spec["modelCard"]
    assert card["cost"] == {"gpuHours": 6.0, "estimatedCost": 15.0, "tokensTrained": 482_304}
    roi = card["returnOnInvestment"]
    # 15 / ((0.012 - 0.002) x 300,000 = 3,000 a month) = 0.005 months.
    assert roi["monthlySaving"] == 3000.0 and roi["paybackMonths"] == 0.005 and roi["payback"] == "0.005 months"


def test_without_a_price_the_card_has_gpu_hours_and_says_the_payback_is_unknown():
    decision = run(spec(resources={"gpusPerNode": 8}, modelCard={"roi": ROI}), EVALUATED)
    card = decision.register.spec["modelCard"]
    assert card["cost"] == {"gpuHours": 6.0, "tokensTrained": 482_304}
    assert card["returnOnInvestment"]["payback"].startswith("unknown") and "paybackMonths" not in card["returnOnInvestment"]


@pytest.mark.parametrize(
    ("current", "expected", "payback"),
    [
        pytest.param(0.01, 0.01, "never", id="no-saving"),
        pytest.param(0.01, 0.02, "never", id="costs-more"),
        pytest.param(0.02, 0.01, "2 months", id="pays-back"),
    ],
)
def test_payback(current, expected, payback):
    roi = RoiSpec(current_cost_per_request=current, expected_cost_per_request=expected, monthly_requests=1000)
    figures = mv_builders.return_on_investment(roi, mv_builders.TrainingCost(gpu_hours=8, cost=20.0))
    assert figures["payback"].startswith(payback)


def test_the_card_page_shows_cost_and_payback():
    job_spec = spec(resources={"gpusPerNode": 8, "costPerGpuHour": 2.5}, modelCard={"roi": ROI})
    body = run(job_spec, EVALUATED).register.spec
    page = mv_builders.model_card_markdown("ft-v1", body, [])
    assert "## Cost" in page and "- GPU-hours: 6" in page and "- Estimated cost: 15" in page and "- Tokens trained: 482304" in page
    assert "## Return on investment" in page and "Payback of the training cost: 0.005 months" in page


def test_no_roi_figures_no_roi_section():
    body = run(spec(), EVALUATED).register.spec
    assert "returnOnInvestment" not in body["modelCard"]
    assert "Return on investment" not in mv_builders.model_card_markdown("ft-v1", body, [])
