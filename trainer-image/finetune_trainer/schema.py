"""The training settings the FineTuneJob API and the trainer's config share, defined once.

Each class here holds fields (names, types, defaults, bounds, descriptions) and the cross-field
rules between them; it has no model configuration of its own. The operator's API models
(`finetune_operator.api.finetunejob`: camelCase on the wire, the CRD generated from them) and the
trainer's config sections (`finetune_trainer.config`: snake_case, frozen) each inherit them and
add only what is theirs (the API's `precision` becomes the trainer's `bf16` and `fp16`; the trainer's
`logging_steps` is not in the API). The operator renders a section by dumping the shared fields
(`shared_fields`), so a bound or a default cannot differ between the two, and a field added here
reaches the trainer without a line in the renderer.

Pure pydantic, no torch: the operator imports this module (the trainer never imports the operator).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

SPLIT_TOLERANCE = 1e-6
MSG_SPLIT_SUM = "dataset.split fractions train + validation + test must sum to 1"


class HyperparameterFields(BaseModel):
    """Optimizer and schedule; defaults are the seed's."""

    learning_rate: float = Field(default=2e-5, gt=0.0, le=1.0, description="Peak learning rate.")
    epochs: float = Field(
        default=3, gt=0.0, le=1000, description="Passes over the training split (may be fractional)."
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(default=8, ge=1, le=4096, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=1024, description="Steps to accumulate before an optimizer update."
    )
    max_seq_length: int = Field(
        default=1024, ge=16, le=131072, description="Longer examples are truncated to this many tokens."
    )
    warmup_ratio: float = Field(
        default=0.1, ge=0.0, lt=1.0,
        description="Fraction of steps with linear learning-rate warmup (below 1: some steps train at the peak rate).",
    )
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="linear", description="Learning-rate schedule after warmup."
    )
    max_grad_norm: float = Field(default=1.0, gt=0.0, description="Gradient clipping norm.")
    eval_steps: int | None = Field(
        default=None,
        ge=1,
        description="Compute validation loss every N steps; defaults to the checkpoint interval.",
    )
    packing: bool = Field(
        default=False, description="Pack several short examples into one sequence (sft only)."
    )
    completion_only_loss: bool = Field(
        default=True, description="Compute the loss on the response only, not the prompt (sft only)."
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Trade compute for memory by recomputing activations."
    )


class LoraFields(BaseModel):
    """The low-rank adapters' shape (lora and qlora)."""

    rank: int = Field(default=16, ge=1, le=1024, description="LoRA rank r (lora and qlora).")
    alpha: float = Field(
        default=32, gt=0.0, le=4096,
        description="LoRA scaling alpha; the update is scaled by alpha / rank (lora and qlora).",
    )
    dropout: float = Field(
        default=0.05, ge=0.0, lt=1.0, description="LoRA dropout probability (lora and qlora)."
    )


class DpoFields(BaseModel):
    """Settings of direct preference optimization (method dpo)."""

    beta: float = Field(
        default=0.1, gt=0.0, le=10.0, description="Strength of the KL penalty to the reference model."
    )
    loss_type: Literal["sigmoid", "hinge", "ipo"] = Field(
        default="sigmoid", description="DPO loss variant: sigmoid (original DPO), ipo (identity preference), hinge (SLiC)."
    )


class EarlyStoppingFields(BaseModel):
    """Stop when validation loss stops improving."""

    enabled: bool = Field(default=True, description="Stop early when validation loss stops improving.")
    patience: int = Field(
        default=3, ge=1, le=1000, description="Evaluations without improvement before stopping."
    )
    min_delta: float = Field(
        default=0.0, ge=0.0, description="Smallest decrease of validation loss that counts as improvement."
    )


class SplitFields(BaseModel):
    """Fractions of the records used for training, validation (early stopping) and test (gates)."""

    train: float = Field(default=0.7, gt=0.0, le=1.0, description="Fraction of records to train on.")
    validation: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Fraction for validation loss and early stopping."
    )
    test: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Fraction held out for evaluation and gates."
    )

    @model_validator(mode="after")
    def _sum_to_one(self) -> Any:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > SPLIT_TOLERANCE:
            raise ValueError(f"{MSG_SPLIT_SUM} (got {total:g})")
        return self


class DedupFields(BaseModel):
    """Duplicate removal before the split, so no test record has a twin in training."""

    exact: bool = Field(
        default=True, description="Drop records equal to an earlier one after case and whitespace normalization."
    )
    near: bool = Field(
        default=True,
        description="Drop records whose word-shingle Jaccard similarity to an earlier one reaches the near-duplicate threshold.",
    )
    near_threshold: float = Field(
        default=0.85, gt=0.0, le=1.0, description="Jaccard similarity at which records are near-duplicates."
    )


def shared_fields(model: BaseModel, fields: type[BaseModel]) -> dict[str, Any]:
    """The values of `model` for the fields it inherits from `fields`, by Python name, as JSON
    values: the mechanical rendering of a shared section from the API into the trainer's config."""
    return model.model_dump(mode="json", include=set(fields.model_fields), by_alias=False)
