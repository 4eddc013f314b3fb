"""`python -m finetune_trainer serve`: a small OpenAI-compatible inference server.

The dev cluster's stand-in for vLLM: a Rollout with `serving.type: custom` and the
`ghcr.io/finetune-operator/server` image runs this in each serving Pod, so canary tests drive
real generation, real readiness and real Prometheus metrics without a GPU. It is deliberately
small (standard-library HTTP, one request generating at a time); real clusters use vLLM.

    python -m finetune_trainer serve --model /models/base \
        --adapter support-v2=/artifacts/support/v2/adapter --version v2

- `--model` is the base model: a local directory, or any URI the trainer accepts for a base
  model (pvc://, s3://, hf:// from the local cache, gguf://). `--served-model-name` names it in
  requests (default: the directory's name).
- `--adapter NAME=PATH` (repeatable; `--lora-modules` as vLLM spells it) loads a LoRA adapter
  on top of the base model; a request's `model` field picks the adapter or the base model, as
  vLLM's multi-LoRA serving does.
- Endpoints: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (through the
  tokenizer's chat template), `GET /health` (200 once the model is loaded: the readiness probe;
  503 before) and `GET /metrics` (Prometheus exposition, listed in `MetricSet`).
- Generation is greedy (temperature and top_p are accepted and ignored); `max_tokens` is
  honoured and capped by `--max-tokens-limit` and the model's context; `stop` strings cut the
  text; streaming is not supported.

Trust and shutdown:
- `--artifact-digest sha256:...` (env ARTIFACT_DIGEST, which a Rollout's Pods get from the
  ModelVersion) checks the adapter directory (or, without adapters, the model directory) against
  the registered digest before loading; a mismatch exits with an error and never serves.
- On SIGTERM the server drains: /health answers 503 at once (readiness goes away), requests keep
  being answered for `--drain-seconds` (env FINETUNE_SERVE_DRAIN_SECONDS, default 5) while
  routers and Services move traffic off the Pod, then it stops accepting and finishes the
  requests in flight before exiting. No request that reached the Pod is dropped.

Test-only fault injection, to make a deliberately bad candidate for rollback tests (never set
them in production): `--error-rate F` (env FINETUNE_SERVE_ERROR_RATE) answers that fraction of
inference requests with HTTP 500, and `--extra-latency-ms N` (env FINETUNE_SERVE_EXTRA_LATENCY_MS)
delays every inference request by N milliseconds. Both are counted in the metrics like real
errors and latency, which is the point. So that one version of a model can be the bad one while
the stable version, served from the same template, stays good, a test can also put a
`finetune-serve-faults.json` file (`{"errorRate": 1.0, "extraLatencyMs": 200}`) into a model or
adapter directory: its faults then apply to requests for that model only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("finetune_trainer.serve")

DEFAULT_PORT = 8000
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions when max_tokens is absent
DEFAULT_MAX_TOKENS_LIMIT = 512
MAX_BODY_BYTES = 4 * 1024 * 1024
# Latency buckets for LLM requests: tens of milliseconds (tiny models) to minutes (long outputs).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
UNKNOWN_MODEL_LABEL = "unknown"  # requests naming no served model: bounded label values
FAULTS_FILE = "finetune-serve-faults.json"  # test-only per-model fault injection (see above)
LENGTH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
SCORE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FEEDBACK_MEMORY = 100_000  # answer ids remembered for /feedback (oldest forgotten first)
# Phrases that mark a refusal at the start of an answer; deliberately conservative.
REFUSAL_PATTERN = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i am unable|i'?m unable|i won'?t|as an ai\b|"
    r"i (?:must|have to) (?:decline|refuse))",
    re.IGNORECASE,
)


class AnswerQuality:
    """Online answer quality of one server: format compliance, refusals, lengths and feedback.

    Every answer is checked (not a sample): the format against the JSON Schema (the answer
    must be JSON satisfying it) or the regex (a full match), and for a refusal. Each answer's id
    is remembered (bounded) with the model that gave it, so `POST /feedback {"id", "score"}`
    counts the score for that model — the version label comes from the Pod, as for every metric.
    """

    def __init__(self, metrics: MetricSet, format_schema: dict[str, Any] | None = None,
                 format_regex: str | None = None):
        self.metrics = metrics
        self._validator = None
        if format_schema is not None:
            import jsonschema

            jsonschema.Draft202012Validator.check_schema(format_schema)
            self._validator = jsonschema.Draft202012Validator(format_schema)
        self._regex = re.compile(format_regex) if format_regex else None
        self._answers: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def checks_format(self) -> bool:
        return self._validator is not None or self._regex is not None

    def format_ok(self, text: str) -> bool:
        if self._regex is not None and self._regex.fullmatch(text.strip()) is None:
            return False
        if self._validator is not None:
            try:
                document = json.loads(text)
            except ValueError:
                return False
            return self._validator.is_valid(document)
        return True

    def observe(self, answer_id: str, model: str, prompt_tokens: int, answer_tokens: int, text: str) -> None:
        m = self.metrics
        m.prompt_length.labels(model=model).observe(prompt_tokens)
        m.answer_length.labels(model=model).observe(answer_tokens)
        if self.checks_format:
            m.format_checks.labels(model=model, result="pass" if self.format_ok(text) else "fail").inc()
        if REFUSAL_PATTERN.match(text):
            m.refusals.labels(model=model).inc()
        with self._lock:
            self._answers[answer_id] = model
            while len(self._answers) > FEEDBACK_MEMORY:
                self._answers.popitem(last=False)

    def feedback(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise RequestError(400, 'feedback needs {"id": "<the answer\'s id>", "score": 0..1}')
        score = body.get("score")
        if isinstance(score, bool):
            score = 1.0 if score else 0.0
        if not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
            raise RequestError(400, f"feedback score must be a number in [0, 1] (thumbs down 0, up 1), got {score!r}")
        with self._lock:
            model = self._answers.get(body["id"])
        if model is None:
            raise RequestError(404, f"no answer with id {body['id']!r} (unknown, or too old to remember)", "NotFoundError")
        self.metrics.feedback.labels(model=model).observe(float(score))
        return {"id": body["id"], "model": model, "score": float(score)}


class RequestError(Exception):
    """A request that cannot be served, with its HTTP status and OpenAI-style error type."""

    def __init__(self, status: int, message: str, error_type: str = "BadRequestError"):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


@dataclass(frozen=True)
class ServeConfig:
    model: str
    served_model_name: str | None = None
    adapters: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    model_version: str = ""
    max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT
    error_rate: float = 0.0
    extra_latency_ms: float = 0.0
    seed: int = 0
    cache_dir: str = "/tmp/finetune-cache/models"
    pvc_mount_root: str = "/mnt/pvc"
    artifact_digest: str = ""
    drain_seconds: float = 5.0
    format_schema: dict[str, Any] | None = None  # JSON Schema every answer should satisfy
    format_regex: str | None = None  # or a regular expression it should match in full
    upstream: str | None = None  # proxy mode: forward to this OpenAI-compatible server (vLLM) and measure


class MetricSet:
    """The server's Prometheus metrics, in a registry of its own (several servers per process in tests).

    - finetune_serve_requests_total{model,status}: inference requests by HTTP status code
    - finetune_serve_request_errors_total{model}: requests answered with a 5xx (server-side failures,
      injected ones included; a client's bad request is not the model version's fault)
    - finetune_serve_request_duration_seconds{model}: request latency histogram
    - finetune_serve_prompt_tokens_total{model}, finetune_serve_generated_tokens_total{model}
    - finetune_serve_info{model_version,served_model}: constant 1, to join a version onto a target

    Answer quality (`AnswerQuality` feeds them):
    - finetune_serve_format_checks_total{model,result}: answers checked against the format schema
      or regex, result="pass"|"fail" (only when one is configured)
    - finetune_serve_refusals_total{model}: answers that refuse ("I can't help with that")
    - finetune_serve_prompt_length_tokens{model}, finetune_serve_answer_length_tokens{model}:
      histograms of input and answer lengths per request
    - finetune_serve_feedback_score{model}: histogram of `POST /feedback` scores in [0, 1]
      (_sum / _count is the mean score)
    """

    def __init__(self, model_version: str, served_model: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "finetune_serve_requests_total",
            "Inference requests by requested model and HTTP status code.",
            ["model", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "finetune_serve_request_errors_total",
            "Inference requests answered with a server error (5xx).",
            ["model"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "finetune_serve_request_duration_seconds",
            "Time from receiving an inference request to sending the response.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "finetune_serve_prompt_tokens_total", "Prompt tokens processed.", ["model"], registry=self.registry
        )
        self.generated_tokens = Counter(
            "finetune_serve_generated_tokens_total", "Tokens generated.", ["model"], registry=self.registry
        )
        self.format_checks = Counter(
            "finetune_serve_format_checks_total",
            "Answers checked against the configured format (JSON Schema or regex), by result pass|fail.",
            ["model", "result"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "finetune_serve_refusals_total", "Answers that refuse the request.", ["model"], registry=self.registry
        )
        self.prompt_length = Histogram(
            "finetune_serve_prompt_length_tokens",
            "Prompt length per request, in tokens.",
            ["model"],
            buckets=LENGTH_BUCKETS,
            registry=self.registry,
        )
        self.answer_length = Histogram(
            "finetune_serve_answer_length_tokens",
            "Answer length per request, in tokens.",
            ["model"],
            buckets=LENGTH_BUCKETS,
            registry=self.registry,
        )
        self.feedback = Histogram(
            "finetune_serve_feedback_score",
            "Feedback scores in [0, 1] posted to /feedback for answers of this model.",
            ["model"],
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        info = Gauge(
            "finetune_serve_info",
            "Constant 1; labels name the model version this server runs.",
            ["model_version", "served_model"],
            registry=self.registry,
        )
        info.labels(model_version=model_version, served_model=served_model).set(1)

    def observe(self, model: str, status: int, seconds: float) -> None:
        self.requests.labels(model=model, status=str(status)).inc()
        if status >= 500:
            self.errors.labels(model=model).inc()
        self.duration.labels(model=model).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class Faults:
    """Test-only fault injection for one served model."""

    error_rate: float = 0.0
    extra_latency_ms: float = 0.0
    answer_text: str | None = None  # every answer replaced by this text (e.g. a valid JSON object)
    format_error_rate: float = 0.0  # this fraction of answers cut to broken JSON

    @classmethod
    def from_dir(cls, directory: Path) -> Faults | None:
        path = Path(directory) / FAULTS_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            answer_text = raw.get("answerText")
            faults = cls(float(raw.get("errorRate", 0.0)), float(raw.get("extraLatencyMs", 0.0)),
                         None if answer_text is None else str(answer_text), float(raw.get("formatErrorRate", 0.0)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: expected {{\"errorRate\": 0..1, \"extraLatencyMs\": >= 0}} ({exc})") from None
        if not 0.0 <= faults.format_error_rate <= 1.0:
            raise ValueError(f"{path}: formatErrorRate must be within 0..1")
        if not 0.0 <= faults.error_rate <= 1.0 or faults.extra_latency_ms < 0:
            raise ValueError(f"{path}: errorRate must be within 0..1 and extraLatencyMs >= 0")
        return faults


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"


def adapter_chat_template(adapter_dir: Path) -> str | None:
    """The chat template an adapter was trained with, when the trainer saved one beside it
    (`chat_template.jinja`, or `chat_template` in tokenizer_config.json); None: the base model's."""
    jinja = adapter_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = adapter_dir / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text()).get("chat_template")
        except (ValueError, AttributeError):
            return None
        return template if isinstance(template, str) and template else None
    return None


class ModelServer:
    """The loaded base model, its adapters, and the request logic (no HTTP here)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.base_name = config.served_model_name or Path(config.model.rstrip("/")).name or "model"
        if config.adapters.keys() & {self.base_name}:
            raise ValueError(f"adapter name {self.base_name!r} is also the base model's served name; rename one")
        self.metrics = MetricSet(config.model_version, self.base_name)
        self.quality = AnswerQuality(self.metrics, config.format_schema, config.format_regex)
        self.ready = threading.Event()
        self.draining = threading.Event()
        self.load_error: str | None = None
        self.created = int(time.time())
        self._lock = threading.Lock()  # one generation at a time: the active adapter is global state
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self._default_faults = Faults(config.error_rate, config.extra_latency_ms)
        self._faults: dict[str, Faults] = {}
        self._model = None
        self._tokenizer = None
        self._templates: dict[str, str | None] = {}  # served model name -> its own chat template
        self._device = "cpu"
        self._context_length = 2048

    # --- loading -----------------------------------------------------------------------------

    def load(self) -> None:
        if self.config.upstream:
            self._wait_for_upstream()
            self.ready.set()
            return
        try:
            self._load()
        except Exception as exc:  # noqa: BLE001 - reported on /health and in the log, never swallowed
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading %s failed: %s", self.config.model, self.load_error)
            raise
        self.ready.set()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from .config import ModelSpec
        from .models import load_tokenizer, resolve_model_spec

        model_dir = resolve_model_spec(
            ModelSpec(uri=self.config.model, cache_dir=self.config.cache_dir), self.config.pvc_mount_root
        )
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self._device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        self._tokenizer = load_tokenizer(model_dir)
        if self.config.adapters:
            from peft import PeftModel

            (first, first_path), *rest = self.config.adapters.items()
            model = PeftModel.from_pretrained(model, first_path, adapter_name=first)
            for name, path in rest:
                model.load_adapter(path, adapter_name=name)
            self._templates = {name: adapter_chat_template(Path(path)) for name, path in self.config.adapters.items()}
        for name, directory in ((self.base_name, model_dir), *self.config.adapters.items()):
            faults = Faults.from_dir(Path(directory))
            if faults is not None:
                log.warning("TEST-ONLY fault injection for %r from %s: %s", name, directory, faults)
                self._faults[name] = faults
        model.to(self._device)
        model.eval()
        self._model = model
        self._context_length = int(
            getattr(model.config, "max_position_embeddings", None) or self._tokenizer.model_max_length or 2048
        )
        log.info(
            "loaded %s as %r with adapters %s on %s",
            model_dir, self.base_name, sorted(self.config.adapters) or "none", self._device,
        )

    def _wait_for_upstream(self, timeout: float = 3600.0) -> None:
        """Proxy mode: ready once the upstream server answers its health check (vLLM loads for minutes)."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.config.upstream}/health", timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"upstream {self.config.upstream} not healthy within {timeout:g}s")
            time.sleep(1.0)

    def _proxy(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Proxy mode: the upstream's answer to `body`, with every answer's quality measured on the way."""
        import urllib.error
        import urllib.request

        model = self.metric_label(body.get("model") or self.base_name)
        request = urllib.request.Request(
            f"{self.config.upstream}{path}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 - configured upstream
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", {}).get("message") or exc.reason
            except (ValueError, AttributeError):
                message = exc.reason
            raise RequestError(exc.code, f"upstream: {message}", "UpstreamError") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RequestError(502, f"upstream {self.config.upstream} failed: {exc}", "UpstreamError") from None
        usage = answer.get("usage") or {}
        choices = answer.get("choices") or []
        answer_id = str(answer.get("id") or f"proxy-{uuid.uuid4().hex}")
        for choice in choices:
            text = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")
            self.quality.observe(answer_id, model, int(usage.get("prompt_tokens") or 0) // max(len(choices), 1),
                                 int(usage.get("completion_tokens") or 0) // max(len(choices), 1), str(text or ""))
        self.metrics.prompt_tokens.labels(model=model).inc(int(usage.get("prompt_tokens") or 0))
        self.metrics.generated_tokens.labels(model=model).inc(int(usage.get("completion_tokens") or 0))
        return answer

    # --- requests ------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return [self.base_name, *self.config.adapters]

    def metric_label(self, requested: Any) -> str:
        return requested if isinstance(requested, str) and requested in self.model_names() else UNKNOWN_MODEL_LABEL

    def list_models(self) -> dict[str, Any]:
        data = [{"id": self.base_name, "object": "model", "created": self.created, "owned_by": "finetune-operator",
                 "root": self.config.model, "parent": None}]
        data += [
            {"id": name, "object": "model", "created": self.created, "owned_by": "finetune-operator",
             "root": path, "parent": self.base_name}
            for name, path in self.config.adapters.items()
        ]
        return {"object": "list", "data": data}

    def inject_faults(self, model_name: str) -> None:
        faults = self._faults.get(model_name, self._default_faults)
        if faults.extra_latency_ms > 0:
            time.sleep(faults.extra_latency_ms / 1000.0)
        if faults.error_rate > 0:
            with self._rng_lock:
                draw = self._rng.random()
            if draw < faults.error_rate:
                raise RequestError(500, "injected fault (a test-only setting)", "InternalServerError")

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.config.upstream:
            return self._proxy("/v1/completions", body)
        model = self._check_model(body)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise RequestError(400, "prompt must be a string or a non-empty list of strings")
        max_tokens = self._max_tokens(body, "max_tokens")
        stop = self._stop(body)
        echo = bool(body.get("echo", False))
        choices, prompt_tokens, completion_tokens = [], 0, 0
        answer_id = f"cmpl-{uuid.uuid4().hex}"
        for index, text in enumerate(prompts):
            ids = self._tokenizer(text, add_special_tokens=True)["input_ids"]
            result = self._answer(model, self._generate(model, ids, max_tokens, stop))
            self.quality.observe(answer_id, model, result.prompt_tokens, result.completion_tokens, result.text)
            prompt_tokens += result.prompt_tokens
            completion_tokens += result.completion_tokens
            choices.append({
                "index": index,
                "text": (text + result.text) if echo else result.text,
                "logprobs": None,
                "finish_reason": result.finish_reason,
            })
        return {
            "id": answer_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
        }

    def chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.config.upstream:
            return self._proxy("/v1/chat/completions", body)
        model = self._check_model(body)
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages)
        ):
            raise RequestError(400, "messages must be a non-empty list of {role, content} objects")
        messages = [{"role": m["role"], "content": _content_text(m["content"])} for m in messages]
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = self._max_tokens(body, key)
        stop = self._stop(body)
        try:
            # An adapter trained with its own template (spec.dataset.chatTemplate, saved beside it)
            # is served with that template: the turn markers it learned, not the base model's.
            text = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, chat_template=self._templates.get(model)
            )
        except Exception as exc:  # noqa: BLE001 - a template error is the request's problem
            raise RequestError(400, f"messages do not fit the model's chat template: {exc}") from None
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        result = self._answer(model, self._generate(model, ids, max_tokens, stop))
        answer_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.quality.observe(answer_id, model, result.prompt_tokens, result.completion_tokens, result.text)
        return {
            "id": answer_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }],
            "usage": _usage(result.prompt_tokens, result.completion_tokens),
        }

    def _answer(self, model_name: str, result: Generation) -> Generation:
        """The answer as sent, after the test-only answer faults of the model (if any)."""
        faults = self._faults.get(model_name, self._default_faults)
        text = result.text if faults.answer_text is None else faults.answer_text
        if faults.format_error_rate > 0:
            with self._rng_lock:
                draw = self._rng.random()
            if draw < faults.format_error_rate:
                text = text[: max(len(text) // 2, 1)] if text.startswith("{") else '{"broken": '
        return result if text == result.text else Generation(text, result.prompt_tokens, result.completion_tokens,
                                                              result.finish_reason)

    def _check_model(self, body: dict[str, Any]) -> str:
        if body.get("stream"):
            raise RequestError(400, "stream is not supported by this server")
        if body.get("n", 1) != 1:
            raise RequestError(400, "only n=1 is supported (generation is greedy)")
        model = body.get("model") or self.base_name
        if model not in self.model_names():
            raise RequestError(
                404, f"model {model!r} does not exist; served models: {', '.join(self.model_names())}", "NotFoundError"
            )
        return model

    def _max_tokens(self, body: dict[str, Any], key: str) -> int:
        value = body.get(key)
        if value is None:
            return min(DEFAULT_MAX_TOKENS, self.config.max_tokens_limit)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RequestError(400, f"{key} must be a positive integer, got {value!r}")
        return min(value, self.config.max_tokens_limit)

    @staticmethod
    def _stop(body: dict[str, Any]) -> list[str]:
        stop = body.get("stop")
        if stop is None:
            return []
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise RequestError(400, "stop must be a string or a list of non-empty strings")
        return stops

    def _generate(self, model_name: str, prompt_ids: list[int], max_tokens: int, stop: list[str]) -> Generation:
        import torch

        room = self._context_length - len(prompt_ids)
        if room < 1:
            raise RequestError(
                400, f"the prompt has {len(prompt_ids)} tokens; this model's context is {self._context_length}"
            )
        max_new = min(max_tokens, room)
        tokenizer = self._tokenizer
        input_ids = torch.tensor([prompt_ids], device=self._device)
        with self._lock, torch.inference_mode(), self._adapter(model_name):
            output = self._model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_ids = output[0, len(prompt_ids):].tolist()
        finish_reason = "length"
        if tokenizer.eos_token_id in new_ids:
            new_ids = new_ids[: new_ids.index(tokenizer.eos_token_id)]
            finish_reason = "stop"
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text, finish_reason = text[:cut], "stop"
        self.metrics.prompt_tokens.labels(model=model_name).inc(len(prompt_ids))
        self.metrics.generated_tokens.labels(model=model_name).inc(len(new_ids))
        return Generation(text, len(prompt_ids), len(new_ids), finish_reason)

    def _adapter(self, model_name: str):
        if not self.config.adapters:
            return nullcontext()
        if model_name == self.base_name:
            return self._model.disable_adapter()
        self._model.set_adapter(model_name)
        return nullcontext()


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _content_text(content: Any) -> str:
    # OpenAI allows content as a list of parts; only text parts mean anything to a text model.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise RequestError(400, "message content must be a string or a list of text parts")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "finetune-serve"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        app = self.server.app
        path = self.path.split("?", 1)[0]
        if path == "/health":
            if app.draining.is_set():
                self._send_json(503, {"status": "draining"})
            elif app.ready.is_set():
                self._send_json(200, {"status": "ok"})
            else:
                self._send_json(503, {"status": "loading" if app.load_error is None else "failed",
                                      "error": app.load_error})
        elif path == "/metrics":
            payload, content_type = app.metrics.exposition()
            self._send(200, payload, content_type)
        elif path == "/v1/models":
            self._send_json(200, app.list_models())
        else:
            self._send_json(404, _error_body(f"no route GET {path}", "NotFoundError", 404))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/feedback":
            try:
                self._send_json(200, self.server.app.quality.feedback(self._parse_body()))
            except RequestError as exc:
                self._send_json(exc.status, _error_body(str(exc), exc.error_type, exc.status))
            return
        routes = {"/v1/completions": ModelServer.completions, "/v1/chat/completions": ModelServer.chat_completions}
        route = routes.get(path)
        if route is None:
            try:
                self._read_body()
            except RequestError:
                pass  # the connection is closed after this answer anyway
            self._send_json(404, _error_body(f"no route POST {path}", "NotFoundError", 404))
            return
        app = self.server.app
        started = time.perf_counter()
        label = UNKNOWN_MODEL_LABEL
        try:
            body = self._parse_body()
            label = app.metric_label(body.get("model") or app.base_name)
            if not app.ready.is_set():
                raise RequestError(503, "the model is still loading", "ServiceUnavailableError")
            app.inject_faults(label)
            status, payload = 200, route(app, body)
        except RequestError as exc:
            status, payload = exc.status, _error_body(str(exc), exc.error_type, exc.status)
        except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving
            log.exception("request to %s failed", path)
            status, payload = 500, _error_body(f"{type(exc).__name__}: {exc}", "InternalServerError", 500)
        # Counted before the answer goes out: a client that reads /metrics right after its answer
        # must see its request (the write of the answer itself is not part of the latency).
        app.metrics.observe(label, status, time.perf_counter() - started)
        self._send_json(status, payload)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length else b""

    def _parse_body(self) -> dict[str, Any]:
        raw = self._read_body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise RequestError(400, f"request body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "request body must be a JSON object")
        return body

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


def _error_body(message: str, error_type: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": code}, "object": "error"}


class _Server(ThreadingHTTPServer):
    # Requests in flight finish before the process exits (server_close joins their threads).
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], app: ModelServer):
        self.app = app
        super().__init__(address, _Handler)


def make_http_server(app: ModelServer, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for `app` bound to host:port (port 0 picks a free one); not yet serving."""
    return _Server((host, port), app)


def _adapter_arg(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=PATH")
    return name, path


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"error: {name}={raw!r} is not a number") from None


def parse_args(argv: list[str] | None) -> ServeConfig:
    parser = argparse.ArgumentParser(
        prog="python -m finetune_trainer serve", description="OpenAI-compatible server for a base model and LoRA adapters."
    )
    parser.add_argument("--model", default=os.environ.get("MODEL_PATH"), help="base model directory or URI (env MODEL_PATH)")
    parser.add_argument("--served-model-name", help="name of the base model in requests (default: its directory name)")
    parser.add_argument("--adapter", "--lora-modules", dest="adapters", action="append", nargs="+", type=_adapter_arg,
                        default=[], metavar="NAME=PATH", help="a LoRA adapter served under NAME (repeatable)")
    parser.add_argument("--host", default=os.environ.get("POD_IP") or "127.0.0.1", help="address to bind (env POD_IP)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT))
    parser.add_argument("--version", default=os.environ.get("MODEL_VERSION", ""),
                        help="model version for the finetune_serve_info metric (env MODEL_VERSION)")
    parser.add_argument("--max-tokens-limit", type=int, default=DEFAULT_MAX_TOKENS_LIMIT,
                        help="upper bound on max_tokens per request")
    parser.add_argument("--error-rate", type=float, default=_env_float("FINETUNE_SERVE_ERROR_RATE", 0.0),
                        help="TEST ONLY: fraction of inference requests answered with HTTP 500")
    parser.add_argument("--extra-latency-ms", type=float, default=_env_float("FINETUNE_SERVE_EXTRA_LATENCY_MS", 0.0),
                        help="TEST ONLY: delay added to every inference request")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection draws")
    parser.add_argument("--cache-dir", default=os.environ.get("FINETUNE_MODEL_CACHE", "/tmp/finetune-cache/models"),
                        help="writable directory for materialized models (GGUF, s3:// copies)")
    parser.add_argument("--pvc-mount-root", default="/mnt/pvc", help="where claims named in pvc:// URIs are mounted")
    parser.add_argument("--artifact-digest", default=os.environ.get("ARTIFACT_DIGEST", ""),
                        help="sha256:<hex> the adapter (or model) directory must have (env ARTIFACT_DIGEST)")
    parser.add_argument("--drain-seconds", type=float, default=_env_float("FINETUNE_SERVE_DRAIN_SECONDS", 5.0),
                        help="after SIGTERM, keep answering this long before shutting down")
    parser.add_argument("--format-schema", default=os.environ.get("FINETUNE_FORMAT_SCHEMA") or None,
                        help="JSON Schema (JSON text) every answer is checked against (env FINETUNE_FORMAT_SCHEMA)")
    parser.add_argument("--format-regex", default=os.environ.get("FINETUNE_FORMAT_REGEX") or None,
                        help="regular expression every answer is checked to match in full (env FINETUNE_FORMAT_REGEX)")
    parser.add_argument("--upstream", default=os.environ.get("FINETUNE_SERVE_UPSTREAM") or None,
                        help="proxy mode: forward requests to this OpenAI-compatible server (a vLLM beside it, e.g. "
                             "http://127.0.0.1:8001) and measure every answer; no model is loaded here "
                             "(env FINETUNE_SERVE_UPSTREAM)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model (or env MODEL_PATH) is required")
    if not 0.0 <= args.error_rate <= 1.0:
        parser.error(f"--error-rate must be between 0 and 1, got {args.error_rate}")
    if args.extra_latency_ms < 0 or args.max_tokens_limit < 1:
        parser.error("--extra-latency-ms must be >= 0 and --max-tokens-limit >= 1")
    adapters: dict[str, str] = {}
    for name, path in (pair for group in args.adapters for pair in group):
        if name in adapters:
            parser.error(f"adapter {name!r} given twice")
        adapters[name] = path
    format_schema = None
    if args.format_schema:
        try:
            format_schema = json.loads(args.format_schema)
        except ValueError as exc:
            parser.error(f"--format-schema (env FINETUNE_FORMAT_SCHEMA) is not JSON: {exc}")
        if not isinstance(format_schema, dict):
            parser.error("--format-schema must be a JSON Schema object")
    if args.format_regex:
        try:
            re.compile(args.format_regex)
        except re.error as exc:
            parser.error(f"--format-regex (env FINETUNE_FORMAT_REGEX) is not a valid regular expression: {exc}")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return ServeConfig(
        model=args.model,
        served_model_name=args.served_model_name,
        adapters=adapters,
        host=args.host,
        port=args.port,
        model_version=args.version,
        max_tokens_limit=args.max_tokens_limit,
        error_rate=args.error_rate,
        extra_latency_ms=args.extra_latency_ms,
        seed=args.seed,
        cache_dir=args.cache_dir,
        pvc_mount_root=args.pvc_mount_root,
        artifact_digest=args.artifact_digest,
        drain_seconds=max(args.drain_seconds, 0.0),
        format_schema=format_schema,
        format_regex=args.format_regex,
        upstream=args.upstream.rstrip("/") if args.upstream else None,
    )


def verify_artifact(config: ServeConfig) -> str | None:
    """Why the bytes to serve are not the registered ones, or None (also when no digest is given)."""
    if not config.artifact_digest:
        return None
    from .artifacts import verify

    if len(config.adapters) > 1:
        return None  # one digest cannot name several adapters; the Pod's init container checks each version
    path = next(iter(config.adapters.values()), None) or config.model
    if not Path(path).exists():
        return None if "://" in path else f"artifact {path} does not exist; the ModelVersion's digest is {config.artifact_digest}"
    return verify(path, config.artifact_digest)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    problem = verify_artifact(config)
    if problem is not None:
        from .artifacts import EXIT_DIGEST_MISMATCH

        print(f"error: {problem}", file=sys.stderr, flush=True)
        return EXIT_DIGEST_MISMATCH
    try:
        app = ModelServer(config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Bind first: /health answers 503 while the model loads, and /metrics is scrapeable at once.
    httpd = make_http_server(app, config.host, config.port)

    def drain_then_stop() -> None:
        app.draining.set()
        log.info("SIGTERM: draining for %.1fs before shutting down", config.drain_seconds)
        time.sleep(config.drain_seconds)
        httpd.shutdown()

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=drain_then_stop, daemon=True).start())
    serving = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    serving.start()
    log.info("listening on http://%s:%d", *httpd.server_address[:2])
    try:
        app.load()
    except Exception as exc:  # noqa: BLE001 - a server that cannot load must exit non-zero
        from .exitcodes import MODEL_ERROR

        print(f"error: model {config.model} cannot be served: {exc}", file=sys.stderr, flush=True)
        httpd.shutdown()
        return MODEL_ERROR
    try:
        while serving.is_alive():
            serving.join(timeout=1.0)
    except KeyboardInterrupt:
        httpd.shutdown()
    httpd.server_close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
