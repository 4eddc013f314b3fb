"""Online answer quality of the dev server: format compliance, refusals, lengths and feedback,
in the serving scrape contract (a real tiny model answering over HTTP)."""

from __future__ import annotations

import json

import pytest

from finetune_trainer.serve import AnswerQuality, MetricSet, parse_args
from tests.trainer.test_serve import _get, _metric, _post, _serve_with

SCHEMA = {"type": "object", "required": ["revenue"], "properties": {"revenue": {"type": "number"}}}


@pytest.fixture(scope="module")
def json_model(tiny_model, tmp_path_factory):
    """The tiny model whose answers are replaced by valid JSON, 20% of them cut to broken JSON."""
    directory = tmp_path_factory.mktemp("json-model")
    for item in tiny_model.iterdir():
        (directory / item.name).symlink_to(item)
    (directory / "finetune-serve-faults.json").write_text(
        json.dumps({"answerText": '{"revenue": 12.5}', "formatErrorRate": 0.2})
    )
    return directory


def test_every_answer_is_checked_and_feedback_counts_per_model(json_model):
    running = _serve_with(json_model, format_schema=SCHEMA, model_version="v3")
    try:
        ids = []
        for i in range(60):
            status, body = _post(running.url + "/v1/chat/completions", {
                "model": "base", "messages": [{"role": "user", "content": f"report {i}"}], "max_tokens": 3})
            assert status == 200, body
            ids.append(body["id"])
        text = running.metrics()
        passed = _metric(text, "finetune_serve_format_checks_total", model="base", result="pass")
        failed = _metric(text, "finetune_serve_format_checks_total", model="base", result="fail")
        assert passed + failed == 60
        assert 4 <= failed <= 24  # 20% broken, seeded draws
        assert _metric(text, "finetune_serve_prompt_length_tokens_count", model="base") == 60
        assert _metric(text, "finetune_serve_answer_length_tokens_count", model="base") == 60
        assert _metric(text, "finetune_serve_prompt_length_tokens_sum", model="base") > 60

        assert _post(running.url + "/feedback", {"id": ids[0], "score": 1})[0] == 200
        assert _post(running.url + "/feedback", {"id": ids[1], "score": 0.0})[0] == 200
        assert _post(running.url + "/feedback", {"id": ids[2], "score": False})[0] == 200
        status, body = _post(running.url + "/feedback", {"id": "chatcmpl-nope", "score": 1})
        assert status == 404 and "no answer with id" in body["error"]["message"]
        status, body = _post(running.url + "/feedback", {"id": ids[3], "score": 7})
        assert status == 400 and "[0, 1]" in body["error"]["message"]
        text = running.metrics()
        assert _metric(text, "finetune_serve_feedback_score_count", model="base") == 3
        assert _metric(text, "finetune_serve_feedback_score_sum", model="base") == 1.0
    finally:
        running.stop()


def test_no_format_checks_without_a_schema_or_regex(tiny_model):
    running = _serve_with(tiny_model)
    try:
        assert _post(running.url + "/v1/completions", {"prompt": "hi", "max_tokens": 2})[0] == 200
        assert "finetune_serve_format_checks_total{" not in running.metrics()
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("text", "schema", "regex", "ok"),
    [
        ('{"revenue": 1}', SCHEMA, None, True),
        ('{"revenue": "1"}', SCHEMA, None, False),
        ('{"revenue": ', SCHEMA, None, False),
        ("A-123", None, r"[A-Z]-\d+", True),
        ("A-123 and more", None, r"[A-Z]-\d+", False),
    ],
)
def test_format_check(text, schema, regex, ok):
    assert AnswerQuality(MetricSet("v1", "base"), schema, regex).format_ok(text) is ok


@pytest.mark.parametrize(
    ("text", "refusal"),
    [("I'm sorry, but I can't help with that.", True), ("I cannot do that.", True),
     ("As an AI, I won't.", True), ('{"revenue": 1}', False), ("Sorry to hear: revenue is 3", False)],
)
def test_refusals_are_counted(text, refusal):
    metrics = MetricSet("v1", "base")
    AnswerQuality(metrics).observe("id-1", "base", 5, 7, text)
    counted = metrics.refusals.labels(model="base")._value.get()
    assert counted == (1.0 if refusal else 0.0)


def test_bad_format_settings_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--model", "m", "--format-schema", "{not json"])
    assert "--format-schema" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--model", "m", "--format-regex", "(unclosed"])
    assert "--format-regex" in capsys.readouterr().err
    assert parse_args(["--model", "m", "--format-schema", json.dumps(SCHEMA)]).format_schema == SCHEMA


def test_proxy_in_front_of_an_upstream_server_measures_every_answer(json_model, tiny_model):
    """The vLLM template's quality proxy: requests pass through to the upstream, answers are measured."""
    from finetune_trainer.serve import ModelServer, ServeConfig
    from tests.trainer.test_serve import Running

    upstream = _serve_with(json_model, model_version="v3")
    proxy_app = ModelServer(ServeConfig(model=str(tiny_model), served_model_name="base", model_version="v3",
                                        format_schema=SCHEMA, upstream=upstream.url))
    proxy = Running(proxy_app)
    try:
        proxy_app.load()  # waits for the upstream's /health
        assert _get(proxy.url + "/health")[0] == 200
        ids = []
        for i in range(20):
            status, body = _post(proxy.url + "/v1/chat/completions", {
                "model": "base", "messages": [{"role": "user", "content": f"q {i}"}], "max_tokens": 3})
            assert status == 200, body
            ids.append(body["id"])
        status, body = _post(proxy.url + "/v1/completions", {"model": "nope", "prompt": "x"})
        assert status == 404 and "upstream" in body["error"]["message"]
        text = proxy.metrics()
        checked = sum(_metric(text, "finetune_serve_format_checks_total", model="base", result=r) for r in ("pass", "fail"))
        assert checked == 20
        assert _metric(text, "finetune_serve_requests_total", model="base", status="200") == 20
        assert _metric(text, "finetune_serve_answer_length_tokens_count", model="base") == 20
        assert _post(proxy.url + "/feedback", {"id": ids[0], "score": 0.5})[0] == 200
        assert _metric(proxy.metrics(), "finetune_serve_feedback_score_sum", model="base") == 0.5
    finally:
        proxy.stop()
        upstream.stop()
