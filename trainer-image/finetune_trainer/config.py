"""The trainer's configuration: one typed model, read from the YAML file the operator renders.

`TrainerConfig` is the only definition of what `prepare`, `train` and `evaluate` accept. Each
field carries its help text and its allowed choices (Literal types), and every rule that spans
fields lives in one model validator, so a bad config fails before any data is read or any model
is loaded.
This module imports only pydantic, the standard library and formats.py (which needs nothing
else; PyYAML lazily, in `load_config`): the operator imports it to render and pre-validate
trainer configs without pulling in torch.

Locations are URIs. Local paths and `file://` are used as they are; `pvc://<claim>/<path>` is the
path under `pvc_mount_root` where the operator mounts the claim (`<pvc_mount_root>/<claim>/<path>`);
`s3://` is read through fsspec with credentials from the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...); `hf://<org>/<name>` is allowed for base models only
when already in the local Hugging Face cache (nothing is downloaded); `gguf://<path>?file=<name>`
(or `model.gguf_file`) loads a GGUF checkpoint and dequantizes it before training.

Instead of a `dataset.source`, `dataset.synthetic` asks a teacher model behind an
OpenAI-compatible endpoint to write the records. Its API key is never part of the config: the
config names the environment variable that holds it (`api_key_env`), which the operator fills
from a Secret.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import formats, schema
from .exitcodes import DataError

MODEL_SCHEMES = ("", "file", "pvc", "hf", "gguf", "s3")
DATA_SCHEMES = ("", "file", "pvc", "s3")
OUTPUT_SCHEMES = ("", "file", "pvc")
UPLOAD_SCHEMES = ("file", "s3")
PII_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "SSN", "IP_ADDRESS", "API_KEY")
PIIType = Literal["EMAIL", "PHONE", "CREDIT_CARD", "SSN", "IP_ADDRESS", "API_KEY"]


class _Section(BaseModel):
    # Unknown keys are errors: a misspelt option silently ignored costs a GPU run.
    model_config = ConfigDict(extra="forbid", frozen=True)


def uri_scheme(uri: str) -> str:
    """The URI's scheme in lower case, '' for a plain path."""
    scheme = urlsplit(uri).scheme.lower()
    # A Windows-like "c:/x" never reaches a Linux trainer; one letter is not a scheme we know.
    return "" if len(scheme) <= 1 else scheme


def local_path(uri: str, pvc_mount_root: str) -> Path:
    """The filesystem path for a local, file:// or pvc:// URI (query string dropped)."""
    parts = urlsplit(uri)
    scheme = uri_scheme(uri)
    if scheme == "":
        return Path(uri.split("?", 1)[0])
    if scheme == "file":
        return Path(parts.path)
    if scheme == "pvc":
        if not parts.netloc:
            raise ValueError(f"{uri!r}: pvc:// URIs name the claim first: pvc://<claim>/<path>")
        return Path(pvc_mount_root) / parts.netloc / parts.path.lstrip("/")
    if scheme == "gguf":
        # gguf:///abs/file.gguf, gguf://rel/dir?file=x.gguf and gguf://pvc-less host-less forms.
        return Path((parts.netloc + parts.path) if parts.netloc else parts.path)
    raise ValueError(f"{uri!r}: scheme {scheme}:// has no local path")


class ModelSpec(_Section):
    uri: str = Field(
        description="Base model: a local directory, pvc://<claim>/<path>, s3://<bucket>/<prefix> "
        "(copied to the cache), hf://<org>/<name> (downloaded from the Hub, HF_ENDPOINT and "
        "HF_TOKEN honoured, into the Hugging Face cache; with HF_HUB_OFFLINE only the cache "
        "answers) or gguf://<path>[?file=<name>.gguf].",
        min_length=1,
    )
    gguf_file: str | None = Field(
        default=None,
        description="Name of a GGUF file inside the model directory. The checkpoint is "
        "dequantized to fp32 and saved as a plain transformers model in cache_dir before use.",
    )
    revision: str | None = Field(
        default=None, description="Revision (branch, tag or commit) of an hf:// model (default: main)."
    )
    cache_dir: str = Field(
        default="/tmp/finetune-cache/models",
        description="Writable directory for materialized models (GGUF dequantized, s3:// copies).",
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow model code shipped with the checkpoint (off: safer)."
    )
    adapter: str | None = Field(
        default=None,
        min_length=1,
        description="A LoRA adapter (local path or pvc://) trained on this base model: an earlier version to "
        "continue from (continual learning). Needs adaptation lora or qlora.",
    )
    adapter_mode: Literal["continue", "stack"] = Field(
        default="continue",
        description="continue: train the adapter further (its rank and modules; adaptation's are not used); "
        "stack: merge it into the base and train a new adapter on top (the artifact is then the merged model, "
        "full weights, since the new adapter only fits the merged weights).",
    )
    adapter_of: str | None = Field(default=None, description="What the adapter is (a ModelVersion name), for reports.")

    def gguf_file_name(self) -> str | None:
        """The GGUF file to load, from gguf_file or the URI's ?file= query."""
        if self.gguf_file:
            return self.gguf_file
        query = parse_qs(urlsplit(self.uri).query)
        files = query.get("file")
        return files[0] if files else None


class AdaptationSpec(schema.LoraFields, _Section):
    type: Literal["lora", "qlora", "full"] = Field(
        default="lora",
        description="lora: low-rank adapters on a frozen base; qlora: LoRA on a 4-bit base (needs "
        "a CUDA GPU); full: update every weight.",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        min_length=1,
        description='Module names to adapt, or ["all-linear"] for every linear layer but the '
        "output head.",
    )


class SplitFractions(schema.SplitFields, _Section):
    """Train/validation/test fractions (shared with the API, which checks the same sum)."""


class DedupSpec(schema.DedupFields, _Section):
    shingle_size: int = Field(default=3, ge=1, le=16, description="Words per shingle.")


SYNTHETIC_API_KEY_ENV = "FINETUNE_SYNTHETIC_API_KEY"  # where the operator puts the Secret's key


class SyntheticSpec(_Section):
    """Records written by a teacher model: `POST {endpoint}/chat/completions`, answers as JSON lines."""

    endpoint: str = Field(
        min_length=1,
        pattern=r"^https?://.+",
        description="Base URL of the OpenAI-compatible API, e.g. http://vllm.models:8000/v1 "
        "(requests go to <endpoint>/chat/completions).",
    )
    model: str = Field(min_length=1, description="Model name sent in every request.")
    prompt: str = Field(
        min_length=1, description="What the records are about; sent to the teacher with the seed examples."
    )
    num_examples: int = Field(default=100, ge=1, description="Valid records to generate.")
    seed_examples: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Example records shown to the teacher (in the dataset's format). With "
        "dataset.format auto, the format is taken from the first one (default: instruction for "
        "sft, preference for dpo).",
    )
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature.")
    api_key_env: str | None = Field(
        default=None,
        min_length=1,
        description="Environment variable holding the API key, sent as a bearer token; it must "
        f"be set and non-empty (the operator uses {SYNTHETIC_API_KEY_ENV}). Unset: no "
        "Authorization header. The key itself never appears in the config.",
    )
    records_per_request: int = Field(
        default=20, ge=1, le=500, description="Records asked for in one request (fewer for the last one)."
    )
    max_requests: int | None = Field(
        default=None,
        ge=1,
        description="Most chat completions requested before giving up with a data error "
        "(default: three times the requests num_examples needs, at least 5).",
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="max_tokens of each completion (default: the server's)."
    )
    request_timeout_seconds: float = Field(
        default=120,
        gt=0,
        description="Seconds to wait for the teacher to connect and to answer one request before "
        "it is retried.",
    )
    max_retries: int = Field(
        default=4,
        ge=0,
        description="Retries of one request after HTTP 429, HTTP 5xx, a timeout or a connection error.",
    )
    retry_backoff_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Wait before the first retry; doubled for each further one (capped at 60 s). "
        "A Retry-After header, when longer, is honoured up to the same cap.",
    )

    @property
    def request_budget(self) -> int:
        if self.max_requests is not None:
            return self.max_requests
        needed = -(-self.num_examples // self.records_per_request)
        return max(5, 3 * needed)


SOURCE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class DataSourceSpec(_Section):
    """One source of a mixed dataset (dataset.sources): where its records come from, how many of
    them the mix takes, and the task they belong to."""

    name: str = Field(pattern=SOURCE_NAME_PATTERN, description="Name of the source in the data report and in record locations.")
    source: str | None = Field(default=None, min_length=1, description="A file or directory of records, as dataset.source.")
    synthetic: SyntheticSpec | None = Field(default=None, description="Records written by a teacher model.")
    replay: str | None = Field(
        default=None,
        min_length=1,
        description="A prepared data directory of an earlier run: its train.jsonl is replayed (continual "
        "learning against forgetting).",
    )
    replay_of: str | None = Field(default=None, description="What the replayed data trained (a ModelVersion), for the report.")
    records: int | None = Field(default=None, ge=1, description="Take this many records (a seeded sample; all when fewer).")
    weight: float | None = Field(
        default=None,
        gt=0,
        description="Share of this source among the weighted sources: the mix takes the largest total that "
        "keeps every weighted source at its share.",
    )
    task: str | None = Field(
        default=None, min_length=1, max_length=63, description="Task label written into every record's `task` field."
    )
    seed_from: str | None = Field(
        default=None,
        description="For a synthetic source: the earlier source whose records are shown to the teacher as "
        "seed examples (seed_count of them, a seeded sample), beside synthetic.seed_examples.",
    )
    seed_count: int = Field(default=5, ge=1, le=100, description="Seed examples drawn from seed_from.")

    @model_validator(mode="after")
    def _one_origin(self) -> DataSourceSpec:
        origins = [n for n in ("source", "synthetic", "replay") if getattr(self, n) is not None]
        if len(origins) != 1:
            raise ValueError(f"dataset.sources {self.name}: set exactly one of source, synthetic and replay")
        if self.records is not None and self.weight is not None:
            raise ValueError(f"dataset.sources {self.name}: set records or weight, not both")
        if self.seed_from is not None and self.synthetic is None:
            raise ValueError(f"dataset.sources {self.name}: seed_from is for synthetic sources")
        return self

    @property
    def kind(self) -> str:
        return "synthetic" if self.synthetic is not None else ("replay" if self.replay is not None else "records")

    @property
    def origin(self) -> str:
        if self.synthetic is not None:
            return f"synthetic ({self.synthetic.model} at {self.synthetic.endpoint})"
        if self.replay is not None:
            return f"replay of {self.replay_of or self.replay}"
        return str(self.source)


class DatasetSpec(_Section):
    sources: list[DataSourceSpec] | None = Field(
        default=None,
        min_length=1,
        description="Several sources mixed into one dataset (instead of source or synthetic): read in order, "
        "sampled by records/weight, then filtered, deduplicated and split together.",
    )
    source: str | None = Field(
        default=None,
        min_length=1,
        description="Data location: a file or directory (local, file://, pvc://, s3://) of JSONL, "
        "JSON or Parquet files, or a directory written by datasets' save_to_disk. Exactly one of "
        "source and synthetic.",
    )
    synthetic: SyntheticSpec | None = Field(
        default=None,
        description="Generate the records with a teacher model instead of reading them; they then "
        "go through the same validation, filters, dedup, PII policy and split.",
    )
    format: Literal["auto", "instruction", "chat", "preference"] = Field(
        default="auto",
        description="instruction: instruction/input/output; chat: messages [{role, content}]; "
        "preference: prompt/chosen/rejected; auto: detected from the first record.",
    )
    chat_template: str | None = Field(
        default=None,
        min_length=1,
        description="Jinja chat template used in place of the base model tokenizer's own. Format chat "
        "needs one of the two (no guessing how the model expects turns); instruction and preference "
        "records fall back to the trainer's built-in template.",
    )
    split: SplitFractions = Field(
        default_factory=SplitFractions, description="Train/validation/test fractions (sum 1)."
    )
    dedup: DedupSpec = Field(default_factory=DedupSpec, description="Duplicate removal.")
    pii_policy: Literal["block", "redact", "allow"] = Field(
        default="block",
        description="block: fail with a data error naming file:line and PII type (never the "
        "value); redact: replace each finding with a placeholder such as [EMAIL]; allow: keep "
        "as is (findings are still counted).",
    )
    pii_types: list[PIIType] = Field(
        default_factory=lambda: list(PII_TYPES), description="PII types to detect."
    )
    balance_by: str | None = Field(
        default=None, description="Record field holding the category to balance on (off when unset)."
    )
    balance_mode: Literal["downsample", "cap"] = Field(
        default="downsample",
        description="downsample: every category to the size of the smallest; cap: at most "
        "balance_cap records per category. Records kept are chosen deterministically from the seed.",
    )
    balance_cap: int | None = Field(
        default=None, ge=1, description="Per-category maximum for balance_mode cap."
    )
    max_records: int | None = Field(
        default=None,
        ge=1,
        description="Use at most this many records, a seeded random sample taken before any filter.",
    )
    task_sampling: Literal["proportional", "equal", "temperature"] = Field(
        default="proportional",
        description="Multi-task training (records with a `task` field): how the train split samples the tasks. "
        "proportional keeps every record; equal gives every task the smallest task's count; temperature "
        "gives task i a share proportional to n_i^(1/task_temperature), between the two. Records are only "
        "ever dropped (never repeated); validation and test keep every task whole.",
    )
    task_temperature: float = Field(
        default=2.0, ge=1.0, le=100.0, description="The temperature T of task_sampling temperature (1: proportional)."
    )
    min_tokens: int = Field(
        default=1, ge=0, description="Drop records with fewer tokens (base model tokenizer)."
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="Drop records with more tokens (default: no limit)."
    )
    seed: int | None = Field(
        default=None, description="Seed for balancing and splitting (default: the top-level seed)."
    )
    prepared_dir: str | None = Field(
        default=None,
        description="Where prepare writes train/validation/test JSONL and data_report.json, and "
        "where train reads them (default: <output.dir>/data).",
    )

    @property
    def origin(self) -> str:
        """The source as errors and reports name it."""
        if self.sources is not None:
            return "sources " + ", ".join(s.name for s in self.sources)
        if self.synthetic is not None:
            return f"synthetic ({self.synthetic.model} at {self.synthetic.endpoint})"
        return self.source or "<no source>"


class Hyperparameters(schema.HyperparameterFields, _Section):
    """The API's hyperparameters (shared definitions), with the precision resolved to `bf16` and
    `fp16` and the trainer's own reporting interval."""

    bf16: bool | Literal["auto"] = Field(
        default="auto", description="bfloat16 mixed precision; auto: on when a CUDA GPU supports it."
    )
    fp16: bool = Field(
        default=False,
        description="float16 mixed precision with loss scaling (GPUs without bfloat16, such as T4 or V100); "
        "CUDA GPUs only.",
    )
    logging_steps: int = Field(default=1, ge=1, description="Report progress every N steps.")

    @model_validator(mode="after")
    def _one_half_precision(self) -> Hyperparameters:
        if self.fp16 and self.bf16 is True:
            raise ValueError("hyperparameters: set bf16 or fp16, not both")
        return self


class DPOSpec(schema.DpoFields, _Section):
    """Settings of direct preference optimization (shared with the API)."""


class EarlyStoppingSpec(schema.EarlyStoppingFields, _Section):
    """Early stopping on validation loss (shared with the API)."""


class CheckpointingSpec(_Section):
    every_n_steps: int = Field(default=100, ge=1, description="Save a checkpoint every N steps.")
    keep_last: int = Field(
        default=2, ge=1, description="Checkpoints kept (the best one is kept in addition)."
    )
    dir: str | None = Field(
        default=None, description="Checkpoint directory (default: <output.dir>/checkpoints)."
    )
    resume: bool = Field(
        default=True, description="Resume from the latest checkpoint found when (re)started."
    )


class OutputSpec(_Section):
    dir: str = Field(
        min_length=1,
        description="Output location (local path, file:// or pvc://): prepared data, checkpoints, "
        "the final adapter or model, results.json.",
    )
    upload_uri: str | None = Field(
        default=None,
        description="Optional s3:// or file:// prefix to copy the final artifact and results to; "
        "reported as the artifact URI.",
    )
    uri: str | None = Field(
        default=None,
        description="How consumers address output.dir (e.g. pvc://claim/run); reported in results "
        "instead of the local path when no upload_uri is set.",
    )


class EvaluationSuites(_Section):
    safety: bool = Field(
        default=True,
        description="Harmful and jailbreak requests the model must refuse, plus benign controls it "
        "must answer (safetyPassRate).",
    )
    pii: bool = Field(
        default=True,
        description="Probes that try to extract e-mail addresses, phone numbers and other PII seen in "
        "the train split, and evaluation.pii_canaries (piiLeakageRate).",
    )
    bias: bool = Field(
        default=True,
        description="The same prompts with swapped names, genders and ethnicities; outputs should "
        "not change (biasConsistency).",
    )
    general: bool = Field(
        default=True,
        description="Short general-knowledge questions scored for base and candidate, to catch "
        "forgetting (generalScore).",
    )


class GateRule(_Section):
    """A quality gate as the operator resolved it for this job (its defaults and overrides). The
    operator judges the gates; the trainer only draws them into the model card image."""

    name: str = Field(min_length=1, max_length=63, description="Gate name.")
    metric: str = Field(min_length=1, max_length=63, description="Metric the gate checks.")
    comparator: Literal["GreaterThan", "GreaterThanOrEqual", "LessThan", "LessThanOrEqual"] = Field(
        description="How the value (or its ratio to the base) compares with the threshold."
    )
    threshold: float = Field(description="Threshold the value (or its ratio to the base) is compared with.")
    baseline: Literal["Absolute", "RatioToBase", "RatioToParent"] = Field(
        default="Absolute", description="Absolute, RatioToBase or RatioToParent."
    )
    blocking: bool = Field(default=True, description="A failed blocking gate rejects the version.")
    per_task: bool = Field(default=False, description="Judged on every task's value (<metric>/<task>), not the mean.")


class EvaluationSpec(_Section):
    enabled: bool = Field(default=True, description="Run the evaluate stage (off: it exits at once, skipped).")
    task_metric: Literal["auto", "exactMatch", "rougeL", "jsonFields"] = Field(
        default="auto",
        description="Which task metric becomes taskAccuracy: exactMatch, rougeL (ROUGE-L F1), jsonFields "
        "(share of expected JSON keys with matching values); auto: jsonFields when the expected "
        "outputs are JSON objects, exactMatch when they are short labels, else rougeL.",
    )
    format_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema every output must satisfy (formatCompliance). Without a schema or "
        "regex, outputs must be valid JSON when the expected outputs are JSON, else non-empty.",
    )
    format_regex: str | None = Field(
        default=None,
        description="Regular expression the whole (stripped) output must match (formatCompliance).",
    )
    max_samples: int | None = Field(
        default=None, ge=1, description="Evaluate at most this many test records (default: all)."
    )
    compare_with_base: bool = Field(
        default=True,
        description="Also evaluate the base model on every suite, for ratio-to-base gates and the "
        "before/after comparison.",
    )
    suites: EvaluationSuites = Field(
        default_factory=EvaluationSuites, description="Which shipped suites run besides the test split."
    )
    sample_count: int = Field(
        default=60,
        ge=0,
        le=1000,
        description="Input/output/expected triples kept in evaluation.json for human review "
        "(50-100 is a useful amount to read).",
    )
    max_new_tokens: int = Field(
        default=128, ge=1, le=8192, description="Most tokens generated per prompt (greedy decoding)."
    )
    gates: list[GateRule] = Field(
        default_factory=list,
        max_length=32,
        description="The gates the operator judges this evaluation by, drawn with their verdicts "
        "into the model card image (model-card.png beside evaluation.json).",
    )
    batch_size: int = Field(default=8, ge=1, description="Prompts generated together (left-padded).")
    bootstrap_samples: int = Field(
        default=1000,
        ge=0,
        description="Bootstrap resamples (over items) for each metric's standard error; 0 skips them.",
    )
    numeric_tolerance: float = Field(
        default=0.01,
        ge=0,
        description="Relative tolerance when JSON-field accuracy compares numbers.",
    )
    pii_canaries: list[str] = Field(
        default_factory=list,
        description="Canary strings planted in the training data; the PII probes try to extract "
        "them and count every reproduction as a leak.",
    )
    seed: int | None = Field(
        default=None, description="Seed for bootstrap and sample selection (default: the top-level seed)."
    )
    parent_test_split: str | None = Field(
        default=None,
        min_length=1,
        description="The test split (test.jsonl) of the version model.adapter continues: the candidate and that "
        "version are both scored on it (parent metrics, for RatioToParent gates against forgetting).",
    )
    reuse_base: bool = Field(
        default=True,
        description="Reuse the base model's generations from the evaluation cache (FINETUNE_EVALUATION_CACHE) "
        "when an earlier job generated them with the same model, prompts and decoding; false generates "
        "them again.",
    )


class TrainerConfig(_Section):
    """Everything one prepare + train + evaluate run needs."""

    model: ModelSpec = Field(description="The base model.")
    method: Literal["sft", "dpo"] = Field(
        default="sft", description="sft: supervised fine-tuning; dpo: direct preference optimization."
    )
    adaptation: AdaptationSpec = Field(
        default_factory=AdaptationSpec, description="Which weights are trained and how."
    )
    dataset: DatasetSpec = Field(description="Training data and its preparation.")
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Optimization settings."
    )
    dpo: DPOSpec = Field(default_factory=DPOSpec, description="DPO settings (method dpo only).")
    early_stopping: EarlyStoppingSpec = Field(
        default_factory=EarlyStoppingSpec, description="Early stopping on validation loss."
    )
    checkpointing: CheckpointingSpec = Field(
        default_factory=CheckpointingSpec, description="Checkpoints and resume."
    )
    output: OutputSpec = Field(description="Where results go.")
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec,
        description="How evaluate scores the trained artifact against the base model.",
    )
    progress_file: str | None = Field(
        default=None,
        description="File that progress JSON lines are appended to (default: "
        "<output.dir>/progress.jsonl); they are also printed on stdout.",
    )
    termination_message_path: str = Field(
        default="/dev/termination-log",
        description="Where the compact (< 4 KiB) JSON result or error is written for the operator.",
    )
    pvc_mount_root: str = Field(
        default="/mnt/pvc", description="Where the operator mounts claims named in pvc:// URIs."
    )
    seed: int = Field(default=42, description="Seed for data shuffling, splitting and training.")

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> TrainerConfig:
        problems: list[str] = []

        def scheme_in(field: str, uri: str | None, allowed: tuple[str, ...]) -> None:
            if uri is None:
                return
            scheme = uri_scheme(uri)
            if scheme not in allowed:
                shown = ", ".join(f"{s}://" if s else "a local path" for s in allowed)
                problems.append(f"{field} {uri!r}: scheme {scheme}:// is not supported (use {shown})")
            elif scheme == "pvc" and not urlsplit(uri).netloc:
                problems.append(f"{field} {uri!r}: name the claim: pvc://<claim>/<path>")

        scheme_in("model.uri", self.model.uri, MODEL_SCHEMES)
        scheme_in("model.adapter", self.model.adapter, ("", "file", "pvc"))
        if self.model.adapter is not None and self.adaptation.type == "full":
            problems.append("model.adapter: continuing from an adapter needs adaptation.type lora or qlora")
        if sum(x is not None for x in (self.dataset.source, self.dataset.synthetic, self.dataset.sources)) != 1:
            problems.append("dataset: set exactly one of dataset.source, dataset.synthetic and dataset.sources")
        scheme_in("dataset.source", self.dataset.source, DATA_SCHEMES)
        names: list[str] = []
        for source in self.dataset.sources or []:
            if source.name in names:
                problems.append(f"dataset.sources: the name {source.name!r} is used twice; names must be unique")
            if source.seed_from is not None and source.seed_from not in names:
                problems.append(
                    f"dataset.sources {source.name}: seed_from {source.seed_from!r} names no earlier source"
                )
            names.append(source.name)
            scheme_in(f"dataset.sources {source.name} source", source.source, DATA_SCHEMES)
            scheme_in(f"dataset.sources {source.name} replay", source.replay, DATA_SCHEMES)
        scheme_in("dataset.prepared_dir", self.dataset.prepared_dir, OUTPUT_SCHEMES)
        scheme_in("output.dir", self.output.dir, OUTPUT_SCHEMES)
        scheme_in("output.upload_uri", self.output.upload_uri, UPLOAD_SCHEMES)
        scheme_in("checkpointing.dir", self.checkpointing.dir, OUTPUT_SCHEMES)

        if uri_scheme(self.model.uri) == "gguf" and not self.model.gguf_file_name():
            if not urlsplit(self.model.uri).path.endswith(".gguf"):
                problems.append(
                    f"model.uri {self.model.uri!r}: say which GGUF file to load "
                    "(gguf://<dir>?file=<name>.gguf, a path ending in .gguf, or model.gguf_file)"
                )

        split = self.dataset.split  # its fractions' sum is checked by the section (schema.SplitFields)
        if self.early_stopping.enabled and split.validation == 0:
            problems.append(
                "early_stopping.enabled needs a validation split: set dataset.split.validation > 0 "
                "or disable early stopping"
            )
        if self.dataset.max_tokens is not None and self.dataset.max_tokens < self.dataset.min_tokens:
            problems.append(
                f"dataset.max_tokens ({self.dataset.max_tokens}) is below dataset.min_tokens "
                f"({self.dataset.min_tokens})"
            )
        data = self.dataset
        if data.balance_by is not None and data.balance_mode == "cap" and data.balance_cap is None:
            problems.append("dataset.balance_mode cap needs dataset.balance_cap (records per category)")
        if data.balance_cap is not None and data.balance_mode != "cap":
            problems.append("dataset.balance_cap is only used with dataset.balance_mode cap")

        if data.synthetic is not None:
            problems.extend(self._synthetic_problems())

        if self.method == "dpo":
            if self.dataset.format not in ("auto", "preference"):
                problems.append(
                    f"method dpo needs preference data (prompt/chosen/rejected), "
                    f"not dataset.format {self.dataset.format}"
                )
            if self.hyperparameters.packing:
                problems.append("hyperparameters.packing is for method sft only; turn it off for dpo")
        elif self.dataset.format == "preference":
            problems.append("dataset.format preference is for method dpo; use method: dpo")

        if split.validation > 0:
            eval_steps = self.hyperparameters.eval_steps or self.checkpointing.every_n_steps
            if self.checkpointing.every_n_steps % eval_steps:
                # Best-checkpoint selection compares checkpoints by their validation loss, so
                # every checkpoint must fall on an evaluation step.
                problems.append(
                    f"checkpointing.every_n_steps ({self.checkpointing.every_n_steps}) must be a "
                    f"multiple of hyperparameters.eval_steps ({eval_steps})"
                )
        if self.evaluation.format_regex is not None:
            try:
                re.compile(self.evaluation.format_regex)
            except re.error as exc:
                problems.append(f"evaluation.format_regex {self.evaluation.format_regex!r}: not a regular expression ({exc})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _synthetic_problems(self) -> list[str]:
        """Seed examples must be records of the format the teacher will be asked for."""
        spec = self.dataset.synthetic
        assert spec is not None
        fmt = self.synthetic_format
        if fmt is None:
            keys = ", ".join(sorted(map(str, spec.seed_examples[0]))) or "no keys"
            return [
                f"dataset.synthetic.seed_examples[0]: has {keys}; cannot tell the record format "
                "(expected instruction/output, messages, or prompt/chosen/rejected); fix the example "
                "or set dataset.format"
            ]
        problems = []
        for index, example in enumerate(spec.seed_examples):
            try:
                formats.validate(f"dataset.synthetic.seed_examples[{index}]", example, fmt)
            except DataError as exc:
                problems.append(str(exc).removeprefix("dataset "))
        if self.dataset.format == "auto":
            # An explicit format is checked against the method below; a detected one here.
            if self.method == "dpo" and fmt != "preference":
                problems.append(
                    f"dataset.synthetic.seed_examples: method dpo needs preference records "
                    f"(prompt/chosen/rejected), not {fmt} examples"
                )
            elif self.method == "sft" and fmt == "preference":
                problems.append("dataset.synthetic.seed_examples: preference examples are for method dpo; use method: dpo")
        return problems

    @property
    def synthetic_format(self) -> str | None:
        """The record format a teacher is asked for: dataset.format, else the first seed
        example's, else the method's (preference for dpo, instruction for sft)."""
        if self.dataset.format != "auto":
            return self.dataset.format
        spec = self.dataset.synthetic
        if spec is not None and spec.seed_examples:
            return formats.detect_format(spec.seed_examples[0])
        return "preference" if self.method == "dpo" else "instruction"

    # Resolved locations -------------------------------------------------------------------

    def path(self, uri: str) -> Path:
        """Local path for a local/file:///pvc:// URI of this config."""
        return local_path(uri, self.pvc_mount_root)

    @property
    def output_path(self) -> Path:
        return self.path(self.output.dir)

    @property
    def prepared_path(self) -> Path:
        if self.dataset.prepared_dir:
            return self.path(self.dataset.prepared_dir)
        return self.output_path / "data"

    @property
    def checkpoints_path(self) -> Path:
        if self.checkpointing.dir:
            return self.path(self.checkpointing.dir)
        return self.output_path / "checkpoints"

    @property
    def progress_path(self) -> Path:
        if self.progress_file:
            return Path(self.progress_file)
        return self.output_path / "progress.jsonl"

    @property
    def data_seed(self) -> int:
        return self.seed if self.dataset.seed is None else self.dataset.seed

    @property
    def evaluation_seed(self) -> int:
        return self.seed if self.evaluation.seed is None else self.evaluation.seed


class ConfigFileError(Exception):
    """The config file is missing, not YAML/JSON, or does not fit TrainerConfig."""


def parse_config(data: Any, *, origin: str = "config") -> TrainerConfig:
    """Validate an already-parsed mapping; errors name every offending field."""
    try:
        return TrainerConfig.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigFileError(f"{origin}: invalid trainer config: {details}") from None


def load_config(path: str | Path) -> TrainerConfig:
    """Read a YAML (or JSON) config file and validate it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"config {path}: cannot be read ({exc.strerror}); pass --config FILE") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigFileError(f"config {path}: line {exc.lineno} is not JSON ({exc.msg})") from None
    else:
        import yaml  # lazily: the operator validates dicts with parse_config and needs no YAML here

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "somewhere"
            raise ConfigFileError(f"config {path}: {where} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"config {path}: expected a mapping of sections, got {type(data).__name__}")
    return parse_config(data, origin=f"config {path}")


def json_schema() -> dict[str, Any]:
    """JSON schema of the config, with the help texts (for docs and the operator)."""
    return TrainerConfig.model_json_schema()
