"""Synthetic data from a teacher model: a real OpenAI-compatible HTTP server on 127.0.0.1.

The teacher here is a small `http.server` that answers `POST /v1/chat/completions` the way
real ones do: JSON lines wrapped in prose and code fences, with some broken, invalid and
repeated records among them; it can also fail with 5xx/429, answer too slowly, check the bearer
token, or answer with a web page. Data preparation then runs for real (the tiny model's
tokenizer counts tokens), and the tests read what it wrote.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from finetune_trainer import exitcodes
from finetune_trainer.config import parse_config
from finetune_trainer.exitcodes import ConfigError, DataError
from finetune_trainer.prepare import main as prepare_main
from finetune_trainer.prepare import prepare_dataset
from finetune_trainer.synthetic import extract_objects

from tests.teacher import API_KEY, PROMPT, SEED, Teacher, serve, ticket  # noqa: F401 - serve is a fixture

from .conftest import make_config, save_config

SPLITS = ("train", "validation", "test")


def synthetic_config(tmp_path: Path, tiny_model: Path, endpoint: str, *, dataset: dict | None = None, **synthetic: Any) -> dict:
    teacher = {
        "endpoint": endpoint,
        "model": "teacher-7b",
        "prompt": PROMPT,
        "num_examples": 30,
        "records_per_request": 8,
        "seed_examples": [SEED],
        "temperature": 0.2,
        "retry_backoff_seconds": 0.01,
        **synthetic,
    }
    return make_config(tmp_path, tiny_model, tmp_path / "unused", dataset={"source": None, "synthetic": teacher, **(dataset or {})})


def read_splits(config) -> list[dict]:
    return [json.loads(line) for name in SPLITS for line in (config.prepared_path / f"{name}.jsonl").read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the whole path ------------------------------------------------------------------------------


def test_teacher_records_go_through_the_pipeline(serve, tmp_path, tiny_model):
    teacher = serve(Teacher())
    config = parse_config(synthetic_config(tmp_path, tiny_model, teacher.url))

    report = prepare_dataset(config)

    # 8 + 8 + 8 + 6 records asked for, in four requests, each answer wrapped in junk.
    expected = [ticket(n, i) for n, count in ((1, 8), (2, 8), (3, 8), (4, 6)) for i in range(count)]
    assert sorted(read_splits(config), key=json.dumps) == sorted(expected, key=json.dumps)
    assert report["format"] == "instruction"
    assert report["counts"]["read"] == report["counts"]["final"] == 30
    assert report["splits"] == {"train": 21, "validation": 6, "test": 3}
    assert report["synthetic"] == {
        "endpoint": teacher.url,
        "model": "teacher-7b",
        "requested": 30,
        "generated": 30,
        "received": 30 + 4 * 5,
        "rejected": {"duplicate": 8, "incomplete": 4, "invalid": 4, "not_json": 4},
        "rejected_total": 20,
        "surplus": 0,
        "requests": 4,
        "retries": 0,
    }
    assert json.loads((config.prepared_path / "data_report.json").read_text())["synthetic"] == report["synthetic"]

    # What the teacher was asked: the model, temperature, a per-request seed, the prompt, the
    # seed example and the format's fields, in a fixed order.
    bodies = [r["body"] for r in teacher.requests]
    assert [b["model"] for b in bodies] == ["teacher-7b"] * 4
    assert [b["temperature"] for b in bodies] == [0.2] * 4
    assert [b["seed"] for b in bodies] == [42, 43, 44, 45]
    system, user = bodies[0]["messages"]
    assert system["role"] == "system" and '"instruction"' in system["content"] and "JSON" in system["content"]
    assert user["role"] == "user" and PROMPT in user["content"] and json.dumps(SEED, sort_keys=True) in user["content"]
    assert [re.search(r"Write (\d+) new", b["messages"][1]["content"]).group(1) for b in bodies] == ["8", "8", "8", "6"]
    assert all(r["authorization"] is None for r in teacher.requests), "no key configured, none sent"

    # The same answers give the same dataset, byte for byte.
    again = serve(Teacher())
    second = parse_config(synthetic_config(tmp_path / "again", tiny_model, again.url))
    assert prepare_dataset(second)["sha256"] == report["sha256"]
    assert [r["body"] for r in again.requests] == bodies


def test_pii_policy_applies_to_teacher_records(serve, tmp_path, tiny_model):
    def with_an_email(request: int, count: int) -> str:
        records = [ticket(request, i) for i in range(count)]
        records[0]["instruction"] += " Reply to jane.doe@example.com"
        return "\n".join(json.dumps(r) for r in records)

    teacher = serve(Teacher(write=with_an_email))
    blocked = parse_config(synthetic_config(tmp_path / "block", tiny_model, teacher.url, num_examples=10))
    with pytest.raises(DataError, match=r"PII found .* synthetic request 1: record 1 \(EMAIL\)"):
        prepare_dataset(blocked)
    assert not blocked.prepared_path.exists()

    redacted = parse_config(synthetic_config(tmp_path / "redact", tiny_model, teacher.url, num_examples=10, dataset={"pii_policy": "redact"}))
    report = prepare_dataset(redacted)
    assert report["pii"]["findings"] == {"EMAIL": 2}  # requests 1 and 2 (8 + 2 records) each had one
    written = json.dumps(read_splits(redacted))
    assert "jane.doe" not in written and "[EMAIL]" in written


def test_chat_records_for_a_chat_dataset(serve, tmp_path, tiny_model):
    def chats(request: int, count: int) -> str:
        rows = [
            {"messages": [{"role": "user", "content": f"How do I reset password {request}-{i}?"}, {"role": "assistant", "content": f"Open settings, step {i}."}]}
            for i in range(count)
        ]
        rows.append({"messages": [{"role": "user", "content": "no reply"}]})  # incomplete: no assistant turn
        return json.dumps({"records": rows})  # one object wrapping the list: taken apart

    teacher = serve(Teacher(write=chats))
    seed = {"messages": [{"role": "user", "content": "Where is my invoice?"}, {"role": "assistant", "content": "Under Billing."}]}
    config = parse_config(synthetic_config(tmp_path, tiny_model, teacher.url, num_examples=12, seed_examples=[seed]))

    report = prepare_dataset(config)

    assert report["format"] == "chat"
    assert report["synthetic"]["rejected"] == {"incomplete": 2}
    assert len(read_splits(config)) == 12
    assert '"messages"' in teacher.requests[0]["body"]["messages"][0]["content"]


# --- failures and retries ------------------------------------------------------------------------


def test_server_errors_rate_limits_and_timeouts_are_retried(serve, tmp_path, tiny_model, capsys):
    teacher = serve(Teacher(script=["500", "429", "slow", "500"], slow_seconds=2.5))
    config = parse_config(synthetic_config(tmp_path, tiny_model, teacher.url, num_examples=8, request_timeout_seconds=1))

    report = prepare_dataset(config)

    assert report["synthetic"]["retries"] == 4 and report["synthetic"]["requests"] == 1
    assert len(read_splits(config)) == 8
    # Five attempts of the same request, the same body each time.
    assert len(teacher.requests) == 5 and all(r["body"] == teacher.requests[0]["body"] for r in teacher.requests)
    retries = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"synthetic_retry"' in line]
    assert [r["problem"] for r in retries] == [
        'answered HTTP 500 ({"error": {"message": "model overloaded"}})',
        'answered HTTP 429 ({"error": {"message": "rate limited"}})',
        "no answer within 1 s",
        'answered HTTP 500 ({"error": {"message": "model overloaded"}})',
    ]
    assert [r["wait_seconds"] for r in retries] == [0.01, 0.02, 0.04, 0.08], "exponential backoff"


def test_a_teacher_that_keeps_failing_is_a_data_error(serve, tmp_path, tiny_model):
    teacher = serve(Teacher(script=["500"] * 10))
    config = parse_config(synthetic_config(tmp_path, tiny_model, teacher.url, max_retries=2))
    with pytest.raises(DataError) as failed:
        prepare_dataset(config)
    assert str(failed.value) == (
        f"synthetic data: the teacher at spec.dataset.synthetic.endpoint {teacher.url} answered HTTP 500 "
        '({"error": {"message": "model overloaded"}}) to request 1 (3 attempts); check the teacher\'s '
        "health and capacity, then run the job again"
    )
    assert len(teacher.requests) == 3


def test_api_key_is_sent_as_a_bearer_token(serve, tmp_path, tiny_model, monkeypatch):
    teacher = serve(Teacher(api_key=API_KEY))
    monkeypatch.setenv("FINETUNE_SYNTHETIC_API_KEY", API_KEY + "\n")  # Secrets often end in a newline
    config = parse_config(synthetic_config(tmp_path, tiny_model, teacher.url, num_examples=8, api_key_env="FINETUNE_SYNTHETIC_API_KEY"))

    report = prepare_dataset(config)

    assert report["synthetic"]["generated"] == 8
    assert [r["authorization"] for r in teacher.requests] == [f"Bearer {API_KEY}"]
    assert API_KEY not in (config.prepared_path / "data_report.json").read_text()


@pytest.mark.parametrize(
    "key, message",
    [
        ("sk-wrong-key", "refused the API key (HTTP 401: {\"error\": {\"message\": \"Incorrect API key provided: [API_KEY]\"}}); "
         "check the Secret key that spec.dataset.synthetic.secretRef names"),
        (None, "needs an API key (HTTP 401: {\"error\": {\"message\": \"Incorrect API key provided: \"}}); "
         "set spec.dataset.synthetic.secretRef"),
    ],
    ids=["wrong-key", "no-key"],
)
def test_a_refused_api_key_is_a_clear_error_that_never_shows_the_key(serve, tmp_path, tiny_model, monkeypatch, capsys, key, message):
    teacher = serve(Teacher(api_key=API_KEY))
    synthetic = {}
    if key is not None:
        monkeypatch.setenv("TEACHER_KEY", key)
        synthetic["api_key_env"] = "TEACHER_KEY"
    config = synthetic_config(tmp_path, tiny_model, teacher.url, **synthetic)

    code = prepare_main(["--config", str(save_config(tmp_path, config))])

    assert code == exitcodes.DATA_ERROR
    stderr = capsys.readouterr().err
    assert f"the teacher at spec.dataset.synthetic.endpoint {teacher.url} {message}" in stderr
    assert len(teacher.requests) == 1, "a refused key is not retried"
    termination = (tmp_path / "termination-log").read_text()
    assert json.loads(termination)["reason"] == "DataError"
    if key is not None:
        assert key not in stderr and key not in termination


def test_a_missing_api_key_env_is_a_config_error_before_any_request(serve, tmp_path, tiny_model, monkeypatch):
    teacher = serve(Teacher())
    monkeypatch.delenv("FINETUNE_SYNTHETIC_API_KEY", raising=False)
    config = parse_config(synthetic_config(tmp_path, tiny_model, teacher.url, api_key_env="FINETUNE_SYNTHETIC_API_KEY"))
    with pytest.raises(ConfigError, match=r"environment variable FINETUNE_SYNTHETIC_API_KEY .* is unset or empty"):
        prepare_dataset(config)
    assert teacher.requests == []


def test_unreachable_endpoint_is_a_precise_data_error_and_leaves_no_output(tmp_path, tiny_model, capsys):
    endpoint = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    config = synthetic_config(tmp_path, tiny_model, endpoint, max_retries=2)

    code = prepare_main(["--config", str(save_config(tmp_path, config))])

    assert code == exitcodes.DATA_ERROR == 3
    expected = (
        f"synthetic data: the teacher at spec.dataset.synthetic.endpoint {endpoint} is unreachable "
        "(connection refused; request 1, 3 attempts); check the URL and that the teacher is serving"
    )
    assert expected in capsys.readouterr().err
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["reason"] == "DataError" and message["exit_code"] == 3 and expected in message["message"]
    out = Path(config["output"]["dir"])
    assert not out.exists() or not any(out.iterdir()), "a failed prepare must leave no partial output"


def test_too_few_valid_records_after_the_request_bound(serve, tmp_path, tiny_model):
    teacher = serve(Teacher(write=lambda request, count: "I'm sorry, I can't write {that} for you."))
    config = parse_config(synthetic_config(tmp_path, tiny_model, teacher.url, num_examples=10, max_requests=3))
    with pytest.raises(DataError) as failed:
        prepare_dataset(config)
    assert (
        "gave only 0 valid instruction records of the 10 in spec.dataset.synthetic.numExamples after 3 "
        "requests (the most allowed; rejected: not_json 3)"
    ) in str(failed.value)
    assert failed.value.details["synthetic"]["requests"] == 3
    assert len(teacher.requests) == 3
    assert not config.prepared_path.exists()


@pytest.mark.parametrize(
    "script, path, message",
    [
        (["html"], "/v1", "with something that is not a chat completion (<html><body>Welcome to nginx!</body></html>)"),
        ([], "/api", "answered HTTP 404 ({\"error\": {\"message\": \"Not Found\"}}) to POST {url}/chat/completions; "
                     "check spec.dataset.synthetic.endpoint"),
    ],
    ids=["a-web-page", "wrong-path"],
)
def test_an_endpoint_that_is_not_an_openai_api(serve, tmp_path, tiny_model, script, path, message):
    teacher = serve(Teacher(script=script))
    url = teacher.url.removesuffix("/v1") + path
    config = parse_config(synthetic_config(tmp_path, tiny_model, url))
    with pytest.raises(DataError) as failed:
        prepare_dataset(config)
    assert message.replace("{url}", url) in str(failed.value)
    assert len(teacher.requests) == 1, "not retried: asking again gives the same answer"


# --- reading answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, objects, broken",
    [
        ('{"a": 1}\n{"b": 2}', [{"a": 1}, {"b": 2}], 0),
        ('Here you go:\n```json\n{"a": 1}\n```\nEnjoy!', [{"a": 1}], 0),
        ('```jsonl\n{"a": "x"}\n{"a": "y"}\n```', [{"a": "x"}, {"a": "y"}], 0),
        ('[{"a": 1}, {"a": 2}]', [{"a": 1}, {"a": 2}], 0),
        ('1. {"a": 1}\n2. {"a": 2}', [{"a": 1}, {"a": 2}], 0),
        ('{\n  "a": {"nested": [1, 2]},\n  "b": "a } brace"\n}', [{"a": {"nested": [1, 2]}, "b": "a } brace"}], 0),
        ('{"a": 1, "b": \n{"c": 3}', [{"c": 3}], 1),
        ("no JSON here, just {braces}", [], 1),
        ("", [], 0),
    ],
    ids=["json-lines", "fenced-with-prose", "jsonl-fence", "array", "numbered", "pretty-printed", "broken-line", "prose-braces", "empty"],
)
def test_every_json_object_is_found_in_an_answer(answer, objects, broken):
    assert extract_objects(answer) == (objects, broken)
