"""Training the tiny model for real on the CPU, and checking what it learned and wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune_trainer import exitcodes
from finetune_trainer.config import parse_config
from finetune_trainer.testing import json_format_records, preference_records
from finetune_trainer.train import main as train_main
from finetune_trainer.train import train_model

from .conftest import make_config, save_config, write_jsonl

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
FORMAT_KEYS = {"summary", "priority"}


def progress_events(config) -> list[dict]:
    path = config.progress_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model):
    """One LoRA SFT run on JSON-format tickets, shared by the tests that inspect its output."""
    tmp_path = tmp_path_factory.mktemp("lora")
    source = write_jsonl(tmp_path / "data" / "tickets.jsonl", json_format_records(96))
    raw = make_config(
        tmp_path,
        tiny_model,
        source,
        adaptation={"type": "lora", "rank": 16, "alpha": 32, "dropout": 0.0},
        hyperparameters={"learning_rate": 1e-2, "epochs": 6, "batch_size": 8, "warmup_ratio": 0.05},
        checkpointing={"every_n_steps": 20},
        early_stopping={"patience": 3},
    )
    config = parse_config(raw)
    assert train_main(["--config", str(save_config(tmp_path, raw))]) == 0
    summary = json.loads(Path(config.termination_message_path).read_text())
    return config, summary


def generate(model_dir: Path, adapter_dir: Path | None, prompts: list[list[dict]]) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir or model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    outputs = []
    for messages in prompts:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            generated = model.generate(**ids, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outputs.append(tokenizer.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return outputs


def follows_format(text: str) -> bool:
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and set(value) == FORMAT_KEYS


def test_lora_sft_learns_the_output_format(lora_run, tiny_model):
    config, summary = lora_run
    history = [e for e in progress_events(config) if e["event"] == "progress" and e["loss"] is not None]
    assert history[-1]["loss"] < history[0]["loss"] / 2, "training loss should fall"
    test_records = [json.loads(line) for line in (config.prepared_path / "test.jsonl").read_text().splitlines()]
    prompts = [
        [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"}] for r in test_records
    ]
    adapter = Path(summary["artifact"]["uri"])
    tuned = generate(tiny_model, adapter, prompts)
    assert sum(map(follows_format, tuned)) >= 0.8 * len(prompts), tuned
    base = generate(tiny_model, None, prompts[:3])
    assert not any(map(follows_format, base)), "the untrained model should not already know the format"


def test_lora_run_writes_artifact_results_and_progress(lora_run):
    config, summary = lora_run
    from finetune_trainer.artifacts import digest_files

    adapter = config.output_path / "adapter"
    assert summary["artifact"] == {"kind": "lora-adapter", "uri": str(adapter), "sha256": digest_files(adapter)}
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    message = (Path(config.termination_message_path)).read_bytes()
    assert len(message) < 4096
    compact = json.loads(message)
    assert compact["status"] == "Succeeded" and compact["artifact"]["sha256"].startswith("sha256:")
    assert compact["metrics"]["global_step"] == compact["metrics"]["total_steps"] == 54  # ceil(67 / 8) x 6 epochs
    results = json.loads((config.output_path / "results.json").read_text())
    assert results["metrics"]["best_eval_loss"] == pytest.approx(min(e["eval_loss"] for e in results["log_history"] if "eval_loss" in e))
    assert results["dataset"]["splits"] == {"train": 67, "validation": 19, "test": 10}
    assert results["best_checkpoint"] and Path(results["best_checkpoint"]).is_dir()
    progress = [e for e in progress_events(config) if e["event"] == "progress"]
    assert {"step", "total_steps", "epoch", "loss", "eval_loss", "tokens_per_second", "eta_seconds", "percent"} <= set(progress[-1])
    assert progress[-1]["percent"] == 100.0 and progress[-1]["tokens_per_second"] > 0
    checkpoints = sorted(p.name for p in config.checkpoints_path.iterdir())
    assert len(checkpoints) <= 3, checkpoints  # keep_last 2, plus the best one


def test_full_fine_tuning_runs(config_factory, tmp_path):
    raw = config_factory(
        json_format_records(40),
        adaptation={"type": "full"},
        hyperparameters={"learning_rate": 1e-3, "max_steps": 12, "batch_size": 4},
        checkpointing={"every_n_steps": 6},
    )
    config = parse_config(raw)
    summary = train_model(config)
    assert summary["artifact"]["kind"] == "model"
    model_dir = config.output_path / "model"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    losses = [e["loss"] for e in progress_events(config) if e["event"] == "progress" and e["loss"] is not None]
    assert losses[-1] < losses[0]
    assert summary["metrics"]["global_step"] == 12


def test_dpo_raises_the_chosen_over_rejected_margin(config_factory):
    raw = config_factory(
        preference_records(48),
        method="dpo",
        adaptation={"type": "lora", "dropout": 0.0},
        dpo={"beta": 0.1, "loss_type": "sigmoid"},
        hyperparameters={"learning_rate": 5e-3, "max_steps": 24, "batch_size": 8},
        checkpointing={"every_n_steps": 8},
        early_stopping={"enabled": False},
    )
    config = parse_config(raw)
    summary = train_model(config)
    # Before training the policy equals the reference, so every margin is exactly 0.
    assert summary["metrics"]["rewards/margins"] > 0.5
    assert summary["metrics"]["rewards/accuracies"] >= 0.9


def test_early_stopping_stops_before_max_epochs(config_factory):
    raw = config_factory(
        json_format_records(60),
        hyperparameters={"learning_rate": 1e-3, "epochs": 3, "batch_size": 4, "eval_steps": 2},
        checkpointing={"every_n_steps": 2},
        # A threshold no decrease can beat: each evaluation after the first counts as "no
        # improvement", so patience 1 must stop at the second evaluation (step 4).
        early_stopping={"enabled": True, "patience": 1, "min_delta": 100.0},
    )
    config = parse_config(raw)
    summary = train_model(config)
    assert summary["metrics"]["stopped_early"] is True
    assert summary["metrics"]["global_step"] == 4 < summary["metrics"]["total_steps"] == 33


def test_qlora_on_cpu_is_a_config_error(config_factory, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible; QLoRA is allowed here")
    raw = config_factory(json_format_records(10), adaptation={"type": "qlora"})
    code = train_main(["--config", str(save_config(tmp_path, raw))])
    assert code == exitcodes.CONFIG_ERROR
    assert "QLoRA needs a CUDA GPU" in capsys.readouterr().err


def test_target_modules_the_model_lacks_are_a_config_error_naming_the_spec_field(config_factory, tmp_path, capsys):
    raw = config_factory(json_format_records(10), adaptation={"target_modules": ["q_proj", "does_not_exist_proj"]})
    code = train_main(["--config", str(save_config(tmp_path, raw))])
    assert code == exitcodes.CONFIG_ERROR  # no retry: the operator fails the job at once
    err = capsys.readouterr().err
    assert "spec.adaptation.targetModules names does_not_exist_proj" in err
    assert "q_proj" in err.split("its linear modules are", 1)[1], err  # what the user can pick from


@pytest.fixture
def model_without_chat_template(tmp_path, tiny_model) -> Path:
    """The tiny model with its tokenizer's chat template removed, as many base checkpoints ship."""
    import shutil

    bare = tmp_path / "bare-model"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((bare / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return bare


def chat_records(count: int) -> list[dict]:
    return [
        {"messages": [{"role": "system", "content": "Answer as JSON."},
                      {"role": "user", "content": r["instruction"]},
                      {"role": "assistant", "content": r["output"]}]}
        for r in json_format_records(count)
    ]


def test_chat_data_on_a_tokenizer_without_chat_template_is_a_config_error_naming_the_spec_field(
    config_factory, tmp_path, capsys, model_without_chat_template
):
    raw = config_factory(chat_records(10), model={"uri": str(model_without_chat_template)}, dataset={"format": "chat"})
    code = train_main(["--config", str(save_config(tmp_path, raw))])
    assert code == exitcodes.CONFIG_ERROR  # no retry: the operator fails the job at once
    err = capsys.readouterr().err
    assert "has no chat template" in err and "set spec.dataset.chatTemplate" in err, err
    assert not (Path(raw["output"]["dir"]) / "adapter").exists()


def test_chat_template_from_the_spec_trains_chat_data_and_goes_with_the_artifact(
    config_factory, tmp_path, model_without_chat_template
):
    template = (
        "{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    raw = config_factory(
        chat_records(12),
        model={"uri": str(model_without_chat_template)},
        dataset={"format": "chat", "chat_template": template},
        hyperparameters={"max_steps": 2},
    )
    assert train_main(["--config", str(save_config(tmp_path, raw))]) == 0
    summary = json.loads(Path(raw["termination_message_path"]).read_text())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(summary["artifact"]["uri"])
    assert tokenizer.chat_template == template  # serving and evaluation render turns as training did


def test_instruction_data_on_a_tokenizer_without_chat_template_uses_the_built_in_one(
    config_factory, tmp_path, model_without_chat_template
):
    from finetune_trainer.models import FALLBACK_CHAT_TEMPLATE

    raw = config_factory(json_format_records(12), model={"uri": str(model_without_chat_template)},
                         hyperparameters={"max_steps": 2})
    assert train_main(["--config", str(save_config(tmp_path, raw))]) == 0
    summary = json.loads(Path(raw["termination_message_path"]).read_text())
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(summary["artifact"]["uri"]).chat_template == FALLBACK_CHAT_TEMPLATE


def _run_train(config_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("trainer-image", "operator", ".")),
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "finetune_trainer.train", "--config", str(config_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, deadline_seconds: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"trainer exited with {process.returncode} while waiting for {what}: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)  # polling interval, not synchronisation: the deadline bounds the wait
    pytest.fail(f"timed out waiting for {what}")


def test_sigterm_saves_a_checkpoint_and_a_restart_resumes(config_factory, tmp_path):
    total = 400
    raw = config_factory(
        json_format_records(40),
        hyperparameters={"learning_rate": 1e-3, "max_steps": total, "batch_size": 2, "eval_steps": 100},
        checkpointing={"every_n_steps": 100, "keep_last": 2},
        early_stopping={"enabled": False},
    )
    config = parse_config(raw)
    config_path = save_config(tmp_path, raw)

    first = _run_train(config_path)

    def reached_step():
        steps = [e["step"] for e in progress_events(config) if e["event"] == "progress"]
        return steps and steps[-1] >= 5

    _wait_for(reached_step, 240, "step 5 in the progress file", first)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == exitcodes.TERMINATED, stderr[-2000:]

    message = json.loads(Path(config.termination_message_path).read_text())
    assert message["status"] == "Terminated" and message["reason"] == "Terminated"
    stopped_at = message["step"]
    assert 5 <= stopped_at < total
    assert message["checkpoint"].endswith(f"checkpoint-{stopped_at}")
    assert (config.checkpoints_path / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()

    second = _run_train(config_path)
    _, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr[-2000:]
    events = progress_events(config)
    resumed = [e for e in events if e["event"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["from_step"] == stopped_at
    after = [e["step"] for e in events[events.index(resumed[0]) :] if e["event"] == "progress"]
    assert after[0] == stopped_at + 1 and after[-1] == total
    results = json.loads((config.output_path / "results.json").read_text())
    assert results["metrics"]["global_step"] == total and results["resumed_from"].endswith(f"checkpoint-{stopped_at}")


@pytest.mark.parametrize(
    "records, sections",
    [
        (json_format_records(24), {"hyperparameters": {"packing": True}}),
        (json_format_records(24), {"hyperparameters": {"gradient_checkpointing": True, "completion_only_loss": False}}),
        (json_format_records(24), {"adaptation": {"target_modules": ["q_proj", "v_proj"], "rank": 4, "alpha": 8}}),
        (
            [{"messages": [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": r["input"]}, {"role": "assistant", "content": r["output"]}]} for r in json_format_records(24)],
            {"dataset": {"format": "chat"}},
        ),
        (preference_records(24), {"method": "dpo", "dpo": {"loss_type": "ipo"}}),
        (preference_records(24), {"method": "dpo", "dpo": {"loss_type": "hinge"}, "adaptation": {"type": "full"}}),
    ],
    ids=["packing", "gradient-checkpointing", "explicit-target-modules", "chat", "dpo-ipo", "dpo-hinge-full"],
)
def test_training_options_run(config_factory, records, sections):
    raw = config_factory(records, **sections)
    raw["hyperparameters"] = {**raw["hyperparameters"], "max_steps": 3}
    config = parse_config(raw)
    summary = train_model(config)
    assert summary["metrics"]["global_step"] == 3
    assert summary["artifact"]["sha256"].startswith("sha256:")


def test_artifact_is_uploaded_to_upload_uri(config_factory, tmp_path):
    bucket = tmp_path / "bucket"
    raw = config_factory(
        json_format_records(16),
        hyperparameters={"max_steps": 2},
        output={"upload_uri": f"file://{bucket}/runs/r1"},
    )
    summary = train_model(parse_config(raw))
    uploaded = bucket / "runs" / "r1"
    assert summary["artifact"]["uri"] == f"file://{bucket}/runs/r1/adapter"
    assert (uploaded / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((uploaded / "results.json").read_text())["artifact"]["sha256"] == summary["artifact"]["sha256"]


def test_a_finished_run_restarted_reports_its_result_instead_of_training_on(tmp_path, tiny_model):
    """A Pod deleted after training finished but before it exited: the next attempt must not
    train past max_steps from the last checkpoint; it reports the finished result."""
    import json as _json

    from finetune_trainer.config import parse_config
    from finetune_trainer.testing import json_format_records
    from finetune_trainer.train import train_model

    data = tmp_path / "data.jsonl"
    data.write_text("".join(_json.dumps(r) + "\n" for r in json_format_records(30)))
    config = parse_config({
        "model": {"uri": str(tiny_model)},
        "dataset": {"source": str(data)},
        "hyperparameters": {"max_steps": 4, "batch_size": 4, "max_seq_length": 64, "eval_steps": 2},
        "checkpointing": {"every_n_steps": 2},
        "output": {"dir": str(tmp_path / "out")},
        "termination_message_path": str(tmp_path / "termination"),
    })
    first = train_model(config)
    progress_lines = (tmp_path / "out" / "progress.jsonl").read_text().splitlines()
    again = train_model(config)
    assert again["artifact"] == first["artifact"]
    assert (tmp_path / "out" / "progress.jsonl").read_text().splitlines() == progress_lines  # no step ran


def test_packing_on_the_cpu_warns_that_it_is_slower_there(config_factory, capsys):
    from finetune_trainer.train import attention_implementation

    raw = config_factory(json_format_records(24), hyperparameters={"packing": True, "max_steps": 1})
    config = parse_config(raw)
    assert attention_implementation(config, cuda=False) is None
    train_model(config)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warnings = [e for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "hyperparameters.packing" in warnings[0]["message"]
