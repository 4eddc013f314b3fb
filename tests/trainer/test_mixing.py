"""dataset.sources: real, inline-like, synthetic and replayed records mixed into one dataset, with
every source's contribution in the data report before and after each filter."""

from __future__ import annotations

import json

import pytest

from finetune_trainer.config import ConfigFileError, DataSourceSpec, parse_config
from finetune_trainer.exitcodes import DataError
from finetune_trainer.mixing import plan_counts
from finetune_trainer.prepare import prepare_dataset, report_summary

from tests.teacher import PROMPT, Teacher, serve  # noqa: F401 - serve is a fixture

from .conftest import make_config, write_jsonl


def _spec(name: str, **fields) -> DataSourceSpec:
    return DataSourceSpec(name=name, source="/x", **fields)


@pytest.mark.parametrize(
    ("available", "fields", "expected"),
    [
        pytest.param({"a": 100, "b": 50}, {}, {"a": 100, "b": 50}, id="all-of-each"),
        pytest.param({"a": 100, "b": 50}, {"a": {"records": 30}, "b": {"records": 80}}, {"a": 30, "b": 50}, id="records-capped"),
        # 3,500 real at 0.8 and a replay of 10,000 at 0.2: the real data is scarcest, taken whole.
        pytest.param({"real": 3500, "replay": 10000}, {"real": {"weight": 0.8}, "replay": {"weight": 0.2}},
                     {"real": 3500, "replay": 875}, id="weights-real-scarce"),
        pytest.param({"real": 3500, "replay": 500}, {"real": {"weight": 0.8}, "replay": {"weight": 0.2}},
                     {"real": 2000, "replay": 500}, id="weights-replay-scarce"),
        pytest.param({"a": 90, "b": 90, "c": 7}, {"a": {"weight": 1}, "b": {"weight": 2}, "c": {"records": 5}},
                     {"a": 45, "b": 90, "c": 5}, id="weights-and-records"),
    ],
)
def test_plan_counts(available, fields, expected):
    specs = [_spec(name, **fields.get(name, {})) for name in available]
    assert plan_counts(available, specs) == expected


def _records(prefix: str, count: int, category: str = "billing") -> list[dict]:
    return [{"instruction": f"{prefix} ticket number {i}: my {category} problem {i * 7919 % 1000}", "output": category}
            for i in range(count)]


def test_real_synthetic_and_replay_mix_into_one_report(serve, tmp_path, tiny_model):
    teacher = serve(Teacher())
    real = write_jsonl(tmp_path / "real.jsonl", _records("Real", 30) + _records("Real", 2))  # two exact duplicates
    earlier = tmp_path / "v1-data"
    write_jsonl(earlier / "train.jsonl", _records("Earlier", 40, "shipping"))
    write_jsonl(earlier / "test.jsonl", _records("Held out", 5, "shipping"))  # never replayed
    raw = make_config(tmp_path, tiny_model, real, dataset={
        "source": None,
        "dedup": {"near": False},
        "sources": [
            {"name": "real", "source": str(real), "task": "billing"},
            {"name": "teacher", "synthetic": {"endpoint": teacher.url, "model": "teacher", "prompt": PROMPT,
                                               "num_examples": 8, "records_per_request": 4},
             "seed_from": "real", "seed_count": 2, "task": "hardware"},
            {"name": "replay", "replay": str(earlier), "replay_of": "tickets-v1", "records": 10, "task": "shipping"},
        ],
    })
    config = parse_config(raw)
    report = prepare_dataset(config)

    sources = {s["name"]: s for s in report["sources"]}
    assert [s["name"] for s in report["sources"]] == ["real", "teacher", "replay"]
    assert (sources["real"]["available"], sources["real"]["mixed"]) == (32, 32)
    assert sources["real"]["stages"]["after_dedup"] == 30  # the duplicates went, counted against "real"
    assert (sources["teacher"]["kind"], sources["teacher"]["mixed"]) == ("synthetic", 8)
    assert (sources["replay"]["available"], sources["replay"]["mixed"], sources["replay"]["replay_of"]) == (40, 10, "tickets-v1")
    for entry in report["sources"]:
        assert sum(entry["splits"].values()) == entry["stages"]["final"]
    assert report["counts"]["final"] == sum(s["stages"]["final"] for s in report["sources"]) == 48
    assert report["synthetic"]["teacher"]["generated"] == 8

    # The teacher saw seed examples drawn from the real source.
    shown = json.dumps(teacher.requests[0]["body"]["messages"])
    assert "Real ticket number" in shown

    # Every prepared record carries its task; nothing of the earlier run's test split came back.
    rows = [json.loads(line) for split in ("train", "validation", "test")
            for line in (config.prepared_path / f"{split}.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"billing", "hardware", "shipping"}
    assert not any("Held out" in r["instruction"] for r in rows)
    summary = report_summary(report)
    assert [s["name"] for s in summary["sources"]] == ["real", "teacher", "replay"]
    assert summary["synthetic"]["generated"] == 8

    # The same inputs give the same mix (a teacher writes new records each time: left out here).
    fixed = {**raw, "dataset": {**raw["dataset"], "sources": [raw["dataset"]["sources"][0], raw["dataset"]["sources"][2]]}}
    once = prepare_dataset(parse_config({**fixed, "output": {"dir": str(tmp_path / "once")}}))
    again = prepare_dataset(parse_config({**fixed, "output": {"dir": str(tmp_path / "again")}}))
    assert again["sha256"] == once["sha256"] and once["counts"]["final"] == 40


def test_sources_of_different_formats_are_refused_naming_the_source(tmp_path, tiny_model):
    real = write_jsonl(tmp_path / "real.jsonl", _records("Real", 10))
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    raw = make_config(tmp_path, tiny_model, real, dataset={"source": None, "sources": [
        {"name": "real", "source": str(real)}, {"name": "chats", "source": str(chat)}]})
    with pytest.raises(DataError, match="dataset.sources chats .* holds chat records but the sources before it hold instruction"):
        prepare_dataset(parse_config(raw))


def test_a_pii_block_names_the_source_and_line(tmp_path, tiny_model):
    real = write_jsonl(tmp_path / "real.jsonl", _records("Real", 5))
    leaky = write_jsonl(tmp_path / "leaky.jsonl", [{"instruction": "mail me at jane.doe@example.com", "output": "ok"}])
    raw = make_config(tmp_path, tiny_model, real, dataset={"source": None, "sources": [
        {"name": "real", "source": str(real)}, {"name": "vendor", "source": str(leaky)}]})
    with pytest.raises(DataError, match=r"vendor: .*leaky.jsonl: line 1 \(EMAIL\)"):
        prepare_dataset(parse_config(raw))


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        pytest.param([{"name": "a", "source": "/d"}, {"name": "a", "source": "/e"}], "the name 'a' is used twice", id="twice"),
        pytest.param([{"name": "a", "source": "/d", "records": 5, "weight": 1}], "set records or weight, not both", id="records-and-weight"),
        pytest.param([{"name": "a"}], "set exactly one of source, synthetic and replay", id="no-origin"),
        pytest.param([{"name": "a", "source": "/d", "seed_from": "b"}], "seed_from is for synthetic sources", id="seed-from-records"),
        pytest.param([{"name": "t", "synthetic": {"endpoint": "http://127.0.0.1:1/v1", "model": "m", "prompt": "p"}, "seed_from": "later"},
                      {"name": "later", "source": "/d"}], "seed_from 'later' names no earlier source", id="seed-from-later"),
    ],
)
def test_bad_sources_are_config_errors(tmp_path, tiny_model, sources, message):
    raw = make_config(tmp_path, tiny_model, tmp_path / "x.jsonl", dataset={"source": None, "sources": sources})
    with pytest.raises(ConfigFileError, match=message):
        parse_config(raw)


def test_the_report_carries_what_a_budget_estimate_needs(tmp_path, tiny_model):
    """Training tokens (the train split's) and the base model's parameter count, counted on the
    meta device: the operator's estimate of the training before it reports progress."""
    real = write_jsonl(tmp_path / "real.jsonl", _records("Real", 30))
    config = parse_config(make_config(tmp_path, tiny_model, real))
    report = prepare_dataset(config)
    from transformers import AutoModelForCausalLM

    assert report["model_parameters"] == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(str(tiny_model)).parameters())
    rows = (config.prepared_path / "train.jsonl").read_text().splitlines()
    assert 0 < report["train_tokens"] < report["tokens"]["total"] and len(rows) == report["splits"]["train"]
    assert report_summary(report)["train_tokens"] == report["train_tokens"]
