"""A tiny, offline, deterministic model for tests of the trainer and the operator.

`make_tiny_model(dir)` writes a random-initialised Llama-architecture causal LM (hidden size 64,
2 layers, 4 heads, vocabulary 512) with a byte-level BPE tokenizer trained on the spot from a
built-in corpus. It has pad/eos tokens and a ChatML-style chat template, loads with
`AutoModelForCausalLM`/`AutoTokenizer` like any hub model, trains for real on a CPU in seconds,
and needs no network. The same seed gives the same weights and tokenizer every time.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
_MARKER = "tiny_model.json"

# Enough text that common words, JSON punctuation and chat roles become single tokens.
_CORPUS = [
    'user assistant system {"summary": "", "priority": "low"} {"summary": "", "priority": "high"}',
    "Summarize the support ticket as JSON with the keys summary and priority.",
    "The customer cannot log in after the password reset and asks for help.",
    "My invoice shows a double charge for the monthly plan, please refund it.",
    "The app crashes when I upload a photo larger than ten megabytes.",
    "How do I export my data to a CSV file from the dashboard?",
    "Shipping is late again and the tracking number does not work.",
    "Please cancel my subscription at the end of the billing period.",
    "The quick brown fox jumps over the lazy dog. A good answer is short and polite.",
    "Translate the sentence into French. Answer the question. Classify the review.",
    "question answer review positive negative neutral billing login crash export shipping cancel",
    "0 1 2 3 4 5 6 7 8 9 10 100 2024 yes no true false null [ ] { } : , . ! ? ' \" - _ / \\",
]


def make_tiny_model(directory: str | Path, *, seed: int = 0) -> Path:
    """Write (or reuse) the tiny model and tokenizer in `directory`; returns its path."""
    directory = Path(directory)
    marker = directory / _MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("seed") == seed:
        return directory

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.model_max_length = 512

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # With the default 0.02, the frozen random output head bounds every logit near zero
        # (hidden states are RMS-normalized), so LoRA could barely move the loss; a wider init
        # gives adapters something to steer, as a pretrained head would.
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    marker.write_text(json.dumps({"seed": seed, "vocab_size": len(tokenizer)}) + "\n")
    return directory


_TOPICS = ["login", "billing", "crash", "export", "shipping", "cancel"]
_WORDS = (
    "customer cannot log in after password reset invoice shows double charge monthly plan app "
    "crashes upload photo export data csv dashboard shipping late tracking number cancel "
    "subscription billing period refund help please again today"
).split()


def json_format_records(count: int, seed: int = 0) -> list[dict]:
    """Instruction records whose outputs are JSON objects with the keys summary and priority.

    A model that has learned them answers any ticket with that JSON shape: the toy "output
    format" a fine-tune must teach and an evaluation can check.
    """
    import random

    rng = random.Random(seed)
    records = []
    for index in range(count):
        topic = _TOPICS[index % len(_TOPICS)]
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 12)))
        priority = "high" if topic in ("crash", "billing") else "low"
        records.append(
            {
                "instruction": "Summarize the support ticket as JSON with the keys summary and priority.",
                "input": f"Ticket {index}: {topic} {words}",
                "output": json.dumps({"summary": topic, "priority": priority}),
                "category": topic,
            }
        )
    return records


def preference_records(count: int, seed: int = 0) -> list[dict]:
    """Preference records: a JSON answer is chosen over a vague prose one."""
    import random

    rng = random.Random(seed)
    records = []
    for index in range(count):
        topic = _TOPICS[index % len(_TOPICS)]
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 10)))
        records.append(
            {
                "prompt": f"Ticket {index}: {topic} {words}",
                "chosen": json.dumps({"summary": topic, "priority": "low"}),
                "rejected": "Please help the customer again today.",
            }
        )
    return records
