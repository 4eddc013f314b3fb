"""Training: SFT or DPO with LoRA, QLoRA or full fine-tuning, resumable and observable.

    python -m finetune_trainer.train --config config.yaml

Reads the prepared splits (running `prepare` first when they are missing), loads the base model,
and trains with trl's SFTTrainer or DPOTrainer on transformers' Trainer. Along the way it:

- evaluates validation loss every `hyperparameters.eval_steps`, stops early when it stops
  improving, and keeps the best checkpoint (load_best_model_at_end);
- saves a checkpoint every `checkpointing.every_n_steps` under the output location and resumes
  from the latest complete one when restarted; on SIGTERM it saves one more and exits 143;
- reports progress as JSON lines on stdout and in the progress file;
- writes the adapter (LoRA/QLoRA) or model (full) to <output.dir>/adapter or /model, its
  digest, and results.json beside it, plus a compact summary to the termination-message path.

Multi-GPU and multi-node runs use the standard launcher environment, e.g.
`torchrun --nnodes=$NNODES --nproc-per-node=$GPUS --node-rank=$RANK
--master-addr=$MASTER_ADDR --master-port=$MASTER_PORT -m finetune_trainer.train --config ...`
(or `accelerate launch`). WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are read by
torch.distributed through transformers; only the main process (RANK 0) writes progress,
results and the termination message, while every rank writes its part of checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .artifacts import atomic_directory, digest_files, write_json
from .cli import emit, run
from .config import TrainerConfig
from .exitcodes import ConfigError, DataError, ModelError, StorageError, Terminated, TrainingDiverged
from .formats import to_preference_example, to_sft_example
from .models import hub_lineage, load_tokenizer, resolve_model
from .prepare import SPLITS, prepare_dataset, read_report, report_summary

RESULTS_FILE = "results.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint (one with trainer_state.json), if any."""
    if not directory.is_dir():
        return None
    found = []
    for child in directory.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def _load_split(prepared: Path, name: str, fmt: str, method: str) -> list[dict]:
    path = prepared / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(f"prepared data {path}: missing; rerun prepare (or delete {prepared} so train prepares it)")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                rows.append(to_preference_example(record) if method == "dpo" else to_sft_example(record, fmt))
    return rows


def _wait_for_prepared(config: TrainerConfig, stop, timeout_seconds: float = 3600.0) -> dict[str, Any]:
    """Other ranks wait for rank 0 to prepare the data (the prepared dir must be shared)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        report = read_report(config.prepared_path)
        if report is not None:
            return report
        if stop.requested:
            raise Terminated("train: SIGTERM while waiting for rank 0 to prepare the data")
        time.sleep(2)  # polling shared storage; the deadline bounds the wait
    raise DataError(
        f"prepared data {config.prepared_path}: not written by rank 0 within {timeout_seconds:.0f} s; "
        "put dataset.prepared_dir on storage every node shares, or run prepare before the launch"
    )


def _use_bf16(config: TrainerConfig, cuda: bool) -> bool:
    import torch

    if config.hyperparameters.fp16:
        return False
    wanted = config.hyperparameters.bf16
    supported = cuda and torch.cuda.is_bf16_supported()
    if wanted is True and not supported:
        raise ConfigError(
            "hyperparameters.bf16 is true but no CUDA GPU with bfloat16 support is visible; "
            "set bf16: auto (or false) to train in fp32"
        )
    return supported if wanted == "auto" else bool(wanted)


def _use_fp16(config: TrainerConfig, cuda: bool) -> bool:
    if config.hyperparameters.fp16 and not cuda:
        raise ConfigError(
            "hyperparameters.fp16 is true but no CUDA GPU is visible; float16 mixed precision trains on "
            "GPUs only: set precision auto or fp32 to train on the CPU"
        )
    return config.hyperparameters.fp16


def _load_model(config: TrainerConfig, model_dir: Path, cuda: bool, bf16: bool, fp16: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": config.model.trust_remote_code}
    if config.adaptation.type == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16,
        )
        kwargs["dtype"] = torch.bfloat16 if bf16 else torch.float16
    else:
        # Full fine-tuning keeps fp32 master weights (bf16/fp16 autocast does the math); frozen LoRA
        # bases can live in half precision and halve their memory (peft keeps the adapters fp32,
        # which fp16's loss scaling needs).
        lora = config.adaptation.type == "lora"
        kwargs["dtype"] = torch.bfloat16 if (bf16 and lora) else torch.float16 if (fp16 and lora) else torch.float32
    attention = attention_implementation(config, cuda)
    if attention:
        kwargs["attn_implementation"] = attention
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model {config.model.uri}: cannot be loaded from {model_dir} ({exc})") from None
    if config.adaptation.type == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.hyperparameters.gradient_checkpointing
        )
    return model


PACKING_WITHOUT_FLASH_ATTENTION = (
    "hyperparameters.packing: packed batches are flattened into one padding-free sequence, which "
    "pays off only with FlashAttention's variable-length kernels (a CUDA GPU and the flash-attn "
    "package); without them attention spans the whole flattened batch and training is slower than "
    "unpacked (benchmarks/trainer_throughput.py measures it). Turn packing off here."
)


def attention_implementation(config: TrainerConfig, cuda: bool) -> str | None:
    """FlashAttention 2 for packed SFT on a GPU that has it; otherwise the library's default."""
    import importlib.util

    if config.method == "sft" and config.hyperparameters.packing and cuda and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    return None


def start_from_adapter(config: TrainerConfig, model):
    """Continual learning: the earlier version's adapter on the freshly loaded base, trainable
    (continue), or merged into it for a new adapter on top (stack). Without one, the model."""
    if config.model.adapter is None:
        return model
    from peft import PeftModel

    path = config.path(config.model.adapter)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(
            f"model.adapter {config.model.adapter}: no adapter_config.json in {path}; the version "
            f"{config.model.adapter_of or ''} it came from may have been deleted by retention"
        )
    try:
        adapted = PeftModel.from_pretrained(model, str(path), is_trainable=config.model.adapter_mode == "continue")
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"model.adapter {config.model.adapter}: cannot be applied to {config.model.uri} ({exc})") from None
    emit({"event": "adapter_loaded", "adapter": config.model.adapter, "of": config.model.adapter_of, "mode": config.model.adapter_mode})
    return adapted if config.model.adapter_mode == "continue" else adapted.merge_and_unload()


def _peft_config(config: TrainerConfig):
    if config.adaptation.type == "full" or (config.model.adapter is not None and config.model.adapter_mode == "continue"):
        return None  # full fine-tuning, or the loaded adapter is what trains
    from peft import LoraConfig

    modules = config.adaptation.target_modules
    return LoraConfig(
        r=config.adaptation.rank,
        lora_alpha=config.adaptation.alpha,
        lora_dropout=config.adaptation.dropout,
        target_modules="all-linear" if modules == ["all-linear"] else list(modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def check_target_modules(config: TrainerConfig, model) -> None:
    """Every module named in adaptation.targetModules must exist in the model (peft's rule: the
    module's name, or its last dotted parts): a name that matches nothing is a configuration error
    found before training, naming the spec field and the model's adaptable modules; never a
    training failure retried four times."""
    modules = list(config.adaptation.target_modules or [])
    if config.adaptation.type == "full" or not modules or modules == ["all-linear"]:
        return
    names = [name for name, _ in model.named_modules() if name]
    missing = [m for m in modules if not any(n == m or n.endswith("." + m) for n in names)]
    if not missing:
        return
    import torch

    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head"})
    raise ConfigError(
        f"spec.adaptation.targetModules names {', '.join(missing)}, which the base model does not have; "
        f"its linear modules are {', '.join(linear) or 'none'} (or leave targetModules empty to adapt every one)"
    )


def _training_arguments(config: TrainerConfig, cuda: bool, bf16: bool, has_validation: bool) -> dict[str, Any]:
    hp = config.hyperparameters
    eval_steps = hp.eval_steps or config.checkpointing.every_n_steps
    return {
        "output_dir": str(config.checkpoints_path),
        "num_train_epochs": hp.epochs,
        "max_steps": hp.max_steps or -1,
        "per_device_train_batch_size": hp.batch_size,
        "per_device_eval_batch_size": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "learning_rate": hp.learning_rate,
        "lr_scheduler_type": hp.lr_scheduler,
        "warmup_steps": hp.warmup_ratio,  # a float below 1 is a fraction of the total steps
        "weight_decay": hp.weight_decay,
        "max_grad_norm": hp.max_grad_norm,
        # transformers 5 calls gradient checkpointing "activation checkpointing".
        "activation_checkpointing": hp.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False} if hp.gradient_checkpointing else None,
        "bf16": bf16,
        "fp16": cuda and hp.fp16,  # on the CPU _use_fp16 refused it already
        "use_cpu": not cuda,
        "logging_strategy": "steps",
        "logging_steps": hp.logging_steps,
        "eval_strategy": "steps" if has_validation else "no",
        "eval_steps": eval_steps if has_validation else None,
        "save_strategy": "steps",
        "save_steps": config.checkpointing.every_n_steps,
        # With best-model tracking, a limit of 1 would let the trainer delete the checkpoint a
        # SIGTERM just wrote in favour of the best one; two always keeps the latest.
        "save_total_limit": max(config.checkpointing.keep_last, 2) if has_validation else config.checkpointing.keep_last,
        "load_best_model_at_end": has_validation,
        "metric_for_best_model": "eval_loss" if has_validation else None,
        "greater_is_better": False if has_validation else None,
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": True,
        "save_only_model": False,  # optimizer and scheduler state are needed to resume exactly
        # Every trainable parameter (LoRA matrices or the whole model) gets a gradient each step:
        # DDP need not search the graph for unused ones (an extra pass per step otherwise).
        "ddp_find_unused_parameters": False,
    }


def _build_trainer(config, model, tokenizer, train_rows, validation_rows, cuda, bf16, callbacks):
    from datasets import Dataset

    check_target_modules(config, model)
    has_validation = bool(validation_rows)
    arguments = _training_arguments(config, cuda, bf16, has_validation)
    hp = config.hyperparameters
    train_dataset = Dataset.from_list(train_rows)
    eval_dataset = Dataset.from_list(validation_rows) if has_validation else None
    peft_config = _peft_config(config)
    if config.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(
            **arguments,
            beta=config.dpo.beta,
            loss_type=config.dpo.loss_type,
            max_length=hp.max_seq_length,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    else:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(
            **arguments,
            max_length=hp.max_seq_length,
            packing=hp.packing,
            completion_only_loss=hp.completion_only_loss,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    from transformers import PrinterCallback

    # Progress goes out as our JSON lines; the default printer would interleave Python dicts.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _upload(local: Path, uri: str) -> str:
    """Upload the artifact directory; returns the digest of the bytes sent (see storage)."""
    from .storage import storage_errors, upload_directory

    try:
        return upload_directory(local, uri, "output")
    except storage_errors() as exc:
        raise StorageError(f"output {uri}: upload failed ({exc}); check output.upload_uri and credentials") from None


def train_model(config: TrainerConfig) -> dict[str, Any]:
    """Prepare (if needed) and train; returns the compact summary for the operator."""
    # Imported here, not at module level, so config errors are reported without loading torch.
    import torch
    from transformers import EarlyStoppingCallback, set_seed

    from .progress import GracefulStop

    stop = GracefulStop()
    try:
        return _train(config, stop, torch, EarlyStoppingCallback, set_seed)
    finally:
        stop.restore()


def _train(config, stop, torch, EarlyStoppingCallback, set_seed) -> dict[str, Any]:
    from .progress import ProgressReporter
    from .reporting import ConfigMapReporter

    cuda = torch.cuda.is_available()
    if config.adaptation.type == "qlora":
        if not cuda:
            raise ConfigError(
                "adaptation.type qlora: QLoRA needs a CUDA GPU (4-bit bitsandbytes kernels), and "
                "none is visible; request a GPU or use adaptation.type lora"
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("adaptation.type qlora: the bitsandbytes package is missing from this image; use lora or an image with bitsandbytes") from None

    finished = _finished_run(config)
    if finished is not None:
        return finished

    report = read_report(config.prepared_path)
    if report is None and is_main_process():
        report = prepare_dataset(config)
        emit({"event": "prepared", "prepared_dir": str(config.prepared_path), **report_summary(report)})
    elif report is None:
        report = _wait_for_prepared(config, stop)
    fmt = report["format"]
    rows = {name: _load_split(config.prepared_path, name, fmt, config.method) for name in SPLITS}
    if not rows["train"]:
        raise DataError(f"prepared data {config.prepared_path}: train split is empty; add data or change dataset.split")
    has_validation = bool(rows["validation"])

    set_seed(config.seed)
    model_dir = resolve_model(config)
    bf16 = _use_bf16(config, cuda)
    fp16 = _use_fp16(config, cuda)
    tokenizer = load_tokenizer(model_dir, config.dataset.chat_template, fmt)
    model = start_from_adapter(config, _load_model(config, model_dir, cuda, bf16, fp16))

    reporter = ProgressReporter(
        config.progress_path,
        emit if is_main_process() else (lambda event: None),
        remote=ConfigMapReporter.from_env() if is_main_process() else None,
    )
    callbacks: list = [reporter, stop]
    if is_main_process() and config.method == "sft" and config.hyperparameters.packing \
            and attention_implementation(config, cuda) is None:
        emit({"event": "warning", "message": PACKING_WITHOUT_FLASH_ATTENTION})
    if has_validation and config.early_stopping.enabled:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=config.early_stopping.patience,
                early_stopping_threshold=config.early_stopping.min_delta,
            )
        )
    trainer = _build_trainer(config, model, tokenizer, rows["train"], rows["validation"], cuda, bf16, callbacks)
    if trainer.args.world_size > 1:
        # Every rank says it joined, so each node's log shows its place in the run.
        emit({"event": "joined", "rank": trainer.args.process_index, "world_size": trainer.args.world_size,
              "backend": torch.distributed.get_backend(), "device": str(trainer.args.device)})

    resume_from = latest_checkpoint(config.checkpoints_path) if config.checkpointing.resume else None
    if stop.requested:
        raise Terminated("train: SIGTERM before training started; nothing to save", {"checkpoint": str(resume_from) if resume_from else None})
    if is_main_process():
        reporter.write(
            {
                "event": "resumed" if resume_from else "started",
                "from_step": int(_CHECKPOINT.match(resume_from.name).group(1)) if resume_from else 0,
                "checkpoint": str(resume_from) if resume_from else None,
                "train_records": len(rows["train"]),
                "validation_records": len(rows["validation"]),
            }
        )
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    state = trainer.state

    if reporter.diverged_at is not None:
        raise TrainingDiverged(
            f"train: loss became {reporter.loss} at step {reporter.diverged_at}; lower "
            "hyperparameters.learning_rate or check the data for broken records"
        )
    if stop.requested:
        saved = latest_checkpoint(config.checkpoints_path)
        if is_main_process():
            reporter.write({"event": "terminated", "step": state.global_step, "checkpoint": str(saved) if saved else None})
        raise Terminated(
            f"train: stopped by SIGTERM at step {state.global_step}; checkpoint saved, a restart resumes from it",
            {"step": state.global_step, "total_steps": state.max_steps, "checkpoint": str(saved) if saved else None},
        )

    final_metrics = trainer.evaluate() if has_validation else {}
    if not is_main_process():
        return {"status": "Succeeded", "stage": "train"}
    return _write_results(config, trainer, tokenizer, report, output, final_metrics, resume_from, model_dir)


def _write_results(config, trainer, tokenizer, report, output, final_metrics, resume_from, model_dir) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    state = trainer.state
    # A stacked adapter fits only the merged weights it was trained on: the artifact is those
    # weights with it merged in, full weights.
    stacked = config.model.adapter is not None and config.model.adapter_mode == "stack"
    kind = "model" if config.adaptation.type == "full" or stacked else "lora-adapter"
    artifact_dir = config.output_path / ("model" if kind == "model" else "adapter")
    with atomic_directory(artifact_dir) as staging:
        if stacked:
            trainer.model.merge_and_unload().save_pretrained(str(staging))
        else:
            trainer.save_model(str(staging))
        tokenizer.save_pretrained(str(staging))
    digest = digest_files(artifact_dir)

    artifact_uri = str(artifact_dir)
    if config.output.upload_uri:
        artifact_uri = config.output.upload_uri.rstrip("/") + "/" + artifact_dir.name
        uploaded = _upload(artifact_dir, artifact_uri)
        if uploaded != digest:
            raise StorageError(f"output {artifact_uri}: the uploaded bytes have digest {uploaded}, the files "
                               f"written {digest}; the artifact changed while it was uploaded")
    elif config.output.uri:
        artifact_uri = config.output.uri.rstrip("/") + "/" + artifact_dir.name

    eval_metrics = {k.removeprefix("eval_"): v for k, v in final_metrics.items() if isinstance(v, (int, float))}
    metrics: dict[str, Any] = {
        "train_loss": output.training_loss,
        "eval_loss": eval_metrics.get("loss"),
        "best_eval_loss": state.best_metric,
        "global_step": state.global_step,
        "total_steps": state.max_steps,
        "epoch": state.epoch,
        "stopped_early": state.global_step < state.max_steps,
        "train_runtime_seconds": output.metrics.get("train_runtime"),
        "num_input_tokens_seen": getattr(state, "num_input_tokens_seen", None),
    }
    for key in ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected"):
        if key in eval_metrics:
            metrics[key] = eval_metrics[key]

    results = {
        "status": "Succeeded",
        "stage": "train",
        "method": config.method,
        "adaptation": config.adaptation.type,
        "base_model": config.model.uri,
        **({"continued_from": {"adapter": config.model.adapter, "version": config.model.adapter_of, "mode": config.model.adapter_mode}}
           if config.model.adapter is not None else {}),
        "base_model_hub": _hub_lineage(config, report),
        "artifact": {"kind": kind, "uri": artifact_uri, "path": str(artifact_dir), "sha256": digest},
        "metrics": metrics,
        "best_checkpoint": state.best_model_checkpoint,
        "resumed_from": str(resume_from) if resume_from else None,
        "dataset": report_summary(report),
        "config": config.model_dump(mode="json"),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "trl": trl.__version__,
        },
        "log_history": state.log_history,
    }
    results_path = config.output_path / RESULTS_FILE
    write_json(results_path, results)
    if config.output.upload_uri:
        _upload_file(results_path, config.output.upload_uri.rstrip("/") + "/" + RESULTS_FILE)
    summary = {
        "status": "Succeeded",
        "stage": "train",
        "artifact": {"kind": kind, "uri": artifact_uri, "sha256": digest, **results["base_model_hub"]},
        "metrics": {k: v for k, v in metrics.items() if v is not None},
        "dataset": results["dataset"],
        "results": str(results_path),
        "_optional": ["dataset", "results"],
    }
    reporter_event = {"event": "finished", "artifact": artifact_uri, "sha256": digest, **summary["metrics"]}
    emit(reporter_event)
    return summary


def _hub_lineage(config: TrainerConfig, report: dict[str, Any]) -> dict[str, Any]:
    """The hf:// base model's commit, and whether the whole job found it in the cache: prepare
    (which loads the tokenizer first) and train both downloaded nothing."""
    lineage = hub_lineage(config.model)
    prepared = report.get("base_model_hub") or {}
    if lineage and prepared.get("base_model_from_cache") is False:
        lineage["base_model_from_cache"] = False
    return lineage


def _finished_run(config: TrainerConfig) -> dict[str, Any] | None:
    """The summary of a run that already finished with this config, or None.

    A Pod can be deleted (or preempted) after training finished but before it exited; the next
    attempt must report that result, not train past max_steps from the last checkpoint.
    """
    path = config.output_path / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    artifact = results.get("artifact") or {}
    artifact_dir = Path(artifact.get("path") or "")
    if results.get("config") != config.model_dump(mode="json") or not artifact_dir.is_dir():
        return None
    if digest_files(artifact_dir) != artifact.get("sha256"):
        return None
    metrics = {k: v for k, v in (results.get("metrics") or {}).items() if v is not None}
    emit({"event": "finished", "artifact": artifact.get("uri"), "sha256": artifact.get("sha256"), "already_finished": True, **metrics})
    return {
        "status": "Succeeded",
        "stage": "train",
        "artifact": {"kind": artifact.get("kind"), "uri": artifact.get("uri"), "sha256": artifact.get("sha256"),
                     **(results.get("base_model_hub") or {})},
        "metrics": metrics,
        "dataset": results.get("dataset"),
        "results": str(path),
        "_optional": ["dataset", "results"],
    }


def _upload_file(local: Path, uri: str) -> None:
    from .storage import filesystem, storage_errors

    try:
        fs, path = filesystem(uri, "output")
        with fs.open(path, "wb") as handle:
            handle.write(local.read_bytes())
    except storage_errors() as exc:
        raise StorageError(f"output {uri}: upload failed ({exc}); check output.upload_uri and credentials") from None


def main(argv: list[str] | None = None) -> int:
    return run("train", train_model, argv)

if __name__ == "__main__":
    sys.exit(main())
