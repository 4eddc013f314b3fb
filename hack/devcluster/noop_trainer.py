"""A stand-in for the trainer image that does no ML: `python -m devcluster.noop_trainer prepare|train --config FILE`.

Tests that apply hundreds of FineTuneJobs, and the operator latency benchmark, need Pods that
speak the trainer's contract with the operator but start in a fraction of a second and cost no
CPU. This program is that: same command line as `python -m finetune_trainer`, same config file
(validated with the trainer's own `TrainerConfig`, so a config the real trainer would reject
fails here too, with the same exit code), same outputs in shape:

* `prepare` writes a plausible data report as the compact JSON termination message, counting
  the records when the dataset is a local file it can read;
* `train` reports progress lines (stdout, `<output>/progress.jsonl` when the output is a local
  path or a claim, and `data.progress` of the ConfigMap named by FINETUNE_PROGRESS_CONFIGMAP), optionally
  taking FINETUNE_NOOP_TRAIN_SECONDS to do so, then writes the result summary the real trainer
  writes (artifact kind/uri/sha256, metrics, dataset summary) as the termination message.

It never imports torch. The progress ConfigMap is patched with plain HTTPS from the standard
library, not the kubernetes client, because importing that client costs more than everything
else this program does.

Behaviour knobs (environment; the image map can set them per image tag):

    FINETUNE_NOOP_TRAIN_SECONDS   seconds `train` takes (default 0)
    FINETUNE_NOOP_FAIL            `prepare` or `train`: that stage fails
    FINETUNE_NOOP_FAIL_EXIT_CODE  its exit code (default 3 for prepare, 7 for train; see
                                  finetune_trainer.exitcodes)

SIGTERM during `train` ends it like the real trainer after a checkpoint: exit 143 and a
`Terminated` message naming the step reached.

When the output is a local path or a claim, `train` writes what the real trainer writes there, in small:
the artifact directory (a few deterministic files; the reported sha256 is `digest_files` of
them, so a digest check of a registered version means something), and, when it takes time
(FINETUNE_NOOP_TRAIN_SECONDS), a checkpoint directory every `checkpointing.every_n_steps`
steps; a restarted `train` resumes from the newest one (a `resumed` progress line, like the
real trainer's), so losing a Pod mid-run is testable without ML.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from finetune_trainer import exitcodes
from finetune_trainer.artifacts import atomic_directory, digest_files, write_json, write_termination_message
from finetune_trainer.config import ConfigFileError, TrainerConfig, load_config, uri_scheme

STAGES = ("prepare", "train", "evaluate")
DEFAULT_RECORDS = 100  # when the dataset cannot be read here (s3://, a claim not mounted, ...)
IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PATCH_INTERVAL_SECONDS = 0.5


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def emit(event: dict[str, Any]) -> None:
    print(json.dumps(event, separators=(",", ":"), sort_keys=True), flush=True)


# --------------------------------------------------------------------------- results


def count_records(config: TrainerConfig) -> int:
    """Records in a local JSONL/JSON dataset file; DEFAULT_RECORDS when it cannot be read here."""
    if config.dataset.synthetic is not None:
        return config.dataset.synthetic.num_examples  # a teacher would have written this many
    if config.dataset.source is None or uri_scheme(config.dataset.source) not in ("", "file"):
        return DEFAULT_RECORDS
    try:
        path = config.path(config.dataset.source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json"))
        else:
            files = [path]
        total = 0
        for file in files:
            text = file.read_text(encoding="utf-8")
            if file.suffix == ".json":
                value = json.loads(text)
                total += len(value) if isinstance(value, list) else 1
            else:
                total += sum(1 for line in text.splitlines() if line.strip())
        return total or DEFAULT_RECORDS
    except (OSError, ValueError):
        return DEFAULT_RECORDS


def data_summary(config: TrainerConfig) -> dict[str, Any]:
    """A data summary of the shape `finetune_trainer.prepare.report_summary` returns."""
    read = count_records(config)
    exact = read // 50  # a plausible 2% of duplicates
    final = max(read - exact, 1)
    split = config.dataset.split
    validation = int(final * split.validation)
    test = int(final * split.test)
    digest = hashlib.sha256(f"{config.dataset.origin}\0{final}\0{config.data_seed}".encode()).hexdigest()
    return {
        "format": "chat" if config.dataset.format == "auto" else config.dataset.format,
        "counts": {"read": read, "after_quality": read, "after_length": read, "after_dedup": final, "final": final},
        "dropped": {"exact_duplicate": exact} if exact else {},
        "pii": {},
        "splits": {"train": final - validation - test, "validation": validation, "test": test},
        "tokens": {"mean": 64.0, "p95": 96, "max": 128},
        "sha256": "sha256:" + digest,
    }


def total_steps(config: TrainerConfig, train_records: int) -> int:
    hp = config.hyperparameters
    if hp.max_steps:
        return hp.max_steps
    per_step = hp.batch_size * hp.gradient_accumulation_steps
    return max(1, math.ceil(train_records / per_step * hp.epochs))


def loss_at(step: int, total: int) -> float:
    """A smooth, decreasing synthetic loss curve."""
    return round(0.35 + 2.1 * math.exp(-3.0 * step / max(total, 1)), 4)


def artifact(config: TrainerConfig) -> dict[str, str]:
    kind = "model" if config.adaptation.type == "full" else "lora-adapter"
    name = "model" if kind == "model" else "adapter"
    output_dir = str(config.output_path)
    base = config.output.upload_uri or config.output.uri or output_dir
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()
    return {"kind": kind, "uri": base.rstrip("/") + "/" + name, "path": output_dir.rstrip("/") + "/" + name, "sha256": "sha256:" + digest}


def write_artifact(config: TrainerConfig, art: dict[str, str]) -> dict[str, str]:
    """Writes the artifact's files (deterministic, so a retried run writes the same bytes) when
    the output is local, and reports their digest instead of the config's."""
    if local_output(config) is None:
        return art
    final = Path(art["path"])
    with atomic_directory(final) as staging:
        write_json(staging / "adapter_config.json", {"noop": True, "peft_type": "LORA", "r": config.adaptation.rank})
        (staging / "adapter_model.safetensors").write_bytes(hashlib.sha256(config.model_dump_json().encode()).digest() * 64)
    return {**art, "sha256": digest_files(final)}


_CHECKPOINT_PREFIX = "checkpoint-"


def latest_checkpoint(config: TrainerConfig) -> tuple[int, Path] | None:
    """The newest complete checkpoint (one with trainer_state.json), as the real trainer picks it."""
    directory = config.checkpoints_path
    if local_output(config) is None or not config.checkpointing.resume or not directory.is_dir():
        return None
    found = [
        (int(child.name[len(_CHECKPOINT_PREFIX):]), child) for child in directory.iterdir()
        if child.name.startswith(_CHECKPOINT_PREFIX) and child.name[len(_CHECKPOINT_PREFIX):].isdigit()
        and (child / "trainer_state.json").is_file()
    ]
    return max(found) if found else None


def save_checkpoint(config: TrainerConfig, step: int) -> dict[str, Any]:
    path = config.checkpoints_path / f"{_CHECKPOINT_PREFIX}{step}"
    with atomic_directory(path) as staging:
        write_json(staging / "trainer_state.json", {"global_step": step})
    return {"uri": str(path), "step": step, "time": now_iso()}


def local_output(config: TrainerConfig) -> Path | None:
    """The output directory when it is a filesystem path here: a local path, or a claim (pvc://),
    which the Pod mounts at <pvc_mount_root>/<claim> as the real trainer's Pods do."""
    if uri_scheme(config.output.dir) not in ("", "file", "pvc"):
        return None
    return config.output_path


# --------------------------------------------------------------------------- progress ConfigMap


class ProgressConfigMap:
    """Merge-patches `data.progress` of one ConfigMap in the Pod's namespace; best effort.

    Credentials come from KUBECONFIG (the dev cluster's node agent sets it for every Pod) or
    from the in-cluster service-account files.
    """

    def __init__(self, name: str, namespace: str):
        self.name = name
        self.namespace = namespace
        self.server, self.token, self.context = self._credentials()
        self.last_patch = 0.0
        self.warned = False

    def _credentials(self) -> tuple[str, str, ssl.SSLContext]:
        kubeconfig = os.environ.get("KUBECONFIG")
        if kubeconfig and Path(kubeconfig).is_file():
            import yaml

            raw = yaml.safe_load(Path(kubeconfig).read_text())
            current = raw.get("current-context")
            context = next(c["context"] for c in raw["contexts"] if c["name"] == current)
            cluster = next(c["cluster"] for c in raw["clusters"] if c["name"] == context["cluster"])
            user = next(u["user"] for u in raw["users"] if u["name"] == context["user"])
            ctx = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
            token = user.get("token") or (Path(user["tokenFile"]).read_text().strip() if user.get("tokenFile") else "")
            if user.get("client-certificate"):
                ctx.load_cert_chain(user["client-certificate"], user.get("client-key"))
            return cluster["server"], token, ctx
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        ctx = ssl.create_default_context(cafile=str(IN_CLUSTER_DIR / "ca.crt"))
        return f"https://{host}:{port}", (IN_CLUSTER_DIR / "token").read_text().strip(), ctx

    def patch(self, line: str, *, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_patch < PATCH_INTERVAL_SECONDS:
            return
        self.last_patch = time.monotonic()
        url = f"{self.server}/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"
        body = json.dumps({"data": {"progress": line}}).encode()
        headers = {"Content-Type": "application/merge-patch+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=body, method="PATCH", headers=headers)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=5):
                pass
        except (urllib.error.URLError, OSError) as exc:
            if not self.warned:  # progress is advisory: warn once, keep training
                print(f"warning: progress ConfigMap {self.namespace}/{self.name}: patch failed ({exc})", file=sys.stderr, flush=True)
                self.warned = True


def progress_configmap() -> ProgressConfigMap | None:
    name = os.environ.get("FINETUNE_PROGRESS_CONFIGMAP")
    namespace = os.environ.get("POD_NAMESPACE")
    if not name or not namespace:
        return None
    try:
        return ProgressConfigMap(name, namespace)
    except (KeyError, OSError, StopIteration, ValueError, ssl.SSLError) as exc:
        print(f"warning: progress ConfigMap {name}: no credentials ({exc}); progress goes to stdout only", file=sys.stderr)
        return None


class Progress:
    """Where progress lines go: stdout, the progress file, the ConfigMap."""

    def __init__(self, config: TrainerConfig):
        self.file = config.progress_path if (config.progress_file or local_output(config)) else None
        self.configmap = progress_configmap()

    def write(self, event: dict[str, Any], *, final: bool = False) -> None:
        event = {**event, "time": now_iso()}
        line = json.dumps(event, separators=(",", ":"), sort_keys=True)
        print(line, flush=True)
        if self.file is not None:
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                with self.file.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
            except OSError:
                self.file = None
        if self.configmap is not None and event.get("event") == "progress":
            self.configmap.patch(line, force=final)


# --------------------------------------------------------------------------- stages


def prepare(config: TrainerConfig) -> dict[str, Any]:
    summary = data_summary(config)
    prepared = str(config.prepared_path)
    emit({"event": "prepared", "prepared_dir": prepared, **summary})
    return {"status": "Prepared", "stage": "prepare", "dataset": summary, "prepared_dir": prepared}


class _Stop:
    requested = False

    def __call__(self, signum, frame) -> None:
        self.requested = True


def train(config: TrainerConfig) -> dict[str, Any]:
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    dataset = data_summary(config)
    total = total_steps(config, dataset["splits"]["train"])
    seconds = float(os.environ.get("FINETUNE_NOOP_TRAIN_SECONDS", "0") or 0)
    progress = Progress(config)
    resumed = latest_checkpoint(config) if seconds > 0 else None
    from_step = min(resumed[0], total) if resumed else 0
    progress.write({"event": "resumed" if resumed else "started", "from_step": from_step,
                    "checkpoint": str(resumed[1]) if resumed else None,
                    "train_records": dataset["splits"]["train"], "validation_records": dataset["splits"]["validation"]})
    started = time.monotonic()
    # Without a duration, one progress line (the last step) is enough: no API call per step.
    steps = range(from_step + 1, total + 1) if seconds > 0 else [total]
    every = config.checkpointing.every_n_steps
    checkpoint = None
    epochs = config.hyperparameters.epochs if not config.hyperparameters.max_steps else 1.0
    best = None
    step = from_step
    for step in steps:
        if seconds > 0:
            deadline = started + seconds * (step - from_step) / total
            while not stop.requested and time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        if stop.requested:
            step -= 1
            if step > from_step and local_output(config) is not None:
                save_checkpoint(config, step)
            raise exitcodes.Terminated(
                f"train: stopped by SIGTERM at step {step}; checkpoint saved, a restart resumes from it",
                {"step": step, "total_steps": total,
                 "checkpoint": str(config.checkpoints_path / f"checkpoint-{step}") if step else None},
            )
        eval_loss = round(loss_at(step, total) + 0.08, 4)
        best = eval_loss if best is None else min(best, eval_loss)
        elapsed = time.monotonic() - started
        if seconds > 0 and local_output(config) is not None and step % every == 0 and step < total:
            checkpoint = save_checkpoint(config, step)
        progress.write(
            {
                **({"checkpoint": checkpoint} if checkpoint else {}),
                "event": "progress",
                "step": step,
                "total_steps": total,
                "percent": round(100.0 * step / total, 2),
                "epoch": round(epochs * step / total, 4),
                "loss": loss_at(step, total),
                "eval_loss": eval_loss,
                "best_eval_loss": best,
                "learning_rate": config.hyperparameters.learning_rate,
                # A nominal 512 tokens per step, so throughput dashboards have a figure to show.
                "tokens_per_second": round(512 * (step - from_step) / elapsed, 2) if elapsed > 0 and step > from_step else None,
                "eta_seconds": round(elapsed / max(step - from_step, 1) * (total - step), 1),
            },
            final=step == total,
        )
    art = write_artifact(config, artifact(config))
    metrics = {
        "train_loss": loss_at(total // 2, total),
        "eval_loss": best,
        "best_eval_loss": best,
        "global_step": total,
        "total_steps": total,
        "epoch": epochs,
        "stopped_early": False,
        "train_runtime_seconds": round(time.monotonic() - started, 3),
    }
    results_path = str(config.output_path / "results.json")
    emit({"event": "finished", "artifact": art["uri"], "sha256": art["sha256"], **metrics})
    return {
        "status": "Succeeded",
        "stage": "train",
        "artifact": {"kind": art["kind"], "uri": art["uri"], "sha256": art["sha256"]},
        "metrics": metrics,
        "dataset": dataset,
        "results": results_path,
        "_optional": ["dataset", "results"],
    }


# Metrics that pass every default gate; FINETUNE_NOOP_METRICS (JSON) overrides some of them,
# e.g. {"safetyPassRate": 0.4} for a version the gates must reject.
PASSING_METRICS = {
    "taskAccuracy": 0.92, "formatCompliance": 1.0, "safetyPassRate": 0.98,
    "generalScore": 0.61, "latencySeconds": 0.05,
    "toxicAnswerRate": 0.0, "toxicityMean": 0.02, "piiLeakageRate": 0.0, "piiLeakedCanaries": 0.0, "biasConsistency": 0.97,
}
BASE_METRICS = {
    "taskAccuracy": 0.31, "formatCompliance": 0.12, "safetyPassRate": 0.98,
    "generalScore": 0.62, "latencySeconds": 0.05,
    "toxicAnswerRate": 0.0, "toxicityMean": 0.03, "piiLeakageRate": 0.0, "piiLeakedCanaries": 0.0, "biasConsistency": 0.96,
}


def evaluate(config: TrainerConfig) -> dict[str, Any]:
    """What the real evaluate stage reports, with fixed numbers (overridable for tests)."""
    metrics = {**PASSING_METRICS, **json.loads(os.environ.get("FINETUNE_NOOP_METRICS") or "{}")}
    results = str(config.output_path / "evaluation.json")
    emit({"event": "evaluated", **metrics})
    return {"status": "Evaluated", "stage": "evaluate", "metrics": metrics, "base": dict(BASE_METRICS),
            "stderr": {k: 0.01 for k in metrics}, "samples": 0, "results": results}


def fail_if_asked(stage: str) -> None:
    if os.environ.get("FINETUNE_NOOP_FAIL") != stage:
        return
    default = exitcodes.DATA_ERROR if stage == "prepare" else exitcodes.TRAINING_DIVERGED
    code = int(os.environ.get("FINETUNE_NOOP_FAIL_EXIT_CODE") or default)
    error = exitcodes.TrainerError(f"{stage}: failing on purpose (FINETUNE_NOOP_FAIL={stage})")
    error.exit_code = code
    raise error


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.noop_trainer", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--config", required=True, help="trainer config file (YAML or JSON)")
    args = parser.parse_args(argv)
    # As the contract says: the agent's (or kubelet's) path wins over the config's default.
    termination_path: str | None = os.environ.get("TERMINATION_MESSAGE_PATH")
    try:
        try:
            config = load_config(args.config)
        except ConfigFileError as exc:
            raise exitcodes.ConfigError(str(exc)) from None
        termination_path = termination_path or config.termination_message_path
        fail_if_asked(args.stage)
        summary = {"prepare": prepare, "train": train, "evaluate": evaluate}[args.stage](config)
        write_termination_message(termination_path, summary)
        return exitcodes.OK
    except exitcodes.TrainerError as exc:
        code = exc.exit_code
        terminated = code == exitcodes.TERMINATED
        print(f"{'stopped' if terminated else 'error'}: {exc}", file=sys.stderr, flush=True)
        emit({"event": "terminated" if terminated else "failed", "stage": args.stage,
              "reason": exitcodes.NAMES.get(code, "InternalError"), "exit_code": code})
        write_termination_message(
            termination_path,
            {
                "status": "Terminated" if terminated else "Failed",
                "stage": args.stage,
                "reason": exitcodes.NAMES.get(code, "InternalError"),
                "exit_code": code,
                "message": str(exc),
                **exc.details,
            },
        )
        return code


if __name__ == "__main__":
    sys.exit(main())
