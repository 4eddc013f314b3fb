"""The OpenAI-compatible server: real generation with the tiny model and a LoRA adapter, metrics, faults.

Most tests run the server in-process on a free port (loading the tiny model takes well under a
second); one starts `python -m finetune_trainer serve` as the dev cluster's Pods do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from finetune_trainer.serve import ModelServer, ServeConfig, make_http_server, parse_args
from tests.helpers import wait_for

ADAPTER = "support-v2"


@pytest.fixture(scope="module")
def lora_adapter(tiny_model, tmp_path_factory) -> Path:
    """An untrained LoRA adapter whose B matrices are non-zero, so it really changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(str(out))
    return out


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - local test server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


class Running:
    def __init__(self, app: ModelServer):
        self.app = app
        self.httpd = make_http_server(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def metrics(self) -> str:
        status, text = _get(self.url + "/metrics")
        assert status == 200
        return text


@pytest.fixture(scope="module")
def server(tiny_model, lora_adapter):
    app = ModelServer(
        ServeConfig(model=str(tiny_model), served_model_name="base", adapters={ADAPTER: str(lora_adapter)},
                    model_version="v2", max_tokens_limit=32)
    )
    running = Running(app)
    app.load()
    yield running
    running.stop()


def _serve_with(tiny_model, **settings) -> Running:
    app = ModelServer(ServeConfig(model=str(tiny_model), served_model_name="base", **settings))
    running = Running(app)
    app.load()
    return running


def test_models_lists_base_and_adapters(server):
    status, text = _get(server.url + "/v1/models")
    assert status == 200
    models = {m["id"]: m for m in json.loads(text)["data"]}
    assert set(models) == {"base", ADAPTER}
    assert models[ADAPTER]["parent"] == "base"


def test_health_is_ok_once_loaded(server):
    assert _get(server.url + "/health")[0] == 200


def test_health_is_unavailable_while_loading(tiny_model):
    running = Running(ModelServer(ServeConfig(model=str(tiny_model))))  # never loaded
    try:
        assert _get(running.url + "/health")[0] == 503
        status, body = _post(running.url + "/v1/completions", {"prompt": "hi"})
        assert status == 503 and "loading" in body["error"]["message"]
    finally:
        running.stop()


def test_completion_is_greedy_and_honours_max_tokens(server):
    request = {"model": "base", "prompt": "The customer cannot log in", "max_tokens": 5}
    status, first = _post(server.url + "/v1/completions", request)
    assert status == 200, first
    assert first["object"] == "text_completion" and first["model"] == "base"
    choice = first["choices"][0]
    assert choice["finish_reason"] in ("length", "stop")
    assert 1 <= first["usage"]["completion_tokens"] <= 5
    assert first["usage"]["total_tokens"] == first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    _, second = _post(server.url + "/v1/completions", request)
    assert second["choices"][0]["text"] == choice["text"]  # greedy: deterministic


def test_max_tokens_is_capped(server):
    status, body = _post(server.url + "/v1/completions", {"model": "base", "prompt": "Ticket", "max_tokens": 10_000})
    assert status == 200
    assert body["usage"]["completion_tokens"] <= 32


def test_the_request_model_picks_the_adapter(server):
    prompt = {"prompt": "Summarize the support ticket as JSON", "max_tokens": 8}
    _, base = _post(server.url + "/v1/completions", {"model": "base", **prompt})
    status, adapted = _post(server.url + "/v1/completions", {"model": ADAPTER, **prompt})
    assert status == 200 and adapted["model"] == ADAPTER
    assert adapted["choices"][0]["text"] != base["choices"][0]["text"]
    # The adapter is switched off again for base requests.
    _, base_again = _post(server.url + "/v1/completions", {"model": "base", **prompt})
    assert base_again["choices"][0]["text"] == base["choices"][0]["text"]


def test_chat_completion_uses_the_chat_template(server):
    status, body = _post(
        server.url + "/v1/chat/completions",
        {"model": ADAPTER, "messages": [{"role": "user", "content": "My invoice shows a double charge"}],
         "max_tokens": 6},
    )
    assert status == 200, body
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    # The template wraps the message in role markers, so the prompt is longer than the text alone.
    assert body["usage"]["prompt_tokens"] > 6


def test_an_adapter_is_served_with_the_chat_template_it_was_trained_with(tiny_model, lora_adapter, tmp_path):
    """The trainer saves the tokenizer (with spec.dataset.chatTemplate) beside the adapter; the
    server applies that template to the adapter's chat requests, and the base's to the base."""
    import shutil

    from transformers import AutoTokenizer

    from finetune_trainer.serve import adapter_chat_template

    template = (
        "{% for m in messages %}<<turn of the {{ m['role'] }}, spoken with ceremony>> {{ m['content'] }} <<end of turn>>"
        "{% endfor %}{% if add_generation_prompt %}<<turn of the assistant, spoken with ceremony>>{% endif %}"
    )
    templated = tmp_path / "templated"
    shutil.copytree(lora_adapter, templated)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    tokenizer.chat_template = template
    tokenizer.save_pretrained(str(templated))
    assert adapter_chat_template(templated) == template
    assert adapter_chat_template(lora_adapter) is None, "an adapter saved without a tokenizer uses the base's"

    running = _serve_with(tiny_model, adapters={"plain": str(lora_adapter), "ceremony": str(templated)}, max_tokens_limit=8)
    try:
        messages = [{"role": "user", "content": "My invoice shows a double charge"}]
        prompts = {}
        for model in ("base", "plain", "ceremony"):
            status, body = _post(running.url + "/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": 2})
            assert status == 200, body
            prompts[model] = body["usage"]["prompt_tokens"]
    finally:
        running.stop()
    expected = len(tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                             add_special_tokens=False)["input_ids"])
    assert prompts["ceremony"] == expected
    assert prompts["plain"] == prompts["base"] < prompts["ceremony"], prompts


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/completions", {"model": "nope", "prompt": "x"}, 404),
        ("/v1/completions", {"model": "base"}, 400),
        ("/v1/completions", {"model": "base", "prompt": "x", "max_tokens": 0}, 400),
        ("/v1/completions", {"model": "base", "prompt": "x", "stream": True}, 400),
        ("/v1/chat/completions", {"model": "base", "messages": "hello"}, 400),
    ],
    ids=["unknown-model", "no-prompt", "zero-max-tokens", "stream", "messages-not-a-list"],
)
def test_bad_requests_get_openai_errors(server, path, body, status):
    got, answer = _post(server.url + path, body)
    assert got == status
    assert answer["error"]["message"]


def test_metrics_count_requests_tokens_and_latency(server):
    before = server.metrics()
    _post(server.url + "/v1/completions", {"model": ADAPTER, "prompt": "Shipping is late", "max_tokens": 3})
    _post(server.url + "/v1/completions", {"model": "nope", "prompt": "x"})
    after = server.metrics()

    def delta(name, **labels):
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert delta("finetune_serve_requests_total", model=ADAPTER, status="200") == 1
    assert delta("finetune_serve_requests_total", model="unknown", status="404") == 1
    assert delta("finetune_serve_request_duration_seconds_count", model=ADAPTER) == 1
    assert delta("finetune_serve_prompt_tokens_total", model=ADAPTER) > 0
    assert 1 <= delta("finetune_serve_generated_tokens_total", model=ADAPTER) <= 3
    assert delta("finetune_serve_request_errors_total", model=ADAPTER) == 0  # client errors are not server errors
    assert _metric(after, "finetune_serve_info", model_version="v2", served_model="base") == 1


def test_error_rate_one_answers_500_and_counts_errors(tiny_model):
    running = _serve_with(tiny_model, error_rate=1.0)
    try:
        for _ in range(3):
            status, body = _post(running.url + "/v1/completions", {"model": "base", "prompt": "x", "max_tokens": 2})
            assert status == 500 and "injected" in body["error"]["message"]
        metrics = running.metrics()
        assert _metric(metrics, "finetune_serve_requests_total", model="base", status="500") == 3
        assert _metric(metrics, "finetune_serve_request_errors_total", model="base") == 3
        assert _get(running.url + "/health")[0] == 200  # faulty but ready, as a bad candidate is
    finally:
        running.stop()


def test_a_faults_file_makes_only_that_version_bad(tiny_model, lora_adapter, tmp_path):
    import shutil

    bad = shutil.copytree(lora_adapter, tmp_path / "bad-adapter")
    (bad / "finetune-serve-faults.json").write_text('{"errorRate": 1.0}')
    running = _serve_with(tiny_model, adapters={"good": str(lora_adapter), "bad": str(bad)})
    try:
        assert _post(running.url + "/v1/completions", {"model": "bad", "prompt": "x", "max_tokens": 1})[0] == 500
        assert _post(running.url + "/v1/completions", {"model": "good", "prompt": "x", "max_tokens": 1})[0] == 200
        assert _post(running.url + "/v1/completions", {"model": "base", "prompt": "x", "max_tokens": 1})[0] == 200
        metrics = running.metrics()
        assert _metric(metrics, "finetune_serve_request_errors_total", model="bad") == 1
        assert _metric(metrics, "finetune_serve_request_errors_total", model="good") == 0
    finally:
        running.stop()


def test_extra_latency_shows_in_the_histogram(tiny_model):
    running = _serve_with(tiny_model, extra_latency_ms=300)
    try:
        assert _post(running.url + "/v1/completions", {"prompt": "x", "max_tokens": 1})[0] == 200
        metrics = running.metrics()
        assert _metric(metrics, "finetune_serve_request_duration_seconds_bucket", model="base", le="0.25") == 0
        assert _metric(metrics, "finetune_serve_request_duration_seconds_bucket", model="base", le="0.5") == 1
    finally:
        running.stop()


def test_arguments_and_environment(monkeypatch):
    monkeypatch.setenv("POD_IP", "127.0.0.7")
    monkeypatch.setenv("MODEL_VERSION", "v9")
    monkeypatch.setenv("FINETUNE_SERVE_ERROR_RATE", "0.25")
    config = parse_args(["--model", "/m", "--adapter", "a=/p/a", "--lora-modules", "b=/p/b", "c=/p/c"])
    assert (config.host, config.port, config.model_version, config.error_rate) == ("127.0.0.7", 8000, "v9", 0.25)
    assert config.adapters == {"a": "/p/a", "b": "/p/b", "c": "/p/c"}
    with pytest.raises(SystemExit):
        parse_args(["--model", "/m", "--error-rate", "1.5"])


def test_serve_command_starts_and_becomes_ready(tiny_model, lora_adapter, tmp_path):
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "POD_IP": "127.0.0.1", "MODEL_VERSION": "v3"}
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "finetune_trainer", "serve", "--model", str(tiny_model),
             "--adapter", f"{ADAPTER}={lora_adapter}", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or _get(url + "/health")[0] == 200, 120, "the server's /health")
        assert process.poll() is None, log_path.read_text()
        status, body = _post(url + "/v1/chat/completions",
                             {"model": ADAPTER, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert status == 200, body
        assert _metric(_get(url + "/metrics")[1], "finetune_serve_info", model_version="v3") == 1
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log_path.read_text()
