"""Every field of the FineTuneJob API either reaches the trainer, with the meaning the API gives
it, or is the operator's own (Pod spec, Secrets as references, registration, lifecycle) - and is
listed as such. A new API field that is neither fails here: nothing the user sets is silently
dropped between the manifest and the trainer.

Each case sets one field to a non-default value and reads it back from the trainer's *parsed*
configuration (what the trainer acts on), after the operator's rendering.
"""

from __future__ import annotations

import copy
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.builders import finetunejob as builders
from finetune_operator.builders.finetunejob import INLINE_DATASET_FILE, Owner, Settings
from finetune_operator.logic.finetunejob_spec import resolve_references
from finetune_trainer.config import TrainerConfig, parse_config

OWNER = Owner(name="fields", namespace="team", uid="uid-1")
BASE: dict[str, Any] = {"baseModel": {"uri": "hf://org/base"}, "dataset": {"uri": "s3://data/t.jsonl"}}
TEACHER = {"endpoint": "http://teacher:8000/v1", "model": "t", "prompt": "Write tickets.", "numExamples": 7,
           "seedExamples": [{"instruction": "a", "output": "b"}], "temperature": 0.3, "secretRef": {"name": "k", "key": "key"}}
PARENT = {"spec": {"baseModel": {"uri": "hf://org/base"}, "artifact": {"uri": "pvc://store/v1-uid/adapter", "type": "adapter"},
                   "lineage": {"preparedDataUri": "pvc://store/v1-uid/data"}}}


def merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def trainer(patch: dict) -> TrainerConfig:
    spec = resolve_references(FineTuneJobSpec.model_validate(merge(BASE, patch)), lambda name: PARENT)
    assert isinstance(spec, FineTuneJobSpec), spec
    return parse_config(builders.trainer_config_dict(OWNER, spec, Settings()))


SOURCES = {"dataset": {"uri": None, "sources": [
    {"name": "real", "uri": "s3://data/real.jsonl", "records": 30, "task": "a"},
    {"name": "extra", "inline": [{"instruction": "x", "output": "y"}], "weight": 0.5},
    {"name": "teacher", "synthetic": TEACHER, "seedFrom": "real", "seedCount": 4},
    {"name": "replay", "replay": {"modelVersion": "v1"}},
]}}


def src(config: TrainerConfig, index: int):
    return config.dataset.sources[index]


# api path -> (patch, what the trainer reads, expected)
CASES: dict[str, tuple[dict, typing.Callable[[TrainerConfig], Any], Any]] = {
    "baseModel.uri": ({"baseModel": {"uri": "pvc://models/base"}}, lambda c: c.model.uri, "pvc://models/base"),
    "baseModel.ggufFile": ({"baseModel": {"uri": "pvc://models/q", "ggufFile": "m.Q4_K_M.gguf"}}, lambda c: c.model.gguf_file, "m.Q4_K_M.gguf"),
    "baseModel.revision": ({"baseModel": {"revision": "v2.0"}}, lambda c: c.model.revision, "v2.0"),
    "baseModel.modelVersion": ({"baseModel": {"modelVersion": "v1"}}, lambda c: (c.model.adapter, c.model.adapter_of),
                               ("pvc://store/v1-uid/adapter", "v1")),
    "baseModel.adapterMode": ({"baseModel": {"modelVersion": "v1", "adapterMode": "stack"}}, lambda c: c.model.adapter_mode, "stack"),
    "method": ({"method": "dpo", "dataset": {"format": "preference"}}, lambda c: c.method, "dpo"),
    "adaptation.type": ({"adaptation": {"type": "full"}}, lambda c: c.adaptation.type, "full"),
    "adaptation.rank": ({"adaptation": {"rank": 8}}, lambda c: c.adaptation.rank, 8),
    "adaptation.alpha": ({"adaptation": {"alpha": 64}}, lambda c: c.adaptation.alpha, 64),
    "adaptation.dropout": ({"adaptation": {"dropout": 0.2}}, lambda c: c.adaptation.dropout, 0.2),
    "adaptation.targetModules": ({"adaptation": {"targetModules": ["q_proj"]}}, lambda c: c.adaptation.target_modules, ["q_proj"]),
    "dataset.uri": ({"dataset": {"uri": "pvc://d/x.jsonl"}}, lambda c: c.dataset.source, "pvc://d/x.jsonl"),
    "dataset.inline": ({"dataset": {"uri": None, "inline": [{"instruction": "x", "output": "y"}]}}, lambda c: c.dataset.source, INLINE_DATASET_FILE),
    "dataset.synthetic.endpoint": ({"dataset": {"uri": None, "synthetic": TEACHER}}, lambda c: c.dataset.synthetic.endpoint, TEACHER["endpoint"]),
    "dataset.synthetic.model": ({"dataset": {"uri": None, "synthetic": TEACHER}}, lambda c: c.dataset.synthetic.model, "t"),
    "dataset.synthetic.prompt": ({"dataset": {"uri": None, "synthetic": TEACHER}}, lambda c: c.dataset.synthetic.prompt, "Write tickets."),
    "dataset.synthetic.numExamples": ({"dataset": {"uri": None, "synthetic": TEACHER}}, lambda c: c.dataset.synthetic.num_examples, 7),
    "dataset.synthetic.seedExamples": ({"dataset": {"uri": None, "synthetic": TEACHER}}, lambda c: c.dataset.synthetic.seed_examples,
                                       TEACHER["seedExamples"]),
    "dataset.synthetic.temperature": ({"dataset": {"uri": None, "synthetic": TEACHER}}, lambda c: c.dataset.synthetic.temperature, 0.3),
    # The key itself never enters the config: the variable it arrives in does (builders._secret_env).
    "dataset.synthetic.secretRef.name": ({"dataset": {"uri": None, "synthetic": TEACHER}}, lambda c: c.dataset.synthetic.api_key_env,
                                         builders.SYNTHETIC_API_KEY_ENV),
    "dataset.synthetic.secretRef.key": ({"dataset": {"uri": None, "synthetic": TEACHER}}, lambda c: c.dataset.synthetic.api_key_env,
                                        builders.SYNTHETIC_API_KEY_ENV),
    "dataset.sources[].name": (SOURCES, lambda c: [s.name for s in c.dataset.sources], ["real", "extra", "teacher", "replay"]),
    "dataset.sources[].uri": (SOURCES, lambda c: src(c, 0).source, "s3://data/real.jsonl"),
    "dataset.sources[].inline": (SOURCES, lambda c: src(c, 1).source, builders.inline_source_file("extra")),
    "dataset.sources[].synthetic.endpoint": (SOURCES, lambda c: src(c, 2).synthetic.endpoint, TEACHER["endpoint"]),
    "dataset.sources[].synthetic.model": (SOURCES, lambda c: src(c, 2).synthetic.model, "t"),
    "dataset.sources[].synthetic.prompt": (SOURCES, lambda c: src(c, 2).synthetic.prompt, "Write tickets."),
    "dataset.sources[].synthetic.numExamples": (SOURCES, lambda c: src(c, 2).synthetic.num_examples, 7),
    "dataset.sources[].synthetic.seedExamples": (SOURCES, lambda c: src(c, 2).synthetic.seed_examples, TEACHER["seedExamples"]),
    "dataset.sources[].synthetic.temperature": (SOURCES, lambda c: src(c, 2).synthetic.temperature, 0.3),
    "dataset.sources[].synthetic.secretRef.name": (SOURCES, lambda c: src(c, 2).synthetic.api_key_env, builders.source_key_env(2)),
    "dataset.sources[].synthetic.secretRef.key": (SOURCES, lambda c: src(c, 2).synthetic.api_key_env, builders.source_key_env(2)),
    "dataset.sources[].replay.modelVersion": (SOURCES, lambda c: (src(c, 3).replay, src(c, 3).replay_of), ("pvc://store/v1-uid/data", "v1")),
    "dataset.sources[].records": (SOURCES, lambda c: src(c, 0).records, 30),
    "dataset.sources[].weight": (SOURCES, lambda c: src(c, 1).weight, 0.5),
    "dataset.sources[].task": (SOURCES, lambda c: src(c, 0).task, "a"),
    "dataset.sources[].seedFrom": (SOURCES, lambda c: src(c, 2).seed_from, "real"),
    "dataset.sources[].seedCount": (SOURCES, lambda c: src(c, 2).seed_count, 4),
    "dataset.format": ({"dataset": {"format": "chat"}}, lambda c: c.dataset.format, "chat"),
    "dataset.chatTemplate": ({"dataset": {"chatTemplate": "{{ messages }}"}}, lambda c: c.dataset.chat_template, "{{ messages }}"),
    "dataset.split.train": ({"dataset": {"split": {"train": 0.8, "validation": 0.1, "test": 0.1}}}, lambda c: c.dataset.split.train, 0.8),
    "dataset.split.validation": ({"dataset": {"split": {"train": 0.6, "validation": 0.3, "test": 0.1}}}, lambda c: c.dataset.split.validation, 0.3),
    "dataset.split.test": ({"dataset": {"split": {"train": 0.6, "validation": 0.2, "test": 0.2}}}, lambda c: c.dataset.split.test, 0.2),
    "dataset.dedup.exact": ({"dataset": {"dedup": {"exact": False}}}, lambda c: c.dataset.dedup.exact, False),
    "dataset.dedup.near": ({"dataset": {"dedup": {"near": False}}}, lambda c: c.dataset.dedup.near, False),
    "dataset.dedup.nearThreshold": ({"dataset": {"dedup": {"nearThreshold": 0.9}}}, lambda c: c.dataset.dedup.near_threshold, 0.9),
    "dataset.piiPolicy": ({"dataset": {"piiPolicy": "redact"}}, lambda c: c.dataset.pii_policy, "redact"),
    "dataset.piiTypes": ({"dataset": {"piiTypes": ["EMAIL"]}}, lambda c: c.dataset.pii_types, ["EMAIL"]),
    "dataset.balanceBy": ({"dataset": {"balanceBy": "category"}}, lambda c: c.dataset.balance_by, "category"),
    "dataset.balanceMode": ({"dataset": {"balanceMode": "cap", "balanceCap": 5}}, lambda c: c.dataset.balance_mode, "cap"),
    "dataset.balanceCap": ({"dataset": {"balanceMode": "cap", "balanceCap": 5}}, lambda c: c.dataset.balance_cap, 5),
    "dataset.maxRecords": ({"dataset": {"maxRecords": 100}}, lambda c: c.dataset.max_records, 100),
    "dataset.taskSampling": ({"dataset": {"taskSampling": "equal"}}, lambda c: c.dataset.task_sampling, "equal"),
    "dataset.taskTemperature": ({"dataset": {"taskTemperature": 3}}, lambda c: c.dataset.task_temperature, 3.0),
    "dataset.seed": ({"dataset": {"seed": 7}}, lambda c: c.data_seed, 7),
    "hyperparameters.learningRate": ({"hyperparameters": {"learningRate": 1e-4}}, lambda c: c.hyperparameters.learning_rate, 1e-4),
    "hyperparameters.epochs": ({"hyperparameters": {"epochs": 2}}, lambda c: c.hyperparameters.epochs, 2),
    "hyperparameters.maxSteps": ({"hyperparameters": {"maxSteps": 50}}, lambda c: c.hyperparameters.max_steps, 50),
    "hyperparameters.batchSize": ({"hyperparameters": {"batchSize": 4}}, lambda c: c.hyperparameters.batch_size, 4),
    "hyperparameters.gradientAccumulationSteps": ({"hyperparameters": {"gradientAccumulationSteps": 4}},
                                                  lambda c: c.hyperparameters.gradient_accumulation_steps, 4),
    "hyperparameters.maxSeqLength": ({"hyperparameters": {"maxSeqLength": 512}}, lambda c: c.hyperparameters.max_seq_length, 512),
    "hyperparameters.warmupRatio": ({"hyperparameters": {"warmupRatio": 0.05}}, lambda c: c.hyperparameters.warmup_ratio, 0.05),
    "hyperparameters.weightDecay": ({"hyperparameters": {"weightDecay": 0.01}}, lambda c: c.hyperparameters.weight_decay, 0.01),
    "hyperparameters.lrScheduler": ({"hyperparameters": {"lrScheduler": "cosine"}}, lambda c: c.hyperparameters.lr_scheduler, "cosine"),
    "hyperparameters.maxGradNorm": ({"hyperparameters": {"maxGradNorm": 0.5}}, lambda c: c.hyperparameters.max_grad_norm, 0.5),
    "hyperparameters.evalSteps": ({"hyperparameters": {"evalSteps": 25}}, lambda c: c.hyperparameters.eval_steps, 25),
    "hyperparameters.packing": ({"hyperparameters": {"packing": True}}, lambda c: c.hyperparameters.packing, True),
    "hyperparameters.completionOnlyLoss": ({"hyperparameters": {"completionOnlyLoss": False}},
                                           lambda c: c.hyperparameters.completion_only_loss, False),
    # precision: bf16 -> bf16 on (refused without a bf16 GPU), fp16 -> fp16 on (GPUs only), fp32 -> both off,
    # auto -> bf16 where supported.
    "hyperparameters.precision": ({"hyperparameters": {"precision": "fp16"}},
                                  lambda c: (c.hyperparameters.bf16, c.hyperparameters.fp16), (False, True)),
    "hyperparameters.gradientCheckpointing": ({"hyperparameters": {"gradientCheckpointing": True}},
                                              lambda c: c.hyperparameters.gradient_checkpointing, True),
    "hyperparameters.seed": ({"hyperparameters": {"seed": 9}}, lambda c: c.seed, 9),
    "dpo.beta": ({"dpo": {"beta": 0.2}}, lambda c: c.dpo.beta, 0.2),
    "dpo.lossType": ({"dpo": {"lossType": "ipo"}}, lambda c: c.dpo.loss_type, "ipo"),
    "earlyStopping.enabled": ({"earlyStopping": {"enabled": False}}, lambda c: c.early_stopping.enabled, False),
    "earlyStopping.patience": ({"earlyStopping": {"patience": 5}}, lambda c: c.early_stopping.patience, 5),
    "earlyStopping.minDelta": ({"earlyStopping": {"minDelta": 0.01}}, lambda c: c.early_stopping.min_delta, 0.01),
    "checkpointing.enabled": ({"checkpointing": {"enabled": False}}, lambda c: c.checkpointing.resume, False),
    "checkpointing.intervalSteps": ({"checkpointing": {"intervalSteps": 20}}, lambda c: c.checkpointing.every_n_steps, 20),
    "checkpointing.keepLast": ({"checkpointing": {"keepLast": 4}}, lambda c: c.checkpointing.keep_last, 4),
    "output.uri": ({"output": {"uri": "pvc://runs/x"}}, lambda c: c.output.dir, "pvc://runs/x/fields-uid-1"),
    "evaluation.enabled": ({"evaluation": {"enabled": False}}, lambda c: c.evaluation.enabled, False),
    "evaluation.taskMetric": ({"evaluation": {"taskMetric": "rougeL"}}, lambda c: c.evaluation.task_metric, "rougeL"),
    "evaluation.formatSchema": ({"evaluation": {"formatSchema": {"type": "object"}}}, lambda c: c.evaluation.format_schema, {"type": "object"}),
    "evaluation.maxSamples": ({"evaluation": {"maxSamples": 50}}, lambda c: c.evaluation.max_samples, 50),
    "evaluation.compareWithBase": ({"evaluation": {"compareWithBase": False}}, lambda c: c.evaluation.compare_with_base, False),
    "evaluation.reuseBaseEvaluation": ({"evaluation": {"reuseBaseEvaluation": False}}, lambda c: c.evaluation.reuse_base, False),
    "evaluation.suites.safety": ({"evaluation": {"suites": {"safety": False}}}, lambda c: c.evaluation.suites.safety, False),
    "evaluation.suites.pii": ({"evaluation": {"suites": {"pii": False}}}, lambda c: c.evaluation.suites.pii, False),
    "evaluation.suites.bias": ({"evaluation": {"suites": {"bias": False}}}, lambda c: c.evaluation.suites.bias, False),
    "evaluation.suites.general": ({"evaluation": {"suites": {"general": False}}}, lambda c: c.evaluation.suites.general, False),
    "evaluation.maxNewTokens": ({"evaluation": {"maxNewTokens": 64}}, lambda c: c.evaluation.max_new_tokens, 64),
    "evaluation.sampleCount": ({"evaluation": {"sampleCount": 10}}, lambda c: c.evaluation.sample_count, 10),
}
GATE = {"evaluation": {"gates": [{"name": "rouge", "metric": "rougeL", "comparator": "GreaterThanOrEqual", "threshold": 0.4,
                                  "baseline": "RatioToBase", "blocking": False, "perTask": True}, {"name": "latency", "enabled": False}]}}


def gate(config: TrainerConfig, name: str = "rouge"):
    return next((g for g in config.evaluation.gates if g.name == name), None)


CASES.update({
    "evaluation.gates.name": (GATE, lambda c: gate(c) is not None, True),
    "evaluation.gates.metric": (GATE, lambda c: gate(c).metric, "rougeL"),
    "evaluation.gates.comparator": (GATE, lambda c: gate(c).comparator, "GreaterThanOrEqual"),
    "evaluation.gates.threshold": (GATE, lambda c: gate(c).threshold, 0.4),
    "evaluation.gates.baseline": (GATE, lambda c: gate(c).baseline, "RatioToBase"),
    "evaluation.gates.blocking": (GATE, lambda c: gate(c).blocking, False),
    "evaluation.gates.perTask": (GATE, lambda c: gate(c).per_task, True),
    "evaluation.gates.enabled": (GATE, lambda c: gate(c, "latency"), None),
})

# The operator's own: where the Pods run and with what, Secrets as references in the Pods' env,
# what is registered, and the job's lifecycle. The trainer never sees them, by design.
OPERATOR_ONLY = {
    "baseModel.credentialsSecretRef.name": "a secretKeyRef in the Pods' env (builders._s3_env)",
    "baseModel.tokenSecretRef.name": "HF_TOKEN from a secretKeyRef (builders._hub_env)",
    "baseModel.tokenSecretRef.key": "HF_TOKEN from a secretKeyRef (builders._hub_env)",
    "dataset.credentialsSecretRef.name": "a secretKeyRef in the Pods' env (builders._s3_env)",
    "output.credentialsSecretRef.name": "a secretKeyRef in the Pods' env (builders._s3_env)",
    "output.modelName": "the registered ModelVersion's name",
    "output.version": "the registered ModelVersion's version",
    "image": "the Pods' container image",
    "suspend": "the Jobs' suspend",
    "activeDeadlineSeconds": "the training Job's deadline",
    "ttlSecondsAfterFinished": "when the operator deletes the finished FineTuneJob",
    "maxRestarts": "the training Job's backoffLimit",
    "deleteArtifactsOnDelete": "the cleanup Job at deletion",
    **{f"budget.{f}": "the operator's budget (stops the training Job)" for f in ("maxGpuHours", "maxCost")},
    **{f"modelCard.{f}": "the registered model card" for f in ("intendedUse", "limitations", "usageGuidelines")},
    **{f"modelCard.roi.{f}": "the registered model card's ROI" for f in ("currentCostPerRequest", "expectedCostPerRequest", "monthlyRequests")},
    **{f"resources.{f}": "the Pods' resources and placement" for f in (
        "gpusPerNode", "nodes", "cpu", "memory", "gpuResourceName", "nodeSelector", "affinity", "priorityClassName", "queueName",
        "costPerGpuHour", "tolerations.key", "tolerations.operator", "tolerations.value", "tolerations.effect",
        "tolerations.tolerationSeconds")},
}


def api_leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf field of the API, by its wire name; lists of objects as `name[]` (or `name` for
    lists merged by key)."""
    found = []
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        args = typing.get_args(info.annotation)
        nested = [a for a in (args or (info.annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        listed = [b for a in args for b in typing.get_args(a) if isinstance(b, type) and issubclass(b, BaseModel)]
        if nested:
            found += api_leaves(nested[0], path + ".")
        elif listed:
            found += api_leaves(listed[0], path + ("[]." if path.endswith("sources") else "."))
        else:
            found.append(path)
    return found


def test_every_api_field_is_either_the_trainers_or_the_operators():
    leaves = set(api_leaves(FineTuneJobSpec))
    unaccounted = sorted(leaves - set(CASES) - set(OPERATOR_ONLY))
    assert not unaccounted, f"API fields that reach neither the trainer nor a listed operator use: {unaccounted}"
    assert not (set(CASES) & set(OPERATOR_ONLY))
    assert not (set(CASES) | set(OPERATOR_ONLY)) - leaves, "cases for fields the API no longer has"


@pytest.mark.parametrize("path", sorted(CASES))
def test_the_field_reaches_the_trainer_with_its_meaning(path):
    patch, read, expected = CASES[path]
    assert read(trainer(patch)) == expected
    # ...and the case proves something: without the patch, the trainer reads something else.
    try:
        default = read(trainer({}))
    except (AttributeError, TypeError, IndexError):
        return  # the default has no such part at all (no teacher, no sources, no such gate)
    assert default != expected, f"{path}: the case sets what the default already renders"


# --- one set of bounds: whatever the API admits, the trainer accepts ------------------------------

from finetune_operator.api import finetunejob as api  # noqa: E402
from finetune_trainer import config as trainer_config  # noqa: E402

BOUNDED = [
    (api.Hyperparameters, trainer_config.Hyperparameters, ("learning_rate", "epochs", "max_steps", "batch_size",
                                                          "gradient_accumulation_steps", "max_seq_length", "warmup_ratio",
                                                          "weight_decay", "max_grad_norm", "eval_steps")),
    (api.AdaptationSpec, trainer_config.AdaptationSpec, ("rank", "alpha", "dropout")),
    (api.DedupSpec, trainer_config.DedupSpec, ("near_threshold",)),
    (api.DatasetSpec, trainer_config.DatasetSpec, ("max_records", "balance_cap", "task_temperature")),
    (api.DataSource, trainer_config.DataSourceSpec, ("records", "weight", "seed_count")),
    (api.EvaluationSpec, trainer_config.EvaluationSpec, ("max_samples", "max_new_tokens", "sample_count")),
    (api.SyntheticDataSpec, trainer_config.SyntheticSpec, ("num_examples", "temperature")),
    (api.EarlyStoppingSpec, trainer_config.EarlyStoppingSpec, ("patience",)),
]


def _bounds(model: type[BaseModel], field: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for item in model.model_fields[field].metadata:
        for key in ("ge", "gt", "le", "lt"):
            if getattr(item, key, None) is not None:
                found[key] = float(getattr(item, key))
    return found


def _admits(bounds: dict[str, float], value: float) -> bool:
    return all({"ge": value >= b, "gt": value > b, "le": value <= b, "lt": value < b}[k] for k, b in bounds.items())


@pytest.mark.parametrize(("api_model", "trainer_model", "field"), [(a, t, f) for a, t, fields in BOUNDED for f in fields],
                         ids=[f"{a.__name__}.{f}" for a, _, fields in BOUNDED for f in fields])
def test_the_api_admits_no_value_the_trainer_refuses(api_model, trainer_model, field):
    """The API's range lies inside the trainer's: its edges and just past them."""
    outer, inner = _bounds(trainer_model, field), _bounds(api_model, field)
    edges = [b for b in inner.values()] + [b + d for b in inner.values() for d in (1e-9, -1e-9)]
    for value in edges:
        if _admits(inner, value):
            assert _admits(outer, value), f"{api_model.__name__}.{field}: the API admits {value}, the trainer refuses it ({inner} vs {outer})"
    for side in (("ge", "gt"), ("le", "lt")):
        if any(k in outer for k in side):
            assert any(k in inner for k in side), f"{api_model.__name__}.{field}: the trainer bounds it ({outer}), the API does not ({inner})"


# --- one definition: the shared sections are the same pydantic fields on both sides --------------

from finetune_trainer import schema  # noqa: E402

SHARED = [
    (schema.HyperparameterFields, api.Hyperparameters, trainer_config.Hyperparameters),
    (schema.LoraFields, api.AdaptationSpec, trainer_config.AdaptationSpec),
    (schema.DpoFields, api.DpoSpec, trainer_config.DPOSpec),
    (schema.EarlyStoppingFields, api.EarlyStoppingSpec, trainer_config.EarlyStoppingSpec),
    (schema.SplitFields, api.DatasetSplit, trainer_config.SplitFractions),
    (schema.DedupFields, api.DedupSpec, trainer_config.DedupSpec),
]


@pytest.mark.parametrize(("shared", "api_model", "trainer_model"), SHARED, ids=[s.__name__ for s, _, _ in SHARED])
def test_a_shared_section_is_defined_once(shared, api_model, trainer_model):
    assert issubclass(api_model, shared) and issubclass(trainer_model, shared)
    for name, definition in shared.model_fields.items():
        for side in (api_model, trainer_model):
            field = side.model_fields[name]
            assert (field.annotation, field.default, field.metadata) == (definition.annotation, definition.default, definition.metadata), \
                f"{side.__name__}.{name} redefines the shared field"


SECTIONS = {  # shared section -> (the API spec's part, the trainer config's part)
    schema.HyperparameterFields: (lambda s: s.hyperparameters, lambda c: c.hyperparameters),
    schema.LoraFields: (lambda s: s.adaptation, lambda c: c.adaptation),
    schema.DpoFields: (lambda s: s.dpo, lambda c: c.dpo),
    schema.EarlyStoppingFields: (lambda s: s.early_stopping, lambda c: c.early_stopping),
    schema.SplitFields: (lambda s: s.dataset.split, lambda c: c.dataset.split),
    schema.DedupFields: (lambda s: s.dataset.dedup, lambda c: c.dataset.dedup),
}


@pytest.mark.parametrize("shared", list(SECTIONS), ids=[s.__name__ for s in SECTIONS])
def test_a_shared_section_renders_mechanically(shared):
    """The trainer reads back exactly the values the API spec holds, field by field."""
    from_spec, from_config = SECTIONS[shared]
    spec = FineTuneJobSpec.model_validate(BASE)
    api_part, trainer_part = from_spec(spec), from_config(trainer({}))
    for name in shared.model_fields:
        if name == "eval_steps":
            continue  # unset, it is rendered as the checkpoint interval (the documented default)
        assert getattr(trainer_part, name) == getattr(api_part, name), name


def test_a_cross_field_rule_is_shared_too():
    with pytest.raises(ValueError, match="must sum to 1"):
        api.DatasetSplit(train=0.5, validation=0.2, test=0.1)
    with pytest.raises(ValueError, match="must sum to 1"):
        trainer_config.SplitFractions(train=0.5, validation=0.2, test=0.1)
