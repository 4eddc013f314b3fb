"""Trainer throughput: training tokens/s of our trainer against a plain trl SFT script.

    python benchmarks/trainer_throughput.py             # 40 steps, 5 repeats (about 3 minutes on 2 CPUs)
    python benchmarks/trainer_throughput.py --quick     # 10 steps, 3 repeats, fewer records (about 1 minute)
    python benchmarks/trainer_throughput.py --steps 100 --repeats 5 --batch-size 16

Both sides train LoRA adapters on the tiny random-initialised model of the trainer tests
(`finetune_trainer.testing.make_tiny_model`, built offline) on the same generated dataset of
many short instruction/output records, so padding is a large share of an unpacked batch:

* ours: `finetune_trainer.train.train_model` with a config, exactly as the trainer image runs
  it (prepared data, progress reporter, graceful-stop callback, checkpoint settings);
* baseline: a minimal trl script as a practitioner would write it (tokenizer, model,
  prompt/completion dataset, `SFTConfig`, `SFTTrainer` with a `LoraConfig`, `train()`).

Each side runs the same number of optimizer steps with the same batch size, sequence length,
LoRA settings, precision, gradient-checkpointing setting, logging frequency and checkpoint
schedule, and no evaluation; the settings and the tokenized data of both trainers are compared
before anything is timed, and a difference is an error. The baseline states gradient
checkpointing and bf16 explicitly because trl turns both on by default, and our trainer follows
the config (off on a CPU).

Only `trainer.train()` is timed (time.perf_counter); model load, tokenization and trainer
construction are reported separately as setup. Tokens are counted as they enter the model's
forward: total includes padding, useful is the attention mask's sum (packed batches are
padding-free, so all of their tokens are useful). Each repeat runs every case once, ours and
its baseline back to back; figures are medians over repeats, and ratios are medians of the
ratios within a repeat, so both sides of a ratio ran under the same conditions. The process's
CPU time is reported beside the wall time because on a shared machine other processes stretch
wall time, not CPU time. Nothing here passes or fails on timing; it exits non-zero only on
errors.

Packing need not pay off on a CPU: trl packs with padding-free batches (one flattened sequence
per batch), and without flash-attention's variable-length kernels the attention runs over the
whole flattened batch under a block-diagonal mask, so its cost grows with (batch x length)^2
instead of batch x length^2. The packing gain column shows what it is on this machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "trainer-image") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "trainer-image"))

# Nothing may reach a model hub: the model and tokenizer are built on the spot.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEED = 42
LORA = {"rank": 16, "alpha": 32, "dropout": 0.05}  # our config's defaults, given to both sides
SAVE_STEPS = 500  # transformers' default save_steps: ours keeps the plain script's checkpoint schedule

_INSTRUCTIONS = [
    "Classify the review.",
    "Answer the question.",
    "Summarize the support ticket.",
    "Translate the sentence into French.",
    "Rewrite the message so it is short and polite.",
]
_WORDS = (
    "customer cannot log in after the password reset and asks for help invoice shows a double "
    "charge for the monthly plan please refund it app crashes when upload photo larger than ten "
    "megabytes how do export my data to csv file from dashboard shipping is late again tracking "
    "number does not work cancel subscription at end of billing period quick brown fox jumps over "
    "lazy dog good answer short polite review positive negative neutral"
).split()


def short_records(count: int, seed: int = 0) -> list[dict]:
    """Short instruction/output records of varied length (10 to 120 tokens, about 60 on average)."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 24)))
        answer = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 16)))
        records.append({"instruction": rng.choice(_INSTRUCTIONS), "input": words, "output": answer.capitalize() + "."})
    return records


# --------------------------------------------------------------------------- measurement


@dataclass
class Case:
    label: str
    side: str  # "ours" or "trl"
    packing: bool


@dataclass
class Run:
    """One timed `trainer.train()`: seconds, tokens in the model's forward, setup before it."""

    setup_seconds: float = 0.0
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this process during train(): what other load on the machine cannot inflate
    total_tokens: int = 0
    useful_tokens: int = 0
    steps: int = 0
    settings: dict = field(default_factory=dict)


def _count_tokens(run: Run):
    def hook(module, args, kwargs):
        input_ids = kwargs.get("input_ids")
        if input_ids is None:
            return
        run.total_tokens += input_ids.numel()
        mask = kwargs.get("attention_mask")
        # Padding-free (packed) batches carry no attention mask and no padding.
        run.useful_tokens += int(mask.sum()) if mask is not None else input_ids.numel()

    return hook


def _settings(trainer) -> dict:
    """What decides the work per step; both sides must agree on all of it."""
    args, model = trainer.args, trainer.model
    lora = model.peft_config["default"]
    dataset = trainer.train_dataset
    return {
        "batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "max_steps": args.max_steps,
        "max_length": args.max_length,
        "packing": args.packing,
        "padding_free": getattr(trainer.data_collator, "padding_free", None),
        "completion_only_loss": getattr(trainer.data_collator, "completion_only_loss", None),
        "activation_checkpointing": args.activation_checkpointing,
        "bf16": args.bf16,
        "fp16": args.fp16,
        "dtype": str(next(model.parameters()).dtype),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "lora": (lora.r, lora.lora_alpha, lora.lora_dropout, sorted(lora.target_modules)),
        "optim": str(args.optim),
        "max_grad_norm": args.max_grad_norm,
        "logging_steps": args.logging_steps,
        "eval_strategy": str(args.eval_strategy),
        "save": (str(args.save_strategy), args.save_steps),
        "torch_compile": args.torch_compile,
        "dataloader_num_workers": args.dataloader_num_workers,
        "train_sequences": len(dataset),
        "train_tokens": sum(len(ids) for ids in dataset["input_ids"]),
        "device": str(args.device),
    }


def instrument(trainer, run: Run, started: float) -> None:
    """Times `trainer.train()` and counts the tokens its forward passes see."""
    run.settings = _settings(trainer)
    trainer.model.register_forward_pre_hook(_count_tokens(run), with_kwargs=True)
    untimed_train = trainer.train

    def timed_train(*args, **kwargs):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        run.setup_seconds = begin - started
        try:
            return untimed_train(*args, **kwargs)
        finally:
            run.train_seconds = time.perf_counter() - begin
            run.cpu_seconds = time.process_time() - begin_cpu
            run.steps = trainer.state.global_step

    trainer.train = timed_train


@contextmanager
def output_to(log: Path):
    """Both trainers' stdout/stderr (progress lines, bars, warnings) go to one log per run."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# --------------------------------------------------------------------------- the two trainers


def ours_config(args, work: Path, model_dir: Path, source: Path, output: Path, packing: bool, steps: int):
    from finetune_trainer.config import parse_config

    return parse_config(
        {
            "model": {"uri": str(model_dir), "cache_dir": str(work / "model-cache")},
            "dataset": {
                "source": str(source),
                "format": "instruction",
                "split": {"train": 1.0, "validation": 0.0, "test": 0.0},
                "dedup": {"near": False},
                "pii_policy": "allow",
                "prepared_dir": str(work / "prepared"),
            },
            "adaptation": {"type": "lora", **LORA},
            "hyperparameters": {
                "batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                "max_steps": steps,
                "max_seq_length": args.max_seq_length,
                "packing": packing,
                "logging_steps": args.logging_steps,
                "gradient_checkpointing": False,
                "bf16": "auto",
            },
            "early_stopping": {"enabled": False},
            "checkpointing": {"every_n_steps": SAVE_STEPS},
            "evaluation": {"enabled": False},
            "output": {"dir": str(output)},
            "termination_message_path": str(work / "termination-log"),
            "seed": SEED,
        },
        origin="benchmark config",
    )


def run_ours(config) -> Run:
    """`train_model` as the trainer image runs it, with its `trainer.train()` timed."""
    from finetune_trainer import train

    run = Run()
    started = time.perf_counter()
    # train_model builds its trainer and calls train() in one go; wrapping the builder is the one
    # place to reach that trainer without changing the code under test.
    build_trainer = train._build_trainer

    def build_and_instrument(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        instrument(trainer, run, started)
        return trainer

    train._build_trainer = build_and_instrument
    try:
        train.train_model(config)
    finally:
        train._build_trainer = build_trainer
    return run


def run_plain_trl(args, model_dir: Path, records: list[dict], output: Path, packing: bool, steps: int) -> Run:
    """A minimal trl SFT script, as a practitioner writes it."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    run = Run()
    started = time.perf_counter()
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16 if bf16 else torch.float32)

    def to_conversation(record: dict) -> dict:
        prompt = record["instruction"].strip()
        if record.get("input", "").strip():
            prompt += "\n\n" + record["input"].strip()
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": record["output"]}],
        }

    dataset = Dataset.from_list([to_conversation(r) for r in records])
    config = SFTConfig(
        output_dir=str(output),
        max_steps=steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_seq_length,
        packing=packing,
        logging_steps=args.logging_steps,
        # trl turns both on by default; the config our trainer runs here has them off on a CPU.
        activation_checkpointing=False,
        bf16=bf16,
        report_to="none",
        seed=SEED,
    )
    peft_config = LoraConfig(
        r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    instrument(trainer, run, started)
    trainer.train()
    return run


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="ftj-trainer-throughput-"))
        self.log = self.work / "trainers.log"
        self.count = 0

    def set_up(self) -> None:
        from finetune_trainer.prepare import prepare_dataset
        from finetune_trainer.testing import make_tiny_model

        with output_to(self.log):
            self.model_dir = make_tiny_model(self.work / "model")
        self.source = self.work / "data.jsonl"
        self.source.write_text("".join(json.dumps(r) + "\n" for r in short_records(self.args.records)), encoding="utf-8")
        # Prepared once, outside the timing; both sides train on its train split, in its order.
        config = self._ours_config(packing=False, steps=1)
        report = prepare_dataset(config)
        prepared = config.prepared_path / "train.jsonl"
        self.records = [json.loads(line) for line in prepared.read_text(encoding="utf-8").splitlines() if line.strip()]
        tokens = report["tokens"]
        print(
            f"data: {len(self.records)} short instruction records (tokens per record: mean {tokens.get('mean')}, "
            f"max {tokens.get('max')}); model: tiny Llama (hidden 64, 2 layers), LoRA r={LORA['rank']}",
            flush=True,
        )

    def _ours_config(self, packing: bool, steps: int, output: Path | None = None):
        return ours_config(self.args, self.work, self.model_dir, self.source, output or self.work / "run", packing, steps)

    def measure(self, case: Case, steps: int) -> Run:
        self.count += 1
        output = self.work / f"run-{self.count}"
        gc.collect()  # the previous run's garbage is not this run's work
        with output_to(self.log):
            if case.side == "ours":
                run = run_ours(self._ours_config(case.packing, steps, output))
            else:
                run = run_plain_trl(self.args, self.model_dir, self.records, output, case.packing, steps)
        shutil.rmtree(output, ignore_errors=True)  # checkpoints; the disk stays small
        if run.steps != steps:
            raise RuntimeError(f"{case.label}: trained {run.steps} steps, expected {steps}; see {self.log}")
        return run

    def stop(self) -> None:
        if self.args.keep:
            print(f"kept {self.work} (trainer output in {self.log})")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def check_same_work(warm_up: dict[str, Run], cases: list[Case]) -> None:
    """Ours and the baseline must do the same work per step, or the ratio means nothing."""
    for packing in (False, True):
        by_side = {c.side: warm_up[c.label].settings for c in cases if c.packing == packing}
        if len(by_side) != 2:
            continue
        ours, plain = by_side["ours"], by_side["trl"]
        differ = sorted(k for k in ours.keys() | plain.keys() if ours.get(k) != plain.get(k))
        if differ:
            shown = "; ".join(f"{k}: ours {ours.get(k)!r}, trl {plain.get(k)!r}" for k in differ)
            raise RuntimeError(f"packing {packing}: the two trainers are not set up alike ({shown}); fix the benchmark")


def run_order(cases: list[Case], repeat: int) -> list[Case]:
    """Ours and its baseline run back to back, so a burst of load from elsewhere on the machine
    tends to hit both; which of the two goes first alternates every repeat, and which pair goes
    first every other repeat."""
    pairs = [sorted((c for c in cases if c.packing == packing), key=lambda c: c.side != "ours") for packing in (False, True)]
    if (repeat // 2) % 2:
        pairs.reverse()
    return [case for pair in pairs for case in (pair if repeat % 2 == 0 else pair[::-1])]


def paired_ratio(runs: list[Run], baseline: list[Run], seconds: str) -> float:
    """Median over repeats of useful tokens/s in `runs` over those in `baseline` in the same repeat."""
    return statistics.median(
        (a.useful_tokens / getattr(a, seconds)) / (b.useful_tokens / getattr(b, seconds)) for a, b in zip(runs, baseline)
    )


def print_table(cases: list[Case], runs: dict[str, list[Run]]) -> None:
    rows = {}
    for case in cases:
        measured = runs[case.label]
        rows[case.label] = {
            "seconds": statistics.median(r.train_seconds for r in measured),
            "spread": (min(r.train_seconds for r in measured), max(r.train_seconds for r in measured)),
            "cpu": statistics.median(r.cpu_seconds for r in measured),
            "setup": statistics.median(r.setup_seconds for r in measured),
            "total": statistics.median(r.total_tokens / r.train_seconds for r in measured),
            "useful": statistics.median(r.useful_tokens / r.train_seconds for r in measured),
            "padding": 1 - measured[0].useful_tokens / measured[0].total_tokens,
            "steps": measured[0].steps,
        }

    header = (
        f"{'trainer':<22} {'steps':>5} {'wall s':>7} {'min-max':>11} {'cpu s':>6} {'setup s':>7} {'tokens/s':>8} "
        f"{'useful tok/s':>12} {'pad %':>6} {'ours/trl':>8} {'(cpu)':>7} {'packing gain':>12}"
    )
    print()
    print(header)
    print("-" * len(header))
    for case in cases:
        row = rows[case.label]
        baseline = next((c for c in cases if c.side == "trl" and c.packing == case.packing), None)
        ratio = ratio_cpu = ""
        if case.side == "ours" and baseline:
            ratio = f"x{paired_ratio(runs[case.label], runs[baseline.label], 'train_seconds'):.3f}"
            ratio_cpu = f"x{paired_ratio(runs[case.label], runs[baseline.label], 'cpu_seconds'):.3f}"
        unpacked = next((c for c in cases if c.side == case.side and not c.packing), None)
        gain = f"x{paired_ratio(runs[case.label], runs[unpacked.label], 'train_seconds'):.2f}" if case.packing and unpacked else ""
        spread = f"{row['spread'][0]:.2f}-{row['spread'][1]:.2f}"
        print(
            f"{case.label:<22} {row['steps']:>5} {row['seconds']:>7.2f} {spread:>11} {row['cpu']:>6.2f} {row['setup']:>7.2f} "
            f"{row['total']:>8.0f} {row['useful']:>12.0f} {100 * row['padding']:>5.1f}% {ratio:>8} {ratio_cpu:>7} {gain:>12}"
        )
    print()
    print("wall s: median seconds of trainer.train() (min-max over repeats); cpu s: this process's CPU time in it;")
    print("setup s: model load, tokenization and trainer construction, not in wall s; tokens/s include padding.")
    print("ours/trl: median over repeats of ours' useful tokens/s over the plain trl script's, each pair run back to")
    print("back (above 1: ours is faster); (cpu): the same from CPU time, which other processes' load does not inflate.")
    print("packing gain: the same median ratio, the trainer with packing over itself without it.")
    print()
    for case in cases:
        baseline = next((c for c in cases if c.side == "trl" and c.packing == case.packing), None)
        if case.side == "ours" and baseline:
            each = [
                (a.useful_tokens / a.train_seconds) / (b.useful_tokens / b.train_seconds)
                for a, b in zip(runs[case.label], runs[baseline.label])
            ]
            print(f"ours/trl per repeat, {'packing' if case.packing else 'no packing'}: {' '.join(f'{r:.3f}' for r in each)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per timed run (default 40; 10 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case, medians reported (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, repeats and records (about a minute on 2 CPUs)")
    parser.add_argument("--batch-size", type=int, default=8, help="per-device batch size (default 8)")
    parser.add_argument("--max-seq-length", type=int, default=256, help="truncation and packing length (default 256)")
    parser.add_argument("--logging-steps", type=int, default=1, help="log every N steps, both sides (default 1, our default)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="(default 1e-3)")
    parser.add_argument("--records", type=int, default=None, help="generated records (default 3000; 1000 with --quick)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: the tiny model's operations are too small to gain from more, "
        "and one thread keeps the figures steady on a shared machine)",
    )
    parser.add_argument("--no-packing", action="store_true", help="skip the packing cases")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (model, data, trainer log)")
    args = parser.parse_args(argv)
    steps = args.steps or (10 if args.quick else 40)
    repeats = args.repeats or (3 if args.quick else 5)
    args.records = args.records or (1000 if args.quick else 3000)

    import peft
    import torch
    import transformers
    import trl

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads, {'cuda' if torch.cuda.is_available() else 'cpu'}), "
        f"transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}",
        flush=True,
    )
    cases = [
        Case("ours, no packing", "ours", False),
        Case("plain trl, no packing", "trl", False),
        Case("ours, packing", "ours", True),
        Case("plain trl, packing", "trl", True),
    ]
    if args.no_packing:
        cases = [c for c in cases if not c.packing]
    bench = Bench(args)
    runs: dict[str, list[Run]] = {c.label: [] for c in cases}
    try:
        bench.set_up()
        print("warm-up: 2 steps per case (imports, first allocations; not reported) ...", flush=True)
        check_same_work({case.label: bench.measure(case, 2) for case in cases}, cases)
        # Every train() starts with a full garbage collection (accelerate's free_memory), whose
        # cost grows with the half a million objects the imported libraries hold: 0.3 s that
        # varies by +-0.1 s from run to run, unrelated to training. Freezing what exists now
        # keeps those objects out of it; each run's own objects are still collected as usual.
        gc.collect()
        gc.freeze()
        for repeat in range(repeats):
            for case in run_order(cases, repeat):
                run = bench.measure(case, steps)
                runs[case.label].append(run)
                print(
                    f"repeat {repeat + 1}/{repeats} {case.label:<22} {run.train_seconds:6.2f} s "
                    f"(cpu {run.cpu_seconds:5.2f} s)  {run.useful_tokens / run.train_seconds:7.0f} useful tok/s  "
                    f"setup {run.setup_seconds:.2f} s",
                    flush=True,
                )
        print_table(cases, runs)
        dtype = runs[cases[0].label][0].settings["dtype"].removeprefix("torch.")
        print(
            f"\n{steps} steps x batch {args.batch_size}, max length {args.max_seq_length}, LoRA r={LORA['rank']} all-linear, "
            f"{dtype}, no gradient checkpointing, logging every {args.logging_steps} step(s), {repeats} repeats"
        )
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception:
        args.keep = True  # the trainers' output explains the error
        raise
    finally:
        gc.unfreeze()  # so that interpreter shutdown frees those objects as usual
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
