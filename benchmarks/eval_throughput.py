"""Evaluation throughput: the evaluator's batched generation against a one-prompt-at-a-time loop.

    python benchmarks/eval_throughput.py                          # tiny offline model, < 1 min on 2 CPUs
    python benchmarks/eval_throughput.py --examples 128 --max-new-tokens 128 --repeats 5
    python benchmarks/eval_throughput.py --model /models/my-local-model --threads 0 --batch-sizes 1,8,32

The workload is the real one: prompts from the evaluator's own item builders (the shipped
safety, pii, bias and general suites), shuffled with a fixed seed so short and long prompts
share batches as they do in an evaluation, and repeated when `--examples` asks for more than
the suites hold. The batched side is `evaluate.Generator` itself (chat template, left padding
and truncation, greedy decoding, cut at end-of-sequence) at each `--batch-sizes` value; the
baseline, measured in the same run on the same model and prompts, is the loop anyone would write
first: one prompt, one `model.generate`, no padding.

Each side's wall time covers templating, tokenizing, generating and decoding. Repeats are
interleaved (every side once, then again) so a noisy neighbour slows all of them alike; the
table shows the median examples/s and generated tokens/s, the spread of the wall times (a wide
one means the machine was busy: rerun), and the ratio to the baseline. Torch runs on one CPU
thread unless `--threads` says otherwise: on a shared machine, threads that wait for each other
at every operation make a run 10-100x slower whenever another process takes a core, and the
tiny model has nothing to split between threads anyway.

Both sides must do the same work for the ratio to mean anything, so the outputs are compared:
greedy decoding of the same prompt should give the same text whatever the batch, and the table
counts, per batch size, the prompts whose output equals the baseline's. (A few may differ on
real models in low precision: padding changes the order of floating-point sums.)

The default model is the tiny random-initialised one the trainer tests use
(`finetune_trainer.testing.make_tiny_model`), built offline in a temporary directory. Its
random weights seldom emit end-of-sequence, so nearly every prompt generates `--max-new-tokens`
tokens, and at 0.15 M parameters a step costs mostly Python and dispatch overhead, which
batching shares out: expect larger ratios than on a real model, where a batch also runs as long
as its longest answer. Figures and ratios only: nothing here passes or fails on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "trainer-image") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "trainer-image"))

# Nothing here may reach a model hub: the model is built locally or given as a directory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from finetune_trainer import evaluate  # noqa: E402
from finetune_trainer.config import EvaluationSpec  # noqa: E402
from finetune_trainer.models import load_tokenizer  # noqa: E402

NAIVE = "naive loop"
MAX_PROMPT_TOKENS = 512  # the evaluator truncates prompts to max_seq_length; these are all shorter
SHUFFLE_SEED = 0


# --------------------------------------------------------------------------- workload


def evaluation_prompts(count: int | None) -> list[evaluate.Item]:
    """`count` prompts of the shipped suites (None: each once), built as the evaluator builds them."""
    items = evaluate.safety_items() + evaluate.pii_items([]) + evaluate.bias_items([]) + evaluate.general_items()
    random.Random(SHUFFLE_SEED).shuffle(items)
    return [items[i % len(items)] for i in range(count or len(items))]


def load_model(model_dir: Path):
    """The model for generation, placed and typed as the evaluate stage places it."""
    import torch
    from transformers import AutoModelForCausalLM

    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        device = "cuda"
    else:
        dtype, device = torch.float32, "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    return model.to(device).eval()


def evaluator_tokenizer(model_dir: Path):
    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"  # as evaluate_model sets them
    tokenizer.truncation_side = "left"
    return tokenizer


# --------------------------------------------------------------------------- the two sides


@dataclass
class Side:
    """One way of generating: its timings over the repeats and the outputs of the first."""

    label: str
    batch_size: int
    seconds: list[float] = field(default_factory=list)
    generated_tokens: int = 0
    outputs: list[str] = field(default_factory=list)


def run_batched(model, tokenizer, items: list[evaluate.Item], batch_size: int, max_new_tokens: int) -> tuple[float, list[str], int]:
    """The evaluator's Generator over all prompts: (seconds, outputs, generated tokens)."""
    settings = EvaluationSpec(max_new_tokens=max_new_tokens, batch_size=batch_size)
    generator = evaluate.Generator(model, tokenizer, settings, MAX_PROMPT_TOKENS, "benchmark")
    generations = evaluate.Generations()
    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its per-batch progress events
        generator.run("benchmark", items, generations)
    seconds = time.perf_counter() - began
    return seconds, generations.outputs["benchmark"], sum(generations.tokens)


def run_naive(model, tokenizer, items: list[evaluate.Item], max_new_tokens: int) -> tuple[float, list[str], int]:
    """One prompt at a time, no padding: (seconds, outputs, generated tokens)."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    outputs, tokens = [], 0
    began = time.perf_counter()
    for item in items:
        text = tokenizer.apply_chat_template(item.messages, add_generation_prompt=True, tokenize=False)
        encoded = tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_PROMPT_TOKENS, add_special_tokens=False).to(device)
        with torch.inference_mode():
            generated = model.generate(**encoded, generation_config=config)
        row = generated[0, encoded["input_ids"].shape[1] :].tolist()
        length = row.index(eos) + 1 if eos in row else len(row)
        outputs.append(tokenizer.decode(row[:length], skip_special_tokens=True).strip())
        tokens += length
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began, outputs, tokens


# --------------------------------------------------------------------------- report


def print_table(sides: list[Side], examples: int, ids: list[str]) -> None:
    naive = sides[0]
    naive_rate = examples / statistics.median(naive.seconds)
    header = (
        f"{'generation':<18} {'batch':>5}  {'examples/s':>10} {'tokens/s':>10}  {'median s':>8} {'min-max s':>13}  "
        f"{'vs naive':>8}  {'same output as naive':>20}"
    )
    print()
    print(header)
    print("-" * len(header))
    for side in sides:
        median = statistics.median(side.seconds)
        rate = examples / median
        same = sum(a == b for a, b in zip(side.outputs, naive.outputs))
        agreement = "-" if side is naive else f"{same}/{examples}"
        print(
            f"{side.label:<18} {side.batch_size:>5}  {rate:>10.1f} {side.generated_tokens / median:>10.0f}  "
            f"{median:>8.2f} {f'{min(side.seconds):.2f}-{max(side.seconds):.2f}':>13}  {f'x{rate / naive_rate:.2f}':>8}  {agreement:>20}"
        )
    print()
    for side in sides[1:]:
        differing = [ids[i] for i, (a, b) in enumerate(zip(side.outputs, naive.outputs)) if a != b]
        if differing:
            shown = ", ".join(differing[:5]) + (", ..." if len(differing) > 5 else "")
            print(f"batch {side.batch_size}: {len(differing)} output(s) differ from the naive loop: {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a local model directory (default: the tests' tiny random model, built offline)")
    parser.add_argument("--examples", type=int, help="prompts per measurement (default: every shipped suite item once, 154; repeated beyond)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="most tokens generated per prompt (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per side; the median is shown (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0: torch's choice, one per core)")
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma-separated Generator batch sizes (default 1,8,32)")
    args = parser.parse_args(argv)
    batch_sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    if (args.examples is not None and args.examples < 1) or args.max_new_tokens < 1 or args.repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
        parser.error("--examples, --max-new-tokens, --repeats and every --batch-sizes value must be at least 1")

    import torch
    import transformers

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="eval-throughput-") as tmp:
        if args.model is None:
            from finetune_trainer.testing import make_tiny_model

            model_dir, model_name = make_tiny_model(Path(tmp) / "tiny-model"), "tiny random Llama (finetune_trainer.testing)"
        else:
            model_dir, model_name = args.model, str(args.model)
        tokenizer = evaluator_tokenizer(model_dir)
        model = load_model(model_dir)

    items = evaluation_prompts(args.examples)
    examples, ids = len(items), [item.id for item in items]
    device = next(model.parameters()).device
    print(
        f"model: {model_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
        f"{next(model.parameters()).dtype}, {device}, {torch.get_num_threads()} CPU thread(s))"
    )
    print(
        f"workload: {examples} prompts from the shipped suites, up to {args.max_new_tokens} new tokens each, "
        f"greedy; {args.repeats} repeat(s); torch {torch.__version__}, transformers {transformers.__version__}"
    )

    # Untimed warm-up: the first generate call pays one-off costs (allocator, kernel selection).
    run_naive(model, tokenizer, items[:2], min(4, args.max_new_tokens))
    run_batched(model, tokenizer, items[:2], 2, min(4, args.max_new_tokens))

    sides = [Side(NAIVE, 1)] + [Side("evaluate.Generator", size) for size in batch_sizes]
    for repeat in range(args.repeats):
        for side in sides:
            if side.label == NAIVE:
                seconds, outputs, tokens = run_naive(model, tokenizer, items, args.max_new_tokens)
            else:
                seconds, outputs, tokens = run_batched(model, tokenizer, items, side.batch_size, args.max_new_tokens)
            side.seconds.append(seconds)
            if repeat == 0:
                side.outputs, side.generated_tokens = outputs, tokens
            print(f"repeat {repeat + 1}/{args.repeats}: {side.label} batch {side.batch_size}: {seconds:.2f} s", flush=True)

    print_table(sides, examples, ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
