"""The decision framework: is this fine-tune likely to pay off, as the job is written?

Fine-tuning is not always the right tool, and some settings waste a run before it starts. The
rules below are the chapter's rules of thumb, each with why it matters and what to do instead:

- fewer than 500 training examples: prompting with a few examples, or RAG over the records,
  usually does as well; fine-tune with 500+ (1,000+ is better);
- full fine-tuning with fewer than 10,000 examples: all weights trained on little data overfit
  and forget; LoRA does well from 500;
- a LoRA rank outside 8-64: below 8 the adapter is too small for most tasks, above 64 it costs
  memory and overfits with little gain;
- a learning rate outside the method's range (LoRA and QLoRA 1e-4 to 5e-4, full fine-tuning
  1e-5 to 5e-5); DPO runs at lower rates of their own and are left out of this rule;
- more than 5 epochs: the model memorizes the data; 1-3 epochs, more data if it underfits;
- DPO with fewer than 1,000 preference pairs: too few to learn a reliable preference;
- no validation split with early stopping off: nothing notices overfitting;
- an evaluation suite turned off while a blocking gate checks one of its metrics: that gate fails
  as "not measured" and the version is Rejected, so say it before the run, not after it.

The same rules run twice. At admission, a ValidatingAdmissionPolicy with the Warn action
(config/admission/finetunejob-advice.yaml) makes `kubectl apply` print them, where the record
count is known only for inline records. In status, `advise` gives the `Advice` condition, with
the record count from the data report once preparation has run. A test compares the thresholds
here with the policy's. Advice never stops a job: the user may know better.
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune_operator.api.common import ConditionStatus
from finetune_operator.api.finetunejob import (
    SUITE_DEFAULT_GATE,
    SUITE_METRICS,
    AdaptationType,
    DataReport,
    FineTuneJobSpec,
    TrainingMethod,
)

ADVICE = "Advice"
REASON_NO_ADVICE = "NoAdvice"
MSG_NO_ADVICE = "the job follows the decision framework's rules of thumb"

MIN_EXAMPLES = 500
MIN_FULL_FINE_TUNING_EXAMPLES = 10_000
LORA_RANK_RANGE = (8, 64)
LEARNING_RATE_RANGES: dict[AdaptationType, tuple[float, float]] = {
    AdaptationType.LORA: (1e-4, 5e-4),
    AdaptationType.QLORA: (1e-4, 5e-4),
    AdaptationType.FULL: (1e-5, 5e-5),
}
MAX_EPOCHS = 5
MIN_DPO_PAIRS = 1_000

REASON_FEW_EXAMPLES = "FewExamples"
REASON_FULL_FINE_TUNING_FEW_EXAMPLES = "FullFineTuningFewExamples"
REASON_LORA_RANK = "LoRARankOutOfRange"
REASON_LEARNING_RATE = "LearningRateOutOfRange"
REASON_MANY_EPOCHS = "TooManyEpochs"
REASON_FEW_DPO_PAIRS = "FewPreferencePairs"
REASON_NO_VALIDATION = "NoValidationNoEarlyStopping"
REASON_UNMEASURED_GATE = "UnmeasuredGate"

MSG_FEW_EXAMPLES = (
    "{records} training examples, fewer than 500: a fine-tune on this little data mostly memorizes it. "
    "Try prompting (a few examples in the prompt) or RAG over the records first; fine-tune with 500 or "
    "more examples (1,000+ is better)"
)
MSG_FULL_FINE_TUNING_FEW_EXAMPLES = (
    "full fine-tuning with {records} examples, fewer than 10,000: training every weight on little data "
    "overfits and forgets what the base model knew. Use adaptation.type lora (or qlora), which does well "
    "from 500 examples, or collect 10,000+"
)
MSG_LORA_RANK = (
    "LoRA rank {rank} is outside 8-64: below 8 the adapter is too small for most tasks, above 64 it costs "
    "memory and overfits with little gain. Use a rank from 8 to 64 (16 is a good start)"
)
MSG_LEARNING_RATE = (
    "learning rate {rate:g} is outside {low:g}-{high:g}, the range for {method}: too high diverges or "
    "forgets the base model, too low barely moves the weights. Use {low:g} to {high:g}"
)
MSG_MANY_EPOCHS = (
    "{epochs:g} epochs, more than 5: more passes over the same data make the model memorize it. Use 1-3 "
    "epochs (at most 5), with early stopping on a validation split; add data if it still underfits"
)
MSG_FEW_DPO_PAIRS = (
    "DPO with {records} preference pairs, fewer than 1,000: too few to learn a reliable preference. "
    "Collect 1,000+ pairs, or fine-tune with method sft on the chosen answers instead"
)
MSG_NO_VALIDATION = (
    "no validation split (dataset.split.validation is 0) and early stopping off: nothing notices "
    "overfitting. Keep 10-20% of the records for validation and enable earlyStopping"
)

MSG_UNMEASURED_GATE = (
    "evaluation.suites.{suite} is off, so a blocking gate on its metrics ({metrics}; the default gate "
    "{gate}) fails as not measured and the ModelVersion is Rejected. Keep the suite on, or disable that "
    "gate too (evaluation.gates: [{{name: {gate}, enabled: false}}]) or make it a warning (blocking: false)"
)


@dataclass(frozen=True)
class Advice:
    reason: str
    message: str


def record_count(spec: FineTuneJobSpec, report: DataReport | None) -> int | None:
    """Training records as far as known: the prepared data's valid records, else inline records."""
    if report is not None and report.valid_records:
        return report.valid_records
    if spec.dataset.inline is not None:
        return len(spec.dataset.inline)
    return None


def advise(spec: FineTuneJobSpec, records: int | None) -> list[Advice]:
    """Every rule of the decision framework that the job breaks, in the chapter's order."""
    found: list[Advice] = []
    adaptation = spec.adaptation.type
    if records is not None and records < MIN_EXAMPLES:
        found.append(Advice(REASON_FEW_EXAMPLES, MSG_FEW_EXAMPLES.format(records=records)))
    if adaptation == AdaptationType.FULL and records is not None and records < MIN_FULL_FINE_TUNING_EXAMPLES:
        found.append(Advice(REASON_FULL_FINE_TUNING_FEW_EXAMPLES, MSG_FULL_FINE_TUNING_FEW_EXAMPLES.format(records=records)))
    low_rank, high_rank = LORA_RANK_RANGE
    if adaptation != AdaptationType.FULL and not low_rank <= spec.adaptation.rank <= high_rank:
        found.append(Advice(REASON_LORA_RANK, MSG_LORA_RANK.format(rank=spec.adaptation.rank)))
    low, high = LEARNING_RATE_RANGES[adaptation]
    rate = spec.hyperparameters.learning_rate
    if spec.method == TrainingMethod.SFT and not low <= rate <= high:
        method = "full fine-tuning" if adaptation == AdaptationType.FULL else adaptation.value.upper()
        found.append(Advice(REASON_LEARNING_RATE, MSG_LEARNING_RATE.format(rate=rate, low=low, high=high, method=method)))
    if spec.hyperparameters.epochs > MAX_EPOCHS:
        found.append(Advice(REASON_MANY_EPOCHS, MSG_MANY_EPOCHS.format(epochs=spec.hyperparameters.epochs)))
    if spec.method == TrainingMethod.DPO and records is not None and records < MIN_DPO_PAIRS:
        found.append(Advice(REASON_FEW_DPO_PAIRS, MSG_FEW_DPO_PAIRS.format(records=records)))
    if spec.dataset.split.validation <= 0 and not spec.early_stopping.enabled:
        found.append(Advice(REASON_NO_VALIDATION, MSG_NO_VALIDATION))
    found.extend(unmeasured_gates(spec))
    return found


def unmeasured_gates(spec: FineTuneJobSpec) -> list[Advice]:
    """A suite that is off while a blocking gate checks one of its metrics, one advice per suite."""
    if not spec.evaluation.enabled:
        return []
    blocking = {gate.metric for gate in spec.evaluation.effective_gates() if gate.blocking}
    return [
        Advice(REASON_UNMEASURED_GATE, MSG_UNMEASURED_GATE.format(
            suite=suite, metrics=", ".join(metrics), gate=SUITE_DEFAULT_GATE[suite]))
        for suite, metrics in SUITE_METRICS.items()
        if not getattr(spec.evaluation.suites, suite) and blocking & set(metrics)
    ]


def condition(spec: FineTuneJobSpec, report: DataReport | None) -> tuple[ConditionStatus, str, str]:
    """The Advice condition: True with every broken rule's reason and message, else False."""
    found = advise(spec, record_count(spec, report))
    if not found:
        return ConditionStatus.FALSE, REASON_NO_ADVICE, MSG_NO_ADVICE
    reasons = ",".join(dict.fromkeys(a.reason for a in found))  # a reason once, however many times it applies
    return ConditionStatus.TRUE, reasons, "; ".join(a.message for a in found)
