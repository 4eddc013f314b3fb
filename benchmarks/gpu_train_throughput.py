"""GPU training throughput of a 7B-class model with LoRA and QLoRA (not part of the test suite).

Builds a random-initialised Llama-architecture model the size of Llama-2-7B (hidden 4096,
32 layers, 32 heads, intermediate 11008, vocabulary 32000) directly on the GPU, applies LoRA
to every linear layer, and times N optimizer steps in bfloat16 on synthetic tokens. It prints
tokens/s and model FLOPs utilisation (MFU). Nothing is downloaded; random weights train exactly
as fast as real ones.

MFU counts the FLOPs a LoRA step needs per token: forward 2P plus the backward pass through
the frozen base for activation gradients 2P (weight gradients only for the small adapters),
so about 4 x parameters, plus causal attention (QK^T and AV have no weights but need
gradients for both operands: 4 + 8 FLOPs per layer x hidden x position, halved by the causal
mask) = 6 x layers x hidden x sequence length. The peak defaults to 989 TFLOP/s,
dense bf16 on an H100/H200 SXM; pass --peak-tflops for other GPUs.

    python benchmarks/gpu_train_throughput.py --steps 20 --batch-size 4 --seq-len 2048
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def build_model(args, quantized: bool):
    import torch
    from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max(4096, args.seq_len),
        attn_implementation="sdpa",
    )
    if not quantized:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        return model
    # bitsandbytes quantizes on load, so write the random model once and load it in 4 bit.
    import tempfile

    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    tmp = tempfile.mkdtemp(prefix="bench-7b-")
    model.save_pretrained(tmp)
    del model
    torch.cuda.empty_cache()
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return LlamaForCausalLM.from_pretrained(tmp, quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0})


def run(args, mode: str) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    torch.manual_seed(0)
    model = build_model(args, quantized=mode == "qlora")
    base_params = sum(p.numel() for p in model.parameters())
    if mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
        base_params = args.layers * (4 * args.hidden**2 + 3 * args.hidden * args.intermediate) + 2 * 32000 * args.hidden
    elif args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(
        model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    tokens = torch.randint(0, 32000, (args.batch_size, args.seq_len), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started

    tokens_per_second = args.steps * args.batch_size * args.seq_len / elapsed
    flops_per_token = 4 * base_params + 6 * args.layers * args.hidden * args.seq_len
    mfu = tokens_per_second * flops_per_token / (args.peak_tflops * 1e12)
    result = {
        "mode": mode,
        "parameters": base_params,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "seconds_per_step": round(elapsed / args.steps, 4),
        "tokens_per_second": round(tokens_per_second, 1),
        "mfu": round(mfu, 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
    del model, optimizer
    torch.cuda.empty_cache()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--modes", default="lora,qlora", help="comma-separated: lora, qlora")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_train_throughput: no CUDA GPU visible; this benchmark needs one (run it on a GPU node)", file=sys.stderr)
        return 2
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}))
    for mode in args.modes.split(","):
        if mode == "qlora":
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                print(json.dumps({"mode": "qlora", "skipped": "bitsandbytes is not installed"}))
                continue
        print(json.dumps(run(args, mode)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
