"""The config schema: defaults from the design, cross-field rules, URI mapping."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from finetune_trainer.config import ConfigFileError, TrainerConfig, load_config, parse_config

MINIMAL = {"model": {"uri": "/models/base"}, "dataset": {"source": "/data/x.jsonl"}, "output": {"dir": "/out"}}
TEACHER = {"endpoint": "http://127.0.0.1:8000/v1", "model": "teacher", "prompt": "Write support tickets."}
SEED = {"instruction": "Printer jams", "output": "hardware"}


def with_(**sections):
    out = {k: dict(v) for k, v in MINIMAL.items()}
    for key, value in sections.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def test_defaults_follow_the_design():
    config = parse_config(MINIMAL)
    assert config.method == "sft"
    assert (config.adaptation.type, config.adaptation.rank, config.adaptation.alpha) == ("lora", 16, 32)
    assert config.adaptation.dropout == 0.05 and config.adaptation.target_modules == ["all-linear"]
    assert (config.dataset.split.train, config.dataset.split.validation, config.dataset.split.test) == (0.7, 0.2, 0.1)
    assert config.dataset.pii_policy == "block"
    assert config.hyperparameters.learning_rate == 2e-5 and config.hyperparameters.epochs == 3
    assert config.hyperparameters.warmup_ratio == 0.1 and config.hyperparameters.bf16 == "auto"
    assert config.dpo.beta == 0.1 and config.dpo.loss_type == "sigmoid"
    assert config.termination_message_path == "/dev/termination-log"
    assert str(config.prepared_path) == "/out/data" and str(config.checkpoints_path) == "/out/checkpoints"


def test_every_field_has_help_text():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation)

    walk(TrainerConfig)


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"dataset": {"source": "/d", "split": {"train": 0.5, "validation": 0.2, "test": 0.1}}}, r"must sum to 1 \(got 0\.8\)"),
        ({"dataset": {"source": "/d", "split": {"train": 1.0, "validation": 0.0, "test": 0.0}}}, "needs a validation split"),
        ({"dataset": {"source": "/d", "min_tokens": 10, "max_tokens": 5}}, "below dataset.min_tokens"),
        ({"dataset": {"source": "/d", "balance_by": "c", "balance_mode": "cap"}}, "needs dataset.balance_cap"),
        ({"method": "dpo", "dataset": {"source": "/d", "format": "instruction"}}, "needs preference data"),
        ({"dataset": {"source": "/d", "format": "preference"}}, "use method: dpo"),
        ({"method": "dpo", "hyperparameters": {"packing": True}}, "packing is for method sft"),
        ({"model": {"uri": "gguf:///models/dir"}}, "which GGUF file"),
        ({"model": {"uri": "ftp://host/model"}}, "scheme ftp:// is not supported"),
        ({"dataset": {"source": "pvc:///no-claim"}}, "name the claim"),
        ({"output": {"dir": "s3://bucket/out"}}, "scheme s3:// is not supported"),
        ({"checkpointing": {"every_n_steps": 10}, "hyperparameters": {"eval_steps": 4}}, "multiple of"),
        ({"adaptation": {"type": "lora-ish"}}, "adaptation.type"),
        ({"hyperparameters": {"learning_rate": 0}}, "learning_rate"),
        ({"output": {"dir": "/out", "colour": "red"}}, "colour"),
        ({"dataset": {"source": "/d", "synthetic": TEACHER}}, "exactly one of dataset.source, dataset.synthetic and dataset.sources"),
        ({"dataset": {"source": None}}, "exactly one of dataset.source, dataset.synthetic and dataset.sources"),
        ({"dataset": {"source": None, "synthetic": {**TEACHER, "endpoint": "teacher:8000"}}}, "synthetic.endpoint"),
        ({"dataset": {"source": None, "synthetic": {**TEACHER, "seed_examples": [SEED, {"q": "a"}]}}},
         r"dataset.synthetic.seed_examples\[1\]: has q but the dataset format is instruction"),
        ({"dataset": {"source": None, "synthetic": {**TEACHER, "seed_examples": [{"q": "a"}]}}}, "cannot tell the record format"),
        ({"method": "dpo", "dataset": {"source": None, "synthetic": {**TEACHER, "seed_examples": [SEED]}}},
         "method dpo needs preference records"),
    ],
)
def test_invalid_configs_name_the_problem(sections, message):
    with pytest.raises(ConfigFileError, match=message):
        parse_config(with_(**sections))


@pytest.mark.parametrize(
    "method, dataset, expected",
    [
        ("sft", {}, "instruction"),
        ("dpo", {}, "preference"),
        ("sft", {"format": "chat"}, "chat"),
        ("sft", {"synthetic": {**TEACHER, "seed_examples": [{"messages": [{"role": "user", "content": "hi"}]}]}}, "chat"),
    ],
    ids=["sft-default", "dpo-default", "explicit-format", "from-the-first-seed-example"],
)
def test_synthetic_record_format(method, dataset, expected):
    config = parse_config(with_(method=method, dataset={"source": None, "synthetic": TEACHER, **dataset}))
    assert config.synthetic_format == expected
    assert config.dataset.synthetic.api_key_env is None, "no key unless the config names its variable"
    assert config.dataset.synthetic.request_budget == 15  # 100 records, 20 per request, 3x


def test_uri_mapping(tmp_path):
    config = parse_config(
        with_(
            model={"uri": "gguf://pvc-models/smol?file=model.gguf"},
            dataset={"source": "pvc://datasets/tickets/train.jsonl"},
            output={"dir": "pvc://runs/job-1"},
            pvc_mount_root=str(tmp_path),
        )
    )
    assert config.path(config.dataset.source) == tmp_path / "datasets" / "tickets" / "train.jsonl"
    assert config.output_path == tmp_path / "runs" / "job-1"
    assert config.model.gguf_file_name() == "model.gguf"


def test_load_config_reports_yaml_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  uri: /m\ndataset: [unclosed\n")
    with pytest.raises(ConfigFileError, match=r"line \d+ is not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigFileError, match="cannot be read"):
        load_config(tmp_path / "missing.yaml")


def test_config_module_is_cheap_to_import():
    # The operator imports the schema; it must not drag in torch, transformers or numpy.
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, finetune_trainer.config, finetune_trainer.exitcodes;"
        "heavy = {'torch', 'transformers', 'numpy', 'datasets', 'yaml'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": str(root / "trainer-image")})


def test_package_entry_point_dispatches(capsys):
    from finetune_trainer.__main__ import main

    assert main([]) == 2
    assert "prepare|train|models" in capsys.readouterr().err
    assert main(["prepare", "--config", "/no/such/config.yaml"]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_fp16_is_one_half_precision_and_trains_on_gpus_only():
    from finetune_trainer import train
    from finetune_trainer.exitcodes import ConfigError

    assert parse_config(MINIMAL).hyperparameters.fp16 is False
    with pytest.raises(Exception, match="set bf16 or fp16, not both"):
        parse_config(with_(hyperparameters={"bf16": True, "fp16": True}))
    config = parse_config(with_(hyperparameters={"fp16": True}))
    # bf16 "auto" stands down for fp16; the CPU refuses it with what to set instead.
    assert train._use_bf16(config, cuda=False) is False
    with pytest.raises(ConfigError, match="fp16 is true but no CUDA GPU is visible.*precision auto or fp32"):
        train._use_fp16(config, cuda=False)
    assert train._use_fp16(config, cuda=True) is True
    arguments = train._training_arguments(config, cuda=True, bf16=False, has_validation=False)
    assert (arguments["fp16"], arguments["bf16"]) == (True, False)
